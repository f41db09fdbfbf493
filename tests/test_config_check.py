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
