"""Each layer of cyclejax.layers against torch.nn's own layer on random input."""
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cyclejax import layers, onednn
from tests.conftest import impls
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


IMPLS = impls()  # every conv_impl


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kernel, stride, padding, output_padding",
    [(3, 2, 1, 1),  # the ResNet generator's upsampling
     (4, 2, 1, 0)],  # the U-Net's upsampling
)
def test_conv_transpose_matches_torch(kernel, stride, padding, output_padding, impl):
    x = _x((2, 5, 7, 16))  # 16 input channels: the matmul form (fewer go to XLA's convolution)
    mod = layers.ConvTranspose(4, kernel, stride, padding, output_padding=output_padding, conv_impl=impl)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    params = {"kernel": jax.random.normal(jax.random.PRNGKey(1), params["kernel"].shape),
              "bias": jax.random.normal(jax.random.PRNGKey(2), (4,))}
    ours = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))

    ref = torch.nn.ConvTranspose2d(16, 4, kernel, stride, padding, output_padding)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).transpose(2, 3, 0, 1)))
        ref.bias.copy_(torch.from_numpy(np.array(params["bias"])))
    out = nhwc(ref(nchw(x)))
    assert ours.shape == out.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(ours, out, atol=TOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_conv_transpose_gradient_matches_torch(impl):
    x = _x((1, 4, 4, 16))
    k = np.random.default_rng(3).normal(size=(3, 3, 16, 2)).astype(np.float32)
    g = jax.grad(lambda x, k: jnp.sum(jnp.sin(layers.conv_transpose(x, k, 2, 1, 1, impl))),
                 argnums=(0, 1))(jnp.asarray(x), jnp.asarray(k))
    xt = nchw(x).requires_grad_()
    kt = torch.from_numpy(k.transpose(2, 3, 0, 1).copy()).requires_grad_()
    torch.sin(torch.nn.functional.conv_transpose2d(xt, kt, stride=2, padding=1, output_padding=1)).sum().backward()
    for ours, theirs in ((g[0], nhwc(xt.grad)), (g[1], kt.grad.numpy().transpose(2, 3, 0, 1))):
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOL * np.abs(theirs).max(), rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cin, features, kernel, stride, padding", [
    (3, 5, 4, 2, 1),  # the discriminator's first layer: XLA's convolution under every impl
    (16, 20, 3, 1, 1),  # a ResNet block's convolution: matmul 'taps_in'
    (16, 3, 7, 1, 0),  # the generator's output layer: matmul 'taps_out'
    (16, 1, 4, 1, (1, 2)),  # the discriminator's last layer, uneven padding: 'taps_out'
    (16, 8, 3, 2, 1),  # a strided convolution: XLA's under every impl
])
def test_conv_and_its_gradient_match_torch(cin, features, kernel, stride, padding, impl):
    x = _x((2, 11, 9, cin))
    mod = layers.Conv(features, kernel, stride=stride, padding=padding, conv_impl=impl)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    # Unit-scale outputs; a fixed random cotangent, so gradients are as well conditioned as outputs.
    params = {"kernel": params["kernel"] / 0.02 / np.sqrt(kernel * kernel * cin), "bias": jnp.arange(float(features))}
    ours = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))
    cotangent = _x(ours.shape, seed=1)
    loss = lambda p, x: jnp.sum(mod.apply({"params": p}, x) * cotangent)  # noqa: E731
    grads = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
    ref = torch.nn.Conv2d(cin, features, kernel, stride, padding)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).transpose(3, 2, 0, 1)))
        ref.bias.copy_(torch.arange(float(features)))
    xt = nchw(x).requires_grad_()
    out = ref(xt)
    (out * nchw(cotangent)).sum().backward()
    scale = np.abs(nhwc(out.detach())).max()
    np.testing.assert_allclose(ours, nhwc(out.detach()), atol=TOL * scale, rtol=0)
    np.testing.assert_allclose(np.asarray(grads[1]), nhwc(xt.grad), atol=TOL * np.abs(nhwc(xt.grad)).max(), rtol=0)
    dk = ref.weight.grad.numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(np.asarray(grads[0]["kernel"]), dk, atol=TOL * np.abs(dk).max(), rtol=0)


# bfloat16: both round a float32 sum to 8 bits; they may differ by one unit in the last place
# (2^-7 relative), so twice that relative bound, plus an absolute one for values near zero.
@pytest.mark.parametrize("dtype, tol, rtol", [(jnp.float32, 2e-6, 0), (jnp.bfloat16, 1e-2, 2**-6)])
@pytest.mark.parametrize("kernel, cin, cout", [(3, 16, 24), (7, 32, 3), (2, 16, 64)])
def test_matmul_convolution_equals_xla_convolution(kernel, cin, cout, dtype, tol, rtol):
    from cyclejax import convolution
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.normal(size=(2, 13, 10, cin)), dtype)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)) / kernel / np.sqrt(cin), dtype)
    want = convolution.conv2d(x, k, 1, (1, 1), "xla")
    got = convolution.conv2d(x, k, 1, (1, 1), "matmul")
    assert got.dtype == want.dtype == dtype and got.shape == want.shape == (2, 16 - kernel, 13 - kernel, cout)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=rtol)


def test_conv_impl_chooses_the_form_of_each_layer(monkeypatch):
    from cyclejax import convolution, onednn
    form = convolution.form
    for backend in ("gpu", "tpu"):  # cuDNN and the TPU's convolution units
        assert form("auto", 1, 64, 3, backend) == form("auto", 1, 256, 256, backend) == "xla"
        with pytest.raises(ValueError, match="runs on CPU only"):
            convolution.resolve("onednn", backend)
    # CPU, auto with oneDNN (a one-device process): oneDNN for every layer.
    monkeypatch.setattr(onednn, "available", lambda: True)
    assert convolution.resolve("auto", "cpu") == "onednn"
    assert form("auto", 2, 3, 64, "cpu") == form("auto", 1, 256, 256, "cpu") == "onednn"
    # CPU, auto without oneDNN: products only where XLA:CPU's convolution is slowest.
    monkeypatch.setattr(onednn, "available", lambda: False)
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "not built")
    assert form("auto", 1, 64, 3, "cpu") == form("auto", 1, 512, 1, "cpu") == "taps_out"
    assert form("auto", 1, 256, 256, "cpu") == "xla"
    with pytest.raises(RuntimeError, match="conv_impl='onednn' cannot run: not built"):
        convolution.resolve("onednn", "cpu")
    # matmul: every stride-1 layer with 16 or more input channels.
    assert form("matmul", 1, 256, 256, "gpu") == "taps_in" and form("matmul", 1, 64, 3, "cpu") == "taps_out"
    # Strided layers and the 3-channel input: XLA's convolution under matmul and mixed auto.
    for impl in ("auto", "xla", "matmul"):
        assert form(impl, 2, 64, 128, "cpu") == form(impl, 1, 3, 64, "cpu") == "xla"
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        convolution.resolve("cudnn")


# float32: two summation orders of up to 7*7*5 = 245 terms; 1e-5 of the largest output is
# about 170 units of float32 round-off (2^-24), room for any order on either CPU kind.
@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
@pytest.mark.parametrize("dtype, tol, rtol", [(jnp.float32, 1e-5, 0), (jnp.bfloat16, 1e-2, 2**-6)])
@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 2, 0, (10, 7)),  # a stride that leaves the last row and column unread: cropped first
    (4, 2, 1, (11, 9)),  # the discriminator's strided layers, odd sizes
    (7, 1, 3, (6, 5)),  # padding wider than half the input
    (1, 1, 0, (3, 4)),
])
def test_onednn_convolution_and_gradients_equal_xla(kernel, stride, padding, size, dtype, tol, rtol):
    from cyclejax import convolution
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.normal(size=(2, *size, 5)), dtype)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 6)) / kernel / np.sqrt(5), dtype)
    cotangent = jnp.asarray(rng.normal(size=convolution.conv2d(x, k, stride, (padding, padding), "xla").shape), dtype)

    def run(impl):
        y, vjp = jax.vjp(lambda x, k: convolution.conv2d(x, k, stride, (padding, padding), impl), x, k)
        return (y, *vjp(cotangent.astype(y.dtype)))

    got_all, want_all = jax.jit(run, static_argnums=0)("onednn"), jax.jit(run, static_argnums=0)("xla")
    # oneDNN's result is float32 (its float32 accumulator, unrounded); gradients in their primal's dtype.
    assert [g.dtype for g in got_all] == [jnp.float32, dtype, dtype]
    for got, want in zip(got_all, want_all):
        assert want.dtype == dtype and got.shape == want.shape
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=tol * scale, rtol=rtol)


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_convolution_rejects_mixed_dtypes():
    x = jnp.zeros((1, 4, 4, 2), jnp.float32)
    with pytest.raises(TypeError, match="a kernel of their dtype or float32, got float32 and bfloat16"):
        onednn.conv2d(x, jnp.zeros((3, 3, 2, 2), jnp.bfloat16), 1, (1, 1))
    with pytest.raises(ValueError, match="needs an input of at least that size"):
        onednn.conv2d(x, jnp.zeros((7, 7, 2, 2), jnp.float32), 1, (0, 0))


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_bfloat16_convolution_returns_the_float32_kernel_gradient_unrounded():
    """A float32 kernel in a bfloat16 convolution: the same function as the kernel rounded
    first, but its gradient is oneDNN's float32 accumulator, not that rounded to bfloat16."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 9, 9, 8)), jnp.bfloat16)
    k32 = jnp.asarray(rng.normal(size=(3, 3, 8, 16)) / 9, jnp.float32)
    dy = jnp.asarray(rng.normal(size=(1, 5, 5, 16)), jnp.float32)

    def run(k):
        y, vjp = jax.vjp(lambda x, k: onednn.conv2d(x, k, 2, (1, 1)), x, k)
        return (y, *vjp(dy))

    y32, dx32, dk32 = jax.jit(run)(k32)
    y16, dx16, dk16 = jax.jit(run)(k32.astype(jnp.bfloat16))
    assert (y32.dtype, dx32.dtype, dk32.dtype) == (jnp.float32, jnp.bfloat16, jnp.float32)
    np.testing.assert_array_equal(np.asarray(y32), np.asarray(y16))
    np.testing.assert_array_equal(np.asarray(dx32, np.float32), np.asarray(dx16, np.float32))
    # The bfloat16 kernel's gradient is the float32 one rounded; most entries carry more bits.
    np.testing.assert_array_equal(np.asarray(dk32.astype(jnp.bfloat16), np.float32), np.asarray(dk16, np.float32))
    assert np.mean(np.asarray(dk32) != np.asarray(dk32.astype(jnp.bfloat16), np.float32)) > 0.9

    # The same through the layer: a bfloat16 Conv's kernel gradient reaches the parameter unrounded.
    conv = layers.Conv(16, 3, stride=2, padding=1, dtype=jnp.bfloat16, conv_impl="onednn")
    params = conv.init(jax.random.key(0), x.astype(jnp.float32))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(conv.apply(p, x) * dy)))(params)["params"]
    np.testing.assert_array_equal(np.asarray(grad["kernel"]),
                                  np.asarray(run(params["params"]["kernel"])[2]))
    # The bias gradient is a float32 sum of 25 terms: any order is within 25 * 2^-24 * sum|dy|
    # of another; a detour through bfloat16 would be up to 2^-9 of the value off.
    bias_grad = np.asarray(jnp.sum(dy, axis=(0, 1, 2)))
    bound = 25 * 2.0**-24 * np.asarray(jnp.sum(jnp.abs(dy), axis=(0, 1, 2)))
    assert np.all(np.abs(np.asarray(grad["bias"]) - bias_grad) <= bound)


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_convolution_differentiates_its_gradient():
    """Second derivatives (WGAN-GP's penalty differentiates an input gradient) equal XLA's."""
    from cyclejax import convolution
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 4, 4, 3)) / 8, jnp.float32)

    def penalty(impl, x, k):
        def critic(x):
            return jnp.sum(jnp.tanh(convolution.conv2d(x, k, 2, (1, 1), impl)))
        return jnp.sum(jnp.square(jax.grad(critic)(x)))

    for got, want in zip(jax.grad(functools.partial(penalty, "onednn"), argnums=(0, 1))(x, k),
                         jax.grad(functools.partial(penalty, "xla"), argnums=(0, 1))(x, k)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5 * float(jnp.max(jnp.abs(want))))


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_packs_each_kernel_once_per_direction():
    """A kernel applied three times (as a step applies each generator) is reordered into
    oneDNN's layouts once for the forward and once for the backward-data calls."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(3, 1, 8, 8, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 16, 16)) / 12, jnp.float32)

    def loss(k, xs):
        y = xs[0]
        for x in xs:  # one use on an input, two on the previous output
            y = jnp.tanh(onednn.conv2d(x + y, k, 1, (1, 1)))
        return jnp.sum(y ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(k, xs).compile().as_text()
    calls = {t: len(re.findall(f'custom_call_target="cyclejax_onednn_conv_{t}"', hlo))
             for t in ("pack", "forward", "backward_data", "backward_weights")}
    assert calls == {"pack": 2, "forward": 3, "backward_data": 2, "backward_weights": 3}, calls


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_runs_one_large_convolution_at_a_time():
    """XLA runs 32 independent convolutions on its threads: those of 20 MFLOP or more one at
    a time (two OpenMP teams on the same cores slow each other down), smaller ones side by
    side (which also shows that the counter sees calls overlap)."""
    def peaks(size, channels, runs):
        rng = np.random.default_rng(0)
        xs = jnp.asarray(rng.normal(size=(32, 1, size, size, channels)), jnp.float32)
        ks = jnp.asarray(rng.normal(size=(32, 3, 3, channels, channels)) / 30, jnp.float32)
        f = jax.jit(lambda xs, ks: [onednn.conv2d(xs[i], ks[i], 1, (1, 1)) for i in range(32)])
        jax.block_until_ready(f(xs, ks))
        seen = []
        for _ in range(runs):
            onednn.peak_concurrency(reset=True)
            jax.block_until_ready(f(xs, ks))
            seen.append(onednn.peak_concurrency())
            if seen[-1] > 1 and size < 32:
                break
        return seen

    assert 2 * 64 * 64 * 64 * 64 * 9 / 1e6 > 20 and 2 * 16 * 16 * 16 * 16 * 9 / 1e6 < 20
    assert set(peaks(64, 64, 10)) == {1}
    assert max(peaks(16, 16, 50)) >= 2


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_refuses_a_packed_kernel_of_another_convolution():
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    wrong = onednn._pack(jnp.ones((3, 3, 4, 4), jnp.float32), onednn._FORWARD, (1, 8, 8, 4), (1, 8, 8, 4), 1, (1, 1),
                           jnp.float32)
    with pytest.raises(Exception, match="packed kernel's size does not match"):
        onednn._call("cyclejax_onednn_conv_forward", (1, 8, 8, 32), x, wrong, 1, (1, 1), (3, 3, 4, 32),
                     packed=True).block_until_ready()


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_largest_mflop_counts_the_convolutions_as_the_lock_does():
    """2 * output elements * kh * kw * input channels, for strided and transposed convolutions
    too, from an abstract trace (no computation); 20 MFLOP is the default limit."""
    def net(x, k1, k2):
        h = onednn.conv2d(x, k1, 2, (1, 1))  # (2, 16, 16, 32) from 3x3x8: 2*2*16*16*32*72 = 2.36 MFLOP
        # (2, 32, 32, 64): the input gradient of a 3x3 convolution 64 -> 32 channels to 16x16,
        # as many products as that one: 2*2*16*16*32*3*3*64 = 18.9 MFLOP.
        return onednn.conv_transpose(h, k2, 2, 1, 1)
    spec = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    mflop = onednn.largest_mflop(net, spec(2, 32, 32, 8), spec(3, 3, 8, 32), spec(3, 3, 32, 64))
    assert mflop == pytest.approx(2 * 2 * 16 * 16 * 32 * 3 * 3 * 64 / 1e6)
    assert onednn.largest_mflop(lambda x, k: onednn.conv2d(x, k, 2, (1, 1)), spec(2, 32, 32, 8),
                                spec(3, 3, 8, 32)) == pytest.approx(2 * 2 * 16 * 16 * 32 * 3 * 3 * 8 / 1e6)
    assert onednn.largest_mflop(lambda x: jnp.sin(x), spec(4)) == 0.0
    if "CYCLEJAX_ONEDNN_SERIAL_MFLOP" not in os.environ:
        assert onednn.serial_limit_mflop() == 20.0
