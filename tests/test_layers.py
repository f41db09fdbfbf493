"""Each layer of cyclejax.layers against torch.nn's own layer on random input."""
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cyclejax import convolution, layers, onednn
from tests import isa
from tests.conftest import impls
from tests.isa import AVX2_CAP
from tests.roundoff import assert_as_close_as
from tests.torch_reference import nchw, nhwc

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)

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
    ours = np.asarray(jax.jit(mod.apply)({"params": params}, jnp.asarray(x)))  # compiled: op by op, 6 s for 7x7
    cotangent = _x(ours.shape, seed=1)
    loss = lambda p, x: jnp.sum(mod.apply({"params": p}, x) * cotangent)  # noqa: E731
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x))
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


MATMUL_SHAPES = [(3, 16, 24), (7, 32, 3), (2, 16, 64)]  # taps_in, taps_out (3 outputs), an even kernel


def _matmul_operands(kernel, cin, cout, dtype):
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.normal(size=(2, 13, 10, cin)), dtype)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)) / kernel / np.sqrt(cin), dtype)
    return x, k


def _conv_and_grads(impl, x, k):
    """The convolution, and the gradients of a fixed random projection of it (one compiled
    program: run op by op, the products' many slices compiled one by one, 17 s for 7x7)."""
    shape = jax.eval_shape(lambda x, k: convolution.conv2d(x, k, 1, (1, 1), impl), x, k)
    w = jnp.asarray(np.random.default_rng(1).normal(size=shape.shape), shape.dtype)
    return _jit_conv_and_grads(impl, x, k, w)


@functools.partial(jax.jit, static_argnums=0)
def _jit_conv_and_grads(impl, x, k, w):
    y = convolution.conv2d(x, k, 1, (1, 1), impl)
    return (y, *jax.grad(lambda x, k: jnp.sum(convolution.conv2d(x, k, 1, (1, 1), impl) * w), argnums=(0, 1))(x, k))


@pytest.mark.parametrize("kernel, cin, cout", MATMUL_SHAPES)
def test_matmul_convolution_equals_xla_convolution_in_float64_and_as_closely_in_float32(kernel, cin, cout):
    """The product forms and their custom gradients are the same function as XLA's convolution:
    equal to 1e-12 in float64, and in float32 as close to that truth as XLA's own float32 is."""
    with jax.enable_x64(True):
        truth = _conv_and_grads("xla", *_matmul_operands(kernel, cin, cout, jnp.float64))
        exact = _conv_and_grads("matmul", *_matmul_operands(kernel, cin, cout, jnp.float64))
        assert exact[0].dtype == jnp.float64 and exact[0].shape == (2, 16 - kernel, 13 - kernel, cout)
        for got, want in zip(exact, truth):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * float(jnp.abs(want).max()))
    x, k = _matmul_operands(kernel, cin, cout, jnp.float32)
    for name, got, want, t in zip(("output", "input gradient", "kernel gradient"), _conv_and_grads("matmul", x, k),
                                  _conv_and_grads("xla", x, k), truth):
        assert got.dtype == jnp.float32
        assert_as_close_as(got, want, t, what=name)


@pytest.mark.parametrize("shape, cout", [((2, 13, 10, 16), 24), ((1, 8, 8, 32), 16)])  # odd and even output sizes
def test_winograd_convolution_equals_xla_convolution_in_float64_and_as_closely_in_float32(shape, cout):
    """Winograd's F(2x2, 3x3) and its custom gradient are the same function as XLA's convolution:
    equal to 1e-12 in float64 (its transforms are exact), and in float32 as close to that truth as
    XLA's own float32 is. bfloat16 (on an AVX2-only CPU, under auto): float32 on bfloat16's values,
    the result and the kernel's gradient float32, the input's rounded to bfloat16, as oneDNN's
    float32 kernels compute it there."""
    rng = np.random.default_rng(shape[-1])
    x, k = rng.normal(size=shape), rng.normal(size=(3, 3, shape[-1], cout)) / 3 / np.sqrt(shape[-1])
    with jax.enable_x64(True):
        truth = _conv_and_grads("xla", jnp.asarray(x), jnp.asarray(k))
        exact = _conv_and_grads("winograd", jnp.asarray(x), jnp.asarray(k))
        assert exact[0].dtype == jnp.float64 and exact[0].shape == (*shape[:3], cout)
        for got, want in zip(exact, truth):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * float(jnp.abs(want).max()))
    x32, k32 = jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32)
    for name, got, want, t in zip(("output", "input gradient", "kernel gradient"), _conv_and_grads("winograd", x32, k32),
                                  _conv_and_grads("xla", x32, k32), truth):
        assert got.dtype == jnp.float32
        assert_as_close_as(got, want, t, what=name)
    # A float32 kernel (a parameter) on bfloat16 activations.
    rounded = [jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16).astype(jnp.float32)]
    got = _conv_and_grads("winograd", *rounded)
    want = _conv_and_grads("xla", *(a.astype(jnp.float32) for a in rounded))  # bfloat16's values, float32 sums
    assert [g.dtype for g in got] == [jnp.float32, jnp.bfloat16, jnp.float32]
    for g, w in zip(got, (want[0], want[1].astype(jnp.bfloat16), want[2])):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=2**-7,
                                   atol=1e-5 * float(jnp.abs(w.astype(jnp.float32)).max()))


# bfloat16: both round a float32 sum to 8 bits; they may differ by one unit in the last place
# (2^-7 relative), so twice that relative bound, plus an absolute one for values near zero.
@pytest.mark.parametrize("kernel, cin, cout", MATMUL_SHAPES)
def test_matmul_convolution_equals_xla_convolution_in_bfloat16(kernel, cin, cout):
    x, k = _matmul_operands(kernel, cin, cout, jnp.bfloat16)
    want = convolution.conv2d(x, k, 1, (1, 1), "xla")
    got = convolution.conv2d(x, k, 1, (1, 1), "matmul")
    assert got.dtype == want.dtype == jnp.bfloat16 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=1e-2, rtol=2**-6)


def test_conv_impl_chooses_the_form_of_each_layer(monkeypatch):
    from cyclejax import convolution, onednn
    form = convolution.form
    for backend in ("gpu", "tpu"):  # cuDNN and the TPU's convolution units
        assert form("auto", 1, 64, 3, backend) == form("auto", 1, 256, 256, backend) == "xla"
        with pytest.raises(ValueError, match="runs on CPU only"):
            convolution.resolve("onednn", backend)
    # CPU, auto with oneDNN (a one-device process): oneDNN for every layer where its kernels are
    # AVX-512's (it has bfloat16 convolutions there).
    monkeypatch.setattr(onednn, "available", lambda: True)
    monkeypatch.setattr(onednn, "supports", lambda dtype: True)
    assert convolution.resolve("auto", "cpu") == "onednn"
    assert form("auto", 2, 3, 64, "cpu") == form("auto", 1, 256, 256, "cpu", kernel_size=3) == "onednn"
    # Where they are AVX2's: Winograd's form for the stride-1 3x3 layers of 600 MFLOP or more
    # (a ResNet block's at 128x128 and up: 1,208 MFLOP), oneDNN for the others.
    monkeypatch.setattr(onednn, "supports", lambda dtype: jnp.dtype(dtype) == jnp.float32)
    assert convolution.resolve("auto", "cpu") == "onednn_winograd"
    assert form("auto", 1, 256, 256, "cpu", kernel_size=3, mflop=1208) == "winograd"
    assert form("auto", 1, 64, 64, "cpu", kernel_size=3, mflop=19) == "onednn"  # the quick-start model's
    for args in ((1, 256, 256), (2, 64, 128), (1, 15, 16), (1, 16, 8)):  # a transposed layer's sub-pixel form, ...
        assert form("auto", *args, "cpu", kernel_size=None if args == (1, 256, 256) else 3, mflop=1e4) == "onednn"
    assert form("auto", 1, 64, 3, "cpu", kernel_size=7, mflop=1e4) == "onednn"
    # An explicit winograd: every stride-1 3x3 layer with 16 or more channels each way, and what
    # auto would take without it for the rest.
    assert form("winograd", 1, 16, 16, "cpu", kernel_size=3) == "winograd"
    assert form("winograd", 1, 15, 16, "cpu", kernel_size=3) == "onednn"
    assert form("winograd", 1, 256, 256, "gpu", kernel_size=3) == "winograd"
    assert form("winograd", 2, 64, 128, "gpu", kernel_size=3) == "xla"
    assert form("winograd", 1, 64, 3, "cpu", jnp.float64, kernel_size=7) == "xla"
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


def test_conv_impl_follows_the_dtype_and_what_the_cpu_runs(monkeypatch):
    """float64 (which oneDNN does not compute) takes XLA's convolutions under auto and refuses an
    explicit onednn; bfloat16 on a CPU whose oneDNN has no bfloat16 kernels takes oneDNN's float32
    ones under auto, and an explicit onednn is refused naming the CPU's missing feature."""
    monkeypatch.setattr(onednn, "available", lambda: True)
    assert convolution.resolve("auto", "cpu", jnp.float64) == "xla"
    assert convolution.resolve("matmul", "cpu", jnp.float64) == "matmul"
    with pytest.raises(ValueError, match="computes in float32 or bfloat16, not float64"):
        convolution.resolve("onednn", "cpu", jnp.float64)
    assert convolution.resolve("auto", "tpu", jnp.bfloat16) == "xla"
    monkeypatch.setattr(onednn, "supports", lambda dtype: jnp.dtype(dtype) == jnp.float32)
    monkeypatch.setattr(onednn, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert convolution.resolve("auto", "cpu", jnp.bfloat16) == "onednn_winograd"  # oneDNN's kernels are AVX2's
    assert convolution.form("auto", 2, 16, 16, "cpu", jnp.bfloat16, kernel_size=4) == "onednn"
    assert convolution.form("onednn", 1, 16, 16, "cpu", jnp.bfloat16) == "onednn"  # a built model's choice
    with pytest.raises(RuntimeError, match=r"cannot run in bfloat16: this CPU lacks AVX-512 \(avx512bw avx512cd "
                                           r"avx512dq avx512f avx512vl not in /proc/cpuinfo's flags\)"):
        convolution.resolve("onednn", "cpu", jnp.bfloat16)
    assert "float32 kernels on the bfloat16 operands" in convolution.describe("auto", jnp.bfloat16, "cpu")
    assert convolution.describe("auto", jnp.float32, "cpu") == (
        "oneDNN's; Winograd's F(2x2, 3x3) for the 3x3 layers of 600 MFLOP or more (oneDNN runs AVX2 kernels here)")


@pytest.fixture(params=["native", "float32 kernels"])
def bfloat16_path(request, monkeypatch):
    """How oneDNN computes bfloat16 convolutions: with its bfloat16 kernels where the CPU has them
    ('native'), else, as conv_impl='auto' then does, with its float32 kernels on the bfloat16
    operands (`convolution.onednn_operands`; forced here by hiding the bfloat16 kernels, so that
    both paths are tested on every CPU that has both)."""
    if not onednn.available():
        pytest.skip(f"oneDNN: {onednn.unavailable_reason()}")
    if request.param == "native" and not onednn.supports(jnp.bfloat16):
        pytest.skip(f"this CPU runs the float32 path only: {onednn.unsupported_reason(jnp.bfloat16)}")
    if request.param != "native":
        monkeypatch.setattr(onednn, "supports", lambda dtype: jnp.dtype(dtype) == jnp.float32)
    return request.param


CONVOLUTIONS = [
    (3, 2, 0, (10, 7)),  # a stride that leaves the last row and column unread: cropped first
    (4, 2, 1, (11, 9)),  # the discriminator's strided layers, odd sizes
    (7, 1, 3, (6, 5)),  # padding wider than half the input
    (1, 1, 0, (3, 4)),
]


def _convolution_and_gradients(impl, x, k, cotangent, stride, padding):
    def run(x, k):
        y, vjp = jax.vjp(lambda x, k: convolution.conv2d(x, k, stride, (padding, padding), impl), x, k)
        return (y, *vjp(cotangent.astype(y.dtype)))
    return jax.jit(run)(x, k)


def _operands(kernel, stride, padding, size, dtype):
    rng = np.random.default_rng(kernel)
    x = rng.normal(size=(2, *size, 5))
    k = rng.normal(size=(kernel, kernel, 5, 6)) / kernel / np.sqrt(5)
    out = (size[0] + 2 * padding - kernel) // stride + 1, (size[1] + 2 * padding - kernel) // stride + 1
    cotangent = rng.normal(size=(2, *out, 6))
    return (jnp.asarray(a, dtype) for a in (x, k, cotangent))


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
@pytest.mark.parametrize("kernel, stride, padding, size", CONVOLUTIONS)
def test_onednn_convolution_and_gradients_equal_xla_float64_truth(kernel, stride, padding, size):
    """float32: output, input and kernel gradients as close to the float64 truth (XLA's convolution
    with jax_enable_x64) as XLA's own float32 convolution is (tests/roundoff.py)."""
    with jax.enable_x64(True):
        truth = _convolution_and_gradients("xla", *_operands(kernel, stride, padding, size, jnp.float64),
                                           stride, padding)
    operands = list(_operands(kernel, stride, padding, size, jnp.float32))
    x, k, cotangent = operands
    got = _convolution_and_gradients("onednn", x, k, cotangent, stride, padding)
    want = _convolution_and_gradients("xla", x, k, cotangent, stride, padding)
    assert [g.dtype for g in got] == [jnp.float32] * 3
    for name, g, w, t in zip(("output", "input gradient", "kernel gradient"), got, want, truth):
        assert_as_close_as(g, w, t, what=name)


# bfloat16: both round a float32 sum to 8 bits; they may differ by one unit in the last place
# (2^-7 relative), so twice that relative bound, plus an absolute one for values near zero.
@pytest.mark.parametrize("kernel, stride, padding, size", CONVOLUTIONS)
def test_onednn_bfloat16_convolution_and_gradients_equal_xla(kernel, stride, padding, size, bfloat16_path):
    x, k, cotangent = _operands(kernel, stride, padding, size, jnp.bfloat16)
    assert convolution.form("auto", stride, 5, 6, "cpu", jnp.bfloat16, kernel_size=kernel) == "onednn"
    got_all = _convolution_and_gradients("auto", x, k, cotangent, stride, padding)
    want_all = _convolution_and_gradients("xla", x, k, cotangent, stride, padding)
    # oneDNN's result is float32 (its float32 accumulator, unrounded); gradients in their primal's dtype.
    assert [g.dtype for g in got_all] == [jnp.float32, jnp.bfloat16, jnp.bfloat16]
    for got, want in zip(got_all, want_all):
        assert want.dtype == jnp.bfloat16 and got.shape == want.shape
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=1e-2 * scale, rtol=2**-6)


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_onednn_convolution_rejects_mixed_dtypes():
    x = jnp.zeros((1, 4, 4, 2), jnp.float32)
    with pytest.raises(TypeError, match="a kernel of their dtype or float32, got float32 and bfloat16"):
        onednn.conv2d(x, jnp.zeros((3, 3, 2, 2), jnp.bfloat16), 1, (1, 1))
    with pytest.raises(ValueError, match="needs an input of at least that size"):
        onednn.conv2d(x, jnp.zeros((7, 7, 2, 2), jnp.float32), 1, (0, 0))


@pytest.mark.skipif(not (onednn.available() and onednn.supports(jnp.bfloat16)),
                    reason="needs oneDNN's bfloat16 kernels (an AVX-512 CPU, uncapped) to compare against")
def test_the_float32_fallback_computes_what_the_bfloat16_kernels_compute(monkeypatch):
    """A bfloat16 Conv layer, forward and backward, with oneDNN's bfloat16 kernels and with the
    float32 ones on rounded operands: the same products summed in float32 (outputs and the
    kernel gradient agree to float32 round-off), the same bfloat16-rounded input gradient."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 8)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(2, 9, 9, 16)), jnp.float32)
    conv = layers.Conv(16, 3, padding=1, dtype=jnp.bfloat16, conv_impl="onednn")
    params = conv.init(jax.random.key(0), x)

    def run():
        y, vjp = jax.vjp(lambda p, x: conv.apply(p, x), params, x)
        return (y, *vjp(dy))

    y1, g1, dx1 = jax.jit(run)()
    monkeypatch.setattr(onednn, "supports", lambda dtype: jnp.dtype(dtype) == jnp.float32)
    y2, g2, dx2 = jax.jit(run)()
    assert y1.dtype == y2.dtype == dx1.dtype == dx2.dtype == jnp.float32
    np.testing.assert_allclose(y2, y1, rtol=0, atol=1e-6 * float(jnp.abs(y1).max()))
    for a, b in ((g2["params"]["kernel"], g1["params"]["kernel"]), (g2["params"]["bias"], g1["params"]["bias"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(jnp.abs(b).max()))
    # Both input gradients are bfloat16 values (a float32 sum rounded to 8 bits): equal, or one unit apart.
    assert np.array_equal(np.asarray(dx1), np.asarray(dx1.astype(jnp.bfloat16), np.float32))
    assert np.array_equal(np.asarray(dx2), np.asarray(dx2.astype(jnp.bfloat16), np.float32))
    np.testing.assert_allclose(dx2, dx1, rtol=2**-7, atol=1e-6)


def test_bfloat16_convolution_returns_the_float32_kernel_gradient_unrounded(bfloat16_path):
    """A float32 kernel in a bfloat16 convolution: the same function as the kernel rounded
    first, but its gradient is oneDNN's float32 accumulator, not that rounded to bfloat16."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 9, 9, 8)), jnp.bfloat16)
    k32 = jnp.asarray(rng.normal(size=(3, 3, 8, 16)) / 9, jnp.float32)
    dy = jnp.asarray(rng.normal(size=(1, 5, 5, 16)), jnp.float32)

    def run(k):
        y, vjp = jax.vjp(lambda x, k: convolution.conv2d(x, k, 2, (1, 1), "auto"), x, k)
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
    conv = layers.Conv(16, 3, stride=2, padding=1, dtype=jnp.bfloat16, conv_impl="auto")
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


# /proc/cpuinfo's flags: a Zen 3 VM (AVX2 and FMA, nothing above), this project's Zen 4 VM, a
# Sapphire Rapids VM (AMX) and an Alder Lake laptop (AVX-VNNI without AVX-512), shortened to their
# vector and matrix extensions and a few others.
ZEN3 = "sse4_2 fma movbe popcnt aes xsave avx f16c bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq rdpid fsrm"
ZEN4 = ZEN3 + (" avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2 gfni"
               " avx512_vnni avx512_bitalg avx512_vpopcntdq")
SAPPHIRE_RAPIDS = ZEN4 + " avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8"
ALDER_LAKE = ZEN3 + " avx_vnni gfni"


def _isa_worker(env):
    """tests/isa_worker.py with ONEDNN_VERBOSE: (both oneDNNs' isa lines, their convolution kernels, torch's
    capability line)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "tests.isa_worker"], cwd=root, capture_output=True, text=True,
                         timeout=300, env={**env, "ONEDNN_VERBOSE": "1", "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    isa_lines = [line for line in lines if re.match(r"onednn_verbose,(v1,)?info,cpu,isa:", line)]
    convolutions = [line.split(",") for line in lines if ",exec,cpu,convolution," in line]
    assert len(isa_lines) == 2 and len(convolutions) >= 6, lines[-20:]  # ours (3.2), torch's (v1); 3 passes each
    torch_line = [line for line in lines if line.startswith("torch capability:")]
    return isa_lines, {fields[fields.index("convolution") + 1] for fields in convolutions}, torch_line


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_the_avx2_cap_reaches_both_onednns_and_torch():
    """The cap .ci/run's second pass sets, checked with oneDNN's verbose mode: cyclejax's oneDNN and
    torch's both report the AVX2 instruction set and run only avx2 convolution kernels (no
    avx512), and torch's own kernels run at AVX2. (XLA refuses an XLA_FLAGS it cannot parse.)"""
    isa_lines, kernels, torch_line = _isa_worker({**os.environ, **AVX2_CAP})
    assert all(line.endswith("isa:Intel AVX2") for line in isa_lines), isa_lines
    assert all("avx2" in k and "avx512" not in k for k in kernels), kernels
    assert torch_line == ["torch capability: AVX2"]


def test_the_capped_pass_is_left_out_only_where_the_cap_removes_nothing():
    """.ci/run repeats the numeric tests capped unless `python -m tests.isa` says this CPU has nothing
    above AVX2. The rule on four CPUs' flags, and on this one against what the libraries detect
    without the cap: where nothing is above AVX2 both oneDNNs and torch already run at AVX2 (the
    capped pass would repeat the first), otherwise oneDNN runs above it."""
    assert isa.above_avx2(ZEN3.split()) == []
    assert isa.above_avx2(ZEN4.split()) == sorted(set(ZEN4.split()) - set(ZEN3.split()) - {"gfni"})
    assert {"amx_tile", "avx512_fp16", "avx_vnni"} <= set(isa.above_avx2(SAPPHIRE_RAPIDS.split()))
    assert isa.above_avx2(ALDER_LAKE.split()) == ["avx_vnni"]  # oneDNN's avx2_vnni kernels: capped pass kept
    assert isa.describe(None).startswith("unknown")  # flags not found: capped pass kept
    assert isa.describe(ZEN3.split()) == "nothing above AVX2" and isa.describe(["avx512f"]) == "above AVX2: avx512f"
    # The cap as .ci/run sets it (`env $(python -m tests.isa --cap)`): AVX2_CAP, word for word.
    cap = subprocess.run([sys.executable, "-m", "tests.isa", "--cap"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert dict(word.split("=", 1) for word in cap) == AVX2_CAP
    flags = isa.cpu_flags()
    if flags is None or not onednn.available():
        pytest.skip("no x86 flags in /proc/cpuinfo, or oneDNN's extension is not built")
    isa_lines, kernels, torch_line = _isa_worker({k: v for k, v in os.environ.items() if k not in AVX2_CAP})
    if isa.above_avx2(flags):
        assert not any(line.endswith("isa:Intel AVX2") for line in isa_lines), (isa_lines, isa.describe(flags))
    else:
        assert all(line.endswith("isa:Intel AVX2") for line in isa_lines), isa_lines
        assert all("avx512" not in k for k in kernels), kernels
        assert torch_line == ["torch capability: AVX2"], torch_line
