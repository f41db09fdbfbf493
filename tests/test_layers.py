"""Each layer of cyclejax.layers against torch.nn's own layer on random input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cyclejax import layers
from tests.torch_reference import nchw, nhwc

TOL = 1e-5


def _x(shape=(2, 9, 11, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_reflect_pad_matches_torch():
    x = _x()
    ours = np.asarray(layers.reflect_pad(jnp.asarray(x), 3))
    ref = nhwc(torch.nn.ReflectionPad2d(3)(nchw(x)))
    assert ours.shape == (2, 15, 17, 5)
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_instance_norm_matches_torch():
    x = _x() * 3 + 1
    ours = np.asarray(layers.instance_norm(jnp.asarray(x)))
    ref = nhwc(torch.nn.InstanceNorm2d(5, affine=False, eps=1e-5)(nchw(x)))
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_instance_norm_has_no_parameters():
    norm = layers.norm_layer("instance")()
    x = jnp.asarray(_x((1, 4, 4, 2)))
    variables = norm.init(jax.random.PRNGKey(0), x, True)
    assert jax.tree_util.tree_leaves(variables) == []
    np.testing.assert_array_equal(norm.apply(variables, x, True), layers.instance_norm(x))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_matches_torch(train):
    x = _x((4, 6, 7, 3)) * 2 + 0.5
    bn = layers.BatchNorm()
    variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    # Give the running statistics something to say in eval mode.
    stats = {"mean": jnp.array([0.1, -0.2, 0.3]), "var": jnp.array([0.5, 1.5, 2.0])}
    variables = {"params": variables["params"], "batch_stats": stats}
    y, updates = bn.apply(variables, jnp.asarray(x), train=train, mutable=["batch_stats"])

    ref = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(variables["params"]["scale"])))
        ref.bias.copy_(torch.from_numpy(np.array(variables["params"]["bias"])))
        ref.running_mean.copy_(torch.from_numpy(np.array(stats["mean"])))
        ref.running_var.copy_(torch.from_numpy(np.array(stats["var"])))
    ref.train(train)
    out = nhwc(ref(nchw(x)))
    np.testing.assert_allclose(np.asarray(y), out, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), ref.running_mean.numpy(), atol=TOL)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), ref.running_var.numpy(), atol=TOL)


def test_batch_norm_scale_init_is_normal_around_one():
    v = layers.BatchNorm(init_gain=0.02).init(jax.random.PRNGKey(1), jnp.zeros((1, 2, 2, 4096)), train=False)
    scale = np.asarray(v["params"]["scale"])
    assert abs(scale.mean() - 1.0) < 0.002 and abs(scale.std() - 0.02) < 0.002
    assert np.all(np.asarray(v["params"]["bias"]) == 0)


@pytest.mark.parametrize(
    "kernel, stride, padding, output_padding",
    [(3, 2, 1, 1),  # the ResNet generator's upsampling
     (4, 2, 1, 0)],  # the U-Net's upsampling
)
def test_conv_transpose_matches_torch(kernel, stride, padding, output_padding):
    x = _x((2, 5, 7, 6))
    mod = layers.ConvTranspose(4, kernel, stride, padding, output_padding=output_padding)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    params = {"kernel": jax.random.normal(jax.random.PRNGKey(1), params["kernel"].shape),
              "bias": jax.random.normal(jax.random.PRNGKey(2), (4,))}
    ours = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))

    ref = torch.nn.ConvTranspose2d(6, 4, kernel, stride, padding, output_padding)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).transpose(2, 3, 0, 1)))
        ref.bias.copy_(torch.from_numpy(np.array(params["bias"])))
    out = nhwc(ref(nchw(x)))
    assert ours.shape == out.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(ours, out, atol=TOL, rtol=0)


def test_conv_transpose_gradient_matches_torch():
    x = _x((1, 4, 4, 3))
    k = np.random.default_rng(3).normal(size=(3, 3, 3, 2)).astype(np.float32)
    g = jax.grad(lambda x, k: jnp.sum(jnp.sin(layers.conv_transpose(x, k, 2, 1, 1))), argnums=(0, 1))(jnp.asarray(x), jnp.asarray(k))
    xt = nchw(x).requires_grad_()
    kt = torch.from_numpy(k.transpose(2, 3, 0, 1).copy()).requires_grad_()
    torch.sin(torch.nn.functional.conv_transpose2d(xt, kt, stride=2, padding=1, output_padding=1)).sum().backward()
    np.testing.assert_allclose(np.asarray(g[0]), nhwc(xt.grad), atol=1e-5)
    np.testing.assert_allclose(np.asarray(g[1]), kt.grad.numpy().transpose(2, 3, 0, 1), atol=1e-5)


def test_conv_matches_torch():
    x = _x((2, 8, 8, 3))
    mod = layers.Conv(5, 4, stride=2, padding=1)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    params = {"kernel": params["kernel"] * 50, "bias": jnp.arange(5.0)}
    ours = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))
    ref = torch.nn.Conv2d(3, 5, 4, 2, 1)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).transpose(3, 2, 0, 1)))
        ref.bias.copy_(torch.arange(5.0))
    np.testing.assert_allclose(ours, nhwc(ref(nchw(x))), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "init_type, transposed, expected_std",
    [("normal", False, 0.02),
     ("xavier", False, 0.02 * np.sqrt(2 / (64 * 9 + 32 * 9))),
     ("kaiming", False, np.sqrt(2 / (64 * 9))),
     ("kaiming", True, np.sqrt(2 / (32 * 9))),  # torch's fan_in of a transposed conv counts its outputs
     ("orthogonal", False, 0.02 / np.sqrt(64 * 9))],
)
def test_kernel_init_std(init_type, transposed, expected_std):
    shape = (3, 3, 64, 32)
    w = np.asarray(layers.kernel_init(init_type, 0.02, transposed)(jax.random.PRNGKey(0), shape))
    assert w.shape == shape
    assert abs(w.mean()) < expected_std * 0.05
    assert abs(w.std() - expected_std) < expected_std * 0.03


def test_orthogonal_init_rows_are_orthogonal():
    w = np.asarray(layers.kernel_init("orthogonal", 1.0)(jax.random.PRNGKey(0), (3, 3, 16, 8)))
    flat = w.reshape(-1, 8).T  # torch's (out, in*kh*kw)
    np.testing.assert_allclose(flat @ flat.T, np.eye(8), atol=1e-5)


def test_unknown_norm_and_init_are_refused():
    with pytest.raises(ValueError, match="norm must be one of"):
        layers.norm_layer("group")
    with pytest.raises(ValueError, match="init_type must be one of"):
        layers.kernel_init("uniform")
