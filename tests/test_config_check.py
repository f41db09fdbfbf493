"""Impossible configs are refused before anything compiles, naming the key."""
import pytest

from cyclejax.config_check import ConfigError, validate
from cyclejax.configs import default


@pytest.mark.parametrize("overrides, message", [
    (dict(netG="resnet_12blocks"), "config.netG='resnet_12blocks' is not allowed"),
    (dict(netD="huge"), "config.netD"),
    (dict(gan_mode="hinge"), "config.gan_mode"),
    (dict(preprocess="resize_and_crop", load_size=64, crop_size=128), "crop_size=128 is larger than config.load_size=64"),
    (dict(batch_size=3), "batch_size=3 must be a multiple of the 2 devices"),
    (dict(input_nc=1, output_nc=3, lambda_identity=0.5), "identity loss"),
    (dict(netG="unet_256", preprocess="resize_and_crop", load_size=300, crop_size=200), "multiple of 256"),
    (dict(n_epochs=0, n_epochs_decay=0), "at least 1"),
    (dict(ngf=0), "config.ngf=0 must be a positive integer"),
    (dict(keep_checkpoints=-1), "config.keep_checkpoints=-1 must not be negative"),
    (dict(max_dataset_size=-5), "config.max_dataset_size=-5 must not be negative"),
])
def test_invalid_configs_are_refused(overrides, message):
    c = default.get_config()
    c.update(overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(c, device_count=2 if "batch_size" in overrides else 1)


def test_default_and_paper_configs_are_valid():
    validate(default.get_config(), device_count=1)
    validate(default.get_config("paper"), device_count=1)
    validate(default.get_config("tiny"), device_count=1)


def test_keep_checkpoints_zero_keeps_every_checkpoint(tmp_path):
    """0 keeps them all (Orbax's max_to_keep=0 would delete each one as it is written)."""
    import flax
    import jax.numpy as jnp

    from cyclejax import checkpoints

    @flax.struct.dataclass
    class State:
        step: jnp.ndarray

    config = default.get_config("tiny")
    for keep, kept in ((0, [1, 2, 3, 4]), (2, [3, 4])):
        mngr = checkpoints.manager(tmp_path / str(keep), keep)
        for step in (1, 2, 3, 4):
            checkpoints.save(mngr, State(jnp.asarray(step)), config)
        mngr.wait_until_finished()
        assert list(mngr.all_steps()) == kept
        mngr.close()
