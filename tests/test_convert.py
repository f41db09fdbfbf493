"""Official PyTorch generator state dicts -> bundles that compute what the torch modules compute."""
import numpy as np
import pytest
import torch

from cyclejax import bundle, torch_weights
from tests import torch_reference as ref


def _randomise(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0.0, 0.2 if p.ndim > 1 else 0.1)
            if name.endswith("weight") and p.ndim == 1:
                p.add_(1.0)
    return module


def _save(module, path, extra=None):
    sd = dict(module.state_dict())
    sd.update(extra or {})
    torch.save(sd, path)
    return path


@pytest.mark.slow
def test_converted_resnet_9blocks_matches_torch_at_256(tmp_path):
    g_a = _randomise(ref.ResnetGenerator(ngf=16, n_blocks=9), 0)
    g_b = _randomise(ref.ResnetGenerator(ngf=16, n_blocks=9), 1)
    # Old official checkpoints carry empty instance-norm statistics: they must be dropped.
    stale = {"model.2.running_mean": torch.zeros(16), "model.2.running_var": torch.ones(16),
             "model.2.num_batches_tracked": torch.tensor(0)}
    files = {"AtoB": _save(g_a, tmp_path / "latest_net_G_A.pth", stale), "BtoA": _save(g_b, tmp_path / "latest_net_G_B.pth")}
    b = bundle.from_official(files, "resnet_9blocks", ngf=16, domains={"A": "horse", "B": "zebra"})
    bundle.save(b, tmp_path / "bundle", with_export=False)
    b = bundle.load(tmp_path / "bundle")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    for direction, module in (("AtoB", g_a), ("BtoA", g_b)):
        with torch.no_grad():
            expected = ref.nhwc(module(ref.nchw(x)))
        got = np.asarray(b.jit_apply(direction)(x))
        assert np.abs(got - expected).max() <= 1e-4, direction
        assert np.abs(expected).mean() > 0.05  # a non-trivial output


@pytest.mark.slow
def test_converted_unet_256_with_batch_norm_matches_torch(tmp_path):
    g = _randomise(ref.UnetGenerator(num_downs=8, ngf=8, norm="batch"), 2)
    g.train()  # the official test script runs networks in training mode (batch statistics)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    b = bundle.from_official({"AtoB": _save(g, tmp_path / "style_monet.pth")}, "unet_256", ngf=8, norm="batch")
    assert b.directions == ("AtoB",) and b.config["domains"] == {"A": "A", "B": "B"}
    np.testing.assert_array_equal(b.variables["AtoB"]["batch_stats"]["model"]["model_1"]["model_2"]["mean"],
                                  g.model.model[1].model[2].running_mean.numpy())
    x = np.random.default_rng(1).uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref.nhwc(g(ref.nchw(x)))
    assert np.abs(np.asarray(b.jit_apply("AtoB")(x)) - expected).max() <= 1e-4
    with pytest.raises(bundle.BundleError, match="one direction"):
        b.jit_apply("BtoA")


def test_wrong_options_and_foreign_files_are_named(tmp_path):
    g = ref.ResnetGenerator(ngf=8, n_blocks=6)
    pth = _save(g, tmp_path / "horse2zebra.pth")
    with pytest.raises(torch_weights.ConversionError, match=r"horse2zebra.pth is not.*try --netG=resnet_6blocks --ngf=8 --norm=instance"):
        bundle.from_official({"AtoB": pth}, "resnet_9blocks", ngf=64)
    with pytest.raises(torch_weights.ConversionError, match="with 6 blocks, ngf=16.*try --netG=resnet_6blocks --ngf=8"):
        bundle.from_official({"AtoB": pth}, "resnet_6blocks", ngf=16)
    d = _save(ref.NLayerDiscriminator(ndf=8), tmp_path / "latest_net_D_A.pth")
    with pytest.raises(torch_weights.ConversionError, match="latest_net_D_A.pth is not an official ResNet generator"):
        bundle.from_official({"AtoB": d}, "resnet_6blocks", ngf=8)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(torch_weights.ConversionError, match="junk.pth is not a readable PyTorch state dict"):
        bundle.from_official({"AtoB": junk}, "resnet_6blocks", ngf=8)
    with pytest.raises(torch_weights.ConversionError, match="missing.pth does not exist"):
        torch_weights.load_pth(tmp_path / "missing.pth")
    # The right options convert, and domain names come from the file name.
    b = bundle.from_official({"AtoB": pth}, "resnet_6blocks", ngf=8)
    assert b.config["domains"] == {"A": "horse", "B": "zebra"}


def test_torch_key_maps_flax_paths_to_official_keys():
    assert torch_weights.torch_key(("model_10", "conv_block_1"), "weight") == "model.10.conv_block.1.weight"
    assert torch_weights.torch_key(("model", "model_1", "model_3"), "bias") == "model.model.1.model.3.bias"


def test_variables_to_state_dict_is_the_official_layout_and_inverts_the_conversion():
    g = ref.ResnetGenerator(ngf=4, n_blocks=6, norm="batch")
    g = _randomise(g, 3)
    sd = {k: v.numpy() for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}
    skeleton = bundle.Bundle(config={"netG": "resnet_6blocks", "ngf": 4, "norm": "batch", "no_dropout": True,
                                     "input_nc": 3, "output_nc": 3, "dtype": "float32"}, variables={"AtoB": {}})
    net = skeleton.generator("AtoB")
    variables = torch_weights.state_dict_to_variables(sd, net, 3, 4, "mem")
    back = torch_weights.variables_to_state_dict(variables, net, 3, 4)
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
