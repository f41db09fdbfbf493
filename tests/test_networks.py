"""The networks: official parameter counts, shapes, and outputs equal to the official torch modules."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cyclejax import networks
from tests import torch_reference as ref
from tests.conftest import impls

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)


def _count(module, size):
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))
    return networks.count_params(shapes["params"])


@pytest.mark.parametrize("netG, size, expected", [
    ("resnet_9blocks", 64, 11_378_179),
    ("resnet_6blocks", 64, 7_837_699),
    ("unet_256", 256, 54_409_603),
    ("unet_128", 128, 41_825_667),
])
def test_generator_parameter_counts_are_official(netG, size, expected):
    assert _count(networks.define_G(netG), size) == expected


@pytest.mark.parametrize("netD, expected", [("basic", 2_764_737), ("pixel", 8_705)])
def test_discriminator_parameter_counts_are_official(netD, expected):
    assert _count(networks.define_D(netD), 64) == expected


def test_basic_discriminator_gives_30x30_patches_at_256():
    d = networks.define_D("basic")
    out = jax.eval_shape(lambda: d.init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 256, 256, 3)))[0])
    assert out.shape == (2, 30, 30, 1)


def test_batch_norm_networks_drop_conv_biases_and_count_like_torch():
    g = networks.define_G("resnet_6blocks", ngf=8, norm="batch")
    torch_g = ref.ResnetGenerator(ngf=8, norm="batch", n_blocks=6)
    n_torch = sum(p.numel() for p in torch_g.parameters())
    assert _count(g, 32) == n_torch


def _key():
    """Parameters' key: 'rbg', which XLA:CPU compiles about three times faster than threefry
    (train_state's too); a network's initialisation is otherwise most of these tests' time."""
    return jax.random.key(0, impl="rbg")


def _compare(flax_module, torch_module, x, atol=3e-5):
    """Same parameters in both; the outputs in training mode (as the official train and test scripts run)."""
    variables = jax.jit(flax_module.init, static_argnames="train")(_key(), jnp.asarray(x), train=False)
    ref.load_flax(torch_module, variables["params"], variables.get("batch_stats"))
    apply = jax.jit(lambda v, x: flax_module.apply(v, x, train=True, mutable=["batch_stats"])[0])
    ours = np.asarray(apply(variables, jnp.asarray(x)))
    torch_module.train(True)
    with torch.no_grad():
        theirs = ref.nhwc(torch_module(ref.nchw(x)))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)


IMPLS = impls()  # every conv_impl


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_equals_official_torch_module(norm, impl):
    # ngf 16: every matmul form runs (the 16 -> 3 output layer is 'taps_out').
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    _compare(networks.define_G("resnet_6blocks", ngf=16, norm=norm, init_gain=0.2, conv_impl=impl),
             ref.ResnetGenerator(ngf=16, norm=norm, n_blocks=6), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_unet_generator_equals_official_torch_module(impl):
    x = np.random.default_rng(1).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    _compare(networks.define_G("unet_128", ngf=4, init_gain=0.2, conv_impl=impl),
             ref.UnetGenerator(num_downs=7, ngf=4), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_nlayer_discriminator_equals_official_torch_module(impl):
    x = np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
    _compare(networks.define_D("n_layers", input_nc=1, ndf=8, n_layers_D=4, init_gain=0.2, conv_impl=impl),
             ref.NLayerDiscriminator(input_nc=1, ndf=8, n_layers=4), x)


def test_generator_keeps_size_and_range():
    g = networks.define_G("resnet_6blocks", input_nc=1, output_nc=3, ngf=8)
    x = jnp.ones((2, 36, 44, 1))
    y, _ = jax.jit(g.init_with_output)(_key(), x)
    assert y.shape == (2, 36, 44, 3) and float(jnp.max(jnp.abs(y))) <= 1.0


def test_dropout_generator_needs_and_uses_a_dropout_key():
    g = networks.define_G("resnet_6blocks", ngf=8, use_dropout=True)
    x = jnp.ones((1, 16, 16, 3))
    v = jax.jit(g.init, static_argnames="train")(_key(), x, train=False)
    apply = jax.jit(g.apply, static_argnames="train")
    a = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(apply(v, x, train=False), apply(v, x, train=False, rngs={"dropout": jax.random.PRNGKey(3)}))


def test_bad_arguments_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="netG must be one of"):
        networks.define_G("resnet_12blocks")
    with pytest.raises(ValueError, match="netD must be one of"):
        networks.define_D("huge")
    with pytest.raises(ValueError, match="divisible by 128"):
        g = networks.define_G("unet_128", ngf=4)
        g.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        g = networks.define_G("resnet_6blocks", ngf=4)
        g.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))


def test_bfloat16_generator_keeps_its_residual_stream_in_float32():
    """dtype=bfloat16 rounds the convolutions' operands only (as torch.autocast does): the
    norms return float32, so the ResNet blocks' sums do not accumulate bfloat16 round-off."""
    x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    g32 = networks.define_G("resnet_9blocks", ngf=16)
    g16 = networks.define_G("resnet_9blocks", ngf=16, dtype=jnp.bfloat16)
    params = jax.jit(g32.init)(_key(), x)["params"]
    out32 = np.asarray(jax.jit(g32.apply)({"params": params}, x))
    out16, inter = jax.jit(functools.partial(
        g16.apply, capture_intermediates=lambda module, _: isinstance(module, networks.ResnetBlock)))({"params": params}, x)
    assert out16.dtype == jnp.float32
    blocks = [v["__call__"][0] for v in inter["intermediates"].values()]
    assert len(blocks) == 9 and all(b.dtype == jnp.float32 for b in blocks), [b.dtype for b in blocks]
    # bfloat16 keeps 8 bits; measured 0.006 mean and 0.03 largest difference (outputs' std 0.35).
    diff = np.abs(np.asarray(out16) - out32)
    assert diff.mean() < 0.015 and diff.max() < 0.1, (diff.mean(), diff.max())
