"""Generator bundles: round trip, the jax.export artifacts, and clear errors for bad files."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclejax import bundle, networks


def make_bundle(netG="resnet_6blocks", ngf=4, norm="instance", directions=("AtoB", "BtoA"),
                no_dropout=True, key_impl="rbg") -> bundle.Bundle:
    """Random generators. `key_impl`: 'rbg' by default, as train_state draws with (XLA:CPU
    compiles its initialisation about 3x faster than threefry's)."""
    config = {"netG": netG, "ngf": ngf, "norm": norm, "no_dropout": no_dropout, "input_nc": 3, "output_nc": 3,
              "dtype": "float32", "domains": {"A": "horse", "B": "zebra"}, "source": {"test": True}}
    b = bundle.Bundle(config=config, variables={d: {} for d in directions})
    m = networks.generator_multiple(netG)
    for i, d in enumerate(directions):
        key = jax.random.key(i, impl=key_impl)
        v = jax.jit(b.generator(d).init, static_argnames="train")(key, jnp.zeros((1, m, m, 3)), train=False)
        b.variables[d] = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
    return b


def test_round_trip_keeps_every_array_and_the_config(tmp_path):
    b = make_bundle(norm="batch")
    bundle.save(b, tmp_path / "b", with_export=False)
    back = bundle.load(tmp_path / "b")
    assert back.config == b.config and back.directions == ("AtoB", "BtoA") and back.multiple == 4
    for d in b.directions:
        jax.tree_util.tree_map(np.testing.assert_array_equal, back.variables[d], jax.tree_util.tree_map(np.asarray, b.variables[d]))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["AtoB.msgpack", "BtoA.msgpack", "bundle.json"]


def test_exported_artifact_runs_with_jax_alone_at_any_multiple_of_4(tmp_path):
    b = make_bundle()
    bundle.save(b, tmp_path / "b")
    exported = jax.export.deserialize(bytearray((tmp_path / "b" / "BtoA.jax_export").read_bytes()))
    assert set(exported.platforms) == {"cpu", "cuda", "tpu"}
    fn = jax.jit(b.apply_fn("BtoA", conv_impl="xla"))  # the artifact's convolutions: XLA's
    local = b.jit_apply("BtoA")  # this machine's choice (oneDNN's where built): round-off apart
    rng = np.random.default_rng(0)
    for shape in ((1, 32, 32, 3), (2, 24, 40, 3)):  # one artifact, several sizes and batches
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(exported.call(x)), np.asarray(fn(x)), atol=1e-6)
        np.testing.assert_allclose(np.asarray(exported.call(x)), np.asarray(local(x)), atol=1e-5)
    with pytest.raises(ValueError, match="Division had remainder"):
        exported.call(np.zeros((1, 30, 32, 3), np.float32))


def test_a_generator_with_dropout_translates_and_exports_with_dropout_on(tmp_path):
    """no_dropout=False: dropout stays on outside training, as in the official test.py, with
    masks from a fixed key: the same image always gets the same translation."""
    b = make_bundle(no_dropout=False, directions=("AtoB",))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    y = np.asarray(b.jit_apply("AtoB")(x))
    np.testing.assert_array_equal(y, np.asarray(b.jit_apply("AtoB")(x)))
    # Dropout is on: other masks (another key) give another output.
    from cyclejax import model as model_lib
    other = model_lib.apply_train_mode(b.generator("AtoB"), b.variables["AtoB"]["params"], {}, x,
                                       rngs={"dropout": jax.random.key(1)})
    assert np.max(np.abs(y - np.asarray(other))) > 1e-3
    bundle.save(b, tmp_path / "b")
    exported = jax.export.deserialize(bytearray((tmp_path / "b" / "AtoB.jax_export").read_bytes()))
    np.testing.assert_allclose(np.asarray(exported.call(x)), y, atol=1e-5)


def test_unet_artifact_is_symbolic_in_multiples_of_its_depth(tmp_path):
    b = make_bundle("unet_128", ngf=2, directions=("AtoB",))
    blob = bundle.export_generator(b, "AtoB")
    exported = jax.export.deserialize(bytearray(blob))
    assert str(exported.in_avals[0].shape) == "(b, 128*h, 128*w, 3)"


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(bundle.BundleError, match=r"nowhere is not a generator bundle.*bundle.json does not exist"):
        bundle.load(tmp_path / "nowhere")
    b = make_bundle()
    path = bundle.save(b, tmp_path / "b", with_export=False)
    (path / "BtoA.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(bundle.BundleError, match="BtoA.msgpack cannot be read"):
        bundle.load(path)
    (path / "BtoA.msgpack").unlink()
    with pytest.raises(bundle.BundleError, match="BtoA.msgpack is missing"):
        bundle.load(path)
    bundle.save(b, path, with_export=False)
    meta = json.loads((path / "bundle.json").read_text())
    meta["ngf"] = 8  # config disagrees with the arrays
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(bundle.BundleError, match="does not hold a resnet_6blocks generator with ngf=8"):
        bundle.load(path)
    (path / "bundle.json").write_text("{")
    with pytest.raises(bundle.BundleError, match="not valid JSON"):
        bundle.load(path)


def test_domain_names_come_from_the_dataset():
    assert bundle.domain_names("cycle_gan/horse2zebra") == {"A": "horse", "B": "zebra"}
    assert bundle.domain_names("/data/summer2winter_yosemite/") == {"A": "summer", "B": "winter_yosemite"}
    assert bundle.domain_names("embedded") == {"A": "A", "B": "B"}


def test_saving_over_a_bundle_leaves_nothing_of_the_old_one_and_bad_paths_are_named(tmp_path):
    bundle.save(make_bundle(), tmp_path / "b")  # both directions, with their jax.export artifacts
    one = make_bundle(directions=("AtoB",), ngf=8)
    bundle.save(one, tmp_path / "b", with_export=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["AtoB.msgpack", "bundle.json"]
    back = bundle.load(tmp_path / "b")
    assert back.directions == ("AtoB",) and back.config["ngf"] == 8
    (tmp_path / "afile").write_text("x")
    with pytest.raises(bundle.BundleError, match="afile cannot be written"):
        bundle.save(one, tmp_path / "afile", with_export=False)
