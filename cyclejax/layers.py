"""The layers of the official PyTorch networks that Flax lacks, in NHWC.

Each reproduces its `torch.nn` counterpart to float32 round-off (tests/test_layers.py
checks them against torch itself):

- `reflect_pad`: `nn.ReflectionPad2d`.
- `instance_norm`: `nn.InstanceNorm2d(affine=False)`: biased variance, eps 1e-5, no state.
  Both norms compute and return float32 whatever their input (as torch.autocast runs
  them): in bfloat16 networks the ResNet blocks' residual sums stay float32 and only the
  convolutions' operands are bfloat16.
- `BatchNorm`: `nn.BatchNorm2d` in its training and eval modes, running variance unbiased
  and momentum 0.1 as in torch (Flax's `nn.BatchNorm` keeps a biased running variance).
- `ConvTranspose`: `nn.ConvTranspose2d` with stride, padding and output padding, written as
  a stride-1 convolution followed by depth-to-space (the sub-pixel form). It computes the
  same function; XLA:CPU runs the backward of a strided transposed convolution roughly ten
  times slower than this form (experiments/bench/README.md).
- `Conv`: `nn.Conv2d` with explicit zero padding, computed by `cyclejax.convolution` in the
  implementation `conv_impl` names ('auto': XLA's convolution on GPU and TPU; on CPU
  matrix products for the layers XLA:CPU runs slowly).
- `kernel_init`: the official `init_weights` (normal, xavier, kaiming, orthogonal).
- `norm_layer`: the official `get_norm_layer`, as a module definition.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclejax import convolution, onednn

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
NORMS = ("instance", "batch", "none")

Dtype = Any
ModuleDef = Any  # a module class or a functools.partial of one: called as `layer(name=...)`


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """`nn.ReflectionPad2d(pad)` on an NHWC array."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def full_precision(dtype: Dtype) -> jnp.dtype:
    """The dtype of parameters, norms and sums for a network computing in `dtype`: float32 for
    bfloat16 and float32 networks, float64 for float64 ones (exactness checks, with x64 on)."""
    return jnp.promote_types(dtype, jnp.float32)


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """`nn.InstanceNorm2d(affine=False)`: per sample and channel over H and W, in float32 (float64
    for float64 input)."""
    x = x.astype(full_precision(x.dtype))
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def kernel_init(init_type: str = "normal", gain: float = 0.02, transposed: bool = False):
    """Initialiser of a conv kernel laid out (kh, kw, in, out), as the official `init_weights`.

    torch computes fans from the weight's first two dimensions; a transposed convolution's
    weight is (in, out, kh, kw), so torch's "fan_in" there counts the output channels.
    `transposed` reproduces that for kaiming.
    """
    if init_type == "normal":
        return nn.initializers.normal(stddev=gain)
    if init_type == "xavier":
        # xavier_normal_(w, gain): std = gain * sqrt(2 / (fan_in + fan_out)).
        return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")
    if init_type == "kaiming":
        # kaiming_normal_(w, a=0, mode='fan_in'): std = sqrt(2 / fan_in).
        in_axis, out_axis = (-1, -2) if transposed else (-2, -1)
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis)
    if init_type == "orthogonal":
        # torch flattens (out, in*kh*kw) and makes the rows orthonormal.
        return nn.initializers.orthogonal(scale=gain, column_axis=-1)
    raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")


class Conv(nn.Module):
    """`nn.Conv2d(in, features, kernel_size, stride, padding, bias)` with zero padding.

    `kernel_size` and `padding` are an int or an (h, w) pair. Parameters are kept in float32
    (`kernel` (kh, kw, in, out), `bias`; float64 in a float64 network); the convolution runs in
    `dtype`, implemented as `conv_impl` says (`cyclejax.convolution.IMPLS`; every one computes
    the same function).
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.normal(stddev=0.02)
    dtype: Dtype = jnp.float32
    conv_impl: str = "auto"

    def kernel_and_bias(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
        """The parameters, float32 (float64 in a float64 network); the convolution casts the kernel
        to the compute dtype."""
        kh, kw = _pair(self.kernel_size)
        dtype = full_precision(self.dtype)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features), dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), dtype) if self.use_bias else None
        return kernel, bias

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.kernel_and_bias(x.shape[-1])
        y = convolution.conv2d(x, kernel, self.stride, _pair(self.padding), self.conv_impl, self.dtype)
        return _add_bias(y, bias)


def _add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    """y + bias in y's dtype: oneDNN's float32 results take the float32 bias as it is."""
    return y if bias is None else y + bias.astype(y.dtype)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@functools.lru_cache(maxsize=None)
def _subpixel_taps(kernel_size: int, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """Where each kernel tap of a transposed convolution lands in the sub-pixel form.

    Output pixel `o = stride * m + r` receives `x[m + d] * w[k]` for every tap `k` with
    `k = r + padding - stride * d`. Returns the table `index[r, d - d_min]` of kernel taps
    (`kernel_size` marks "no tap": a zero) and the input padding (before, after).
    """
    taps = {}
    for r in range(stride):
        for k in range(kernel_size):
            if (k - r - padding) % stride == 0:
                taps[(r, -((k - r - padding) // stride))] = k
    d_min = min(d for _, d in taps)
    d_max = max(d for _, d in taps)
    index = np.full((stride, d_max - d_min + 1), kernel_size, dtype=np.int32)
    for (r, d), k in taps.items():
        index[r, d - d_min] = k
    return index, max(0, -d_min), max(0, d_max)


def subpixel_kernel(kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Turns a transposed-conv kernel (k, k, in, out) into the stride-1 kernel (K, K, in, s*s*out)."""
    k, _, cin, cout = kernel.shape
    index, _, _ = _subpixel_taps(k, stride, padding)
    zero_slot = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # index k is a zero tap
    taps = zero_slot[index][:, :, index]  # (s, K, s, K, in, out): [rh, a, rw, b]
    size = index.shape[1]
    return taps.transpose(1, 3, 4, 0, 2, 5).reshape(size, size, cin, stride * stride * cout)


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: int, output_padding: int,
                   impl: str = "auto", dtype=None) -> jax.Array:
    """`F.conv_transpose2d` (no bias) for outputs of exactly `stride` times the input size, in
    `dtype` (default: x's)."""
    n, h, w, _ = x.shape
    k, cout = kernel.shape[0], kernel.shape[-1]
    dtype = jnp.dtype(dtype or x.dtype)
    if convolution.form(impl, 1, kernel.shape[2], cout, dtype=dtype) == "onednn" and output_padding <= padding:
        return onednn.conv_transpose(*convolution.onednn_operands(x, kernel, dtype), stride, padding, output_padding)
    x = x.astype(dtype)
    if k + output_padding - 2 * padding != stride:
        raise ValueError(
            f"sub-pixel transposed conv needs kernel + output_padding - 2*padding == stride, "
            f"got kernel={k}, stride={stride}, padding={padding}, output_padding={output_padding}"
        )
    _, before, after = _subpixel_taps(k, stride, padding)
    x = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
    y = convolution.conv2d(x, subpixel_kernel(kernel, stride, padding).astype(x.dtype), impl=impl)
    y = y.reshape(n, h, w, stride, stride, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * stride, w * stride, cout)


class ConvTranspose(Conv):
    """`nn.ConvTranspose2d(in, features, kernel_size, stride, padding, output_padding, bias)`.

    The kernel parameter is stored as (kh, kw, in, out), the torch weight (in, out, kh, kw)
    transposed, so that parameter counts and conversions match the official ones.
    `kernel_init` should be `kernel_init(..., transposed=True)`.
    """

    output_padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.kernel_and_bias(x.shape[-1])
        y = conv_transpose(x, kernel, self.stride, self.padding, self.output_padding, self.conv_impl, self.dtype)
        return _add_bias(y, bias)


class BatchNorm(nn.Module):
    """`nn.BatchNorm2d(features)` (affine, running statistics, momentum 0.1, eps 1e-5).

    Training mode normalises by the batch's biased variance and folds the unbiased one
    into `batch_stats`, as torch does; eval mode uses the running statistics.
    Scale starts at Normal(1, init_gain) as in the official `init_weights`.
    """

    init_gain: float = 0.02
    momentum: float = 0.1
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        dtype = full_precision(x.dtype)  # float32, float64 in a float64 network
        x = x.astype(dtype)
        gain = self.init_gain
        scale = self.param("scale", lambda key, shape: 1.0 + gain * jax.random.normal(key, shape, dtype), (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,), dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), dtype))
        if train:
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
            count = x.shape[0] * x.shape[1] * x.shape[2]
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * count / max(count - 1, 1)
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y


class InstanceNorm(nn.Module):
    """`nn.InstanceNorm2d(affine=False)` as a module (no parameters, `train` ignored)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        del train
        return instance_norm(x)


class NoNorm(nn.Module):
    """norm='none': the identity."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        del train
        return x


def norm_layer(kind: str, init_gain: float = 0.02) -> ModuleDef:
    """The official `get_norm_layer(norm)`: a module definition called as `norm(name=...)(x, train)`."""
    if kind == "instance":
        return InstanceNorm
    if kind == "batch":
        return functools.partial(BatchNorm, init_gain=init_gain)
    if kind == "none":
        return NoNorm
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def conv_bias(norm: str) -> bool:
    """The official `use_bias`: convolutions carry a bias only before instance norm.

    (With norm='none' the official code also drops the bias; we keep that quirk.)
    """
    return norm == "instance"
