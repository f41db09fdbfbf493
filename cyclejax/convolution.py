"""The 2-D convolution every network uses: oneDNN's, XLA's, or the same function as matrix products
or by Winograd's F(2x2, 3x3).

`conv_impl` (a config key) chooses, per layer (`form`):

- `onednn`: oneDNN's CPU convolution primitives, the kernels torch's CPU convolutions
  run, as XLA custom calls (`cyclejax.onednn`; an extension `pip install` builds where a
  C++ compiler exists). CPU only. Measured on the 2-core AMD EPYC (experiments/bench/
  README.md), a 3x3 256->256 convolution at 64x64 ran forward and backward at 447 GFLOP/s
  this way, 315 with XLA's convolution, 400 in torch.
- `xla`: `lax.conv_general_dilated` everywhere. The fast path on GPUs (cuDNN) and TPUs,
  which is what `auto` takes there.
- `matmul`: matrix products for every stride-1 layer with at least 16 input channels.
- `winograd`: Winograd's F(2x2, 3x3) (`winograd`, 16 products per 2x2 output tile and
  channel pair instead of 36) for the stride-1 3x3 layers with at least 16 channels each
  way (the ResNet blocks'), and what `auto` would take for the others.
- `auto`: on GPU and TPU `xla`; on CPU `onednn` where the extension loads (where its
  kernels are AVX2's, `avx2_only`, with Winograd's form for the 3x3 layers of
  WINOGRAD_AUTO_MFLOP or more: 'onednn_winograd'), else the mixed
  form: matrix products only for the stride-1 layers
  with fewer than 16 output channels (the generator's 7x7 output layer, the PatchGAN's
  last layer), XLA's convolution elsewhere. XLA:CPU runs the 7x7 64->3 output layer
  forward at about 6 GFLOP/s; its product form at about 165.

The product form of a stride-1 convolution over an (N, H, W, C) input treats the image as
one long row of pixels, `x_flat` (N*H*W, C): the output pixel at flat position p receives
`x_flat[p + i*W + j] @ kernel[i, j]` from tap (i, j). Every tap is then a contiguous slice
of `x_flat` (no strided gather, no im2col copy) and one dense product; positions whose
window runs past the right or bottom edge are computed too and cut off at the end (a few
percent more work: W/(W-kw+1)). Two orders of the same sums:

- `taps_in`: the sum over taps of `slice(x_flat) @ kernel[i, j]`, a loop with one float32
  accumulator, and a backward pass written the same way (only x and the kernel are kept);
- `taps_out`: one product `x_flat @ kernel` to all kh*kw*O tap outputs, then the sum of
  their shifted slices (for few output channels, where `taps_in` would run products with
  3 columns that no matmul kernel runs fast).

Under `matmul` and the mixed `auto`, strided layers and layers with fewer than 16 input
channels (the 3-channel image input) keep XLA's convolution: XLA:CPU ran those as fast as
or faster than the product forms we tried (space-to-depth, im2col, per-tap slices), and
padding the 3 input channels to 4, 8 or 16 only made them slower. In bfloat16 the products take bfloat16
operands and sum in float32, as XLA's convolution does; in float64 everything is float64.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cyclejax import onednn

IMPLS = ("auto", "xla", "matmul", "onednn", "winograd")
MIN_MATMUL_CHANNELS = 16  # fewer input channels: XLA's convolution; fewer output channels: taps_out
MIN_WINOGRAD_CHANNELS = 16  # 3x3 stride-1 layers with fewer input or output channels: not Winograd's
# Under 'auto' with oneDNN's AVX2 kernels, Winograd's form for the 3x3 layers whose forward pass
# is this many MFLOP or more. Forward and both gradients, with the instruction set capped to
# AVX2 on the 2-core AMD EPYC, oneDNN's time over Winograd's (experiments/bench/README.md): 256
# channels at 32x32 (1,208 MFLOP, the paper's ResNet blocks at 128x128) 1.57; 128 at 32x32 and
# 64 at 64x64 (302) 1.03 and 1.01; 256 at 16x16 (302) 0.94; 64 at 32x32 (75) 0.87; 64 at 16x16
# (19, the quick-start model's) 0.61.
WINOGRAD_AUTO_MFLOP = 600.0


def resolve(impl: str, backend: str | None = None, dtype=None) -> str:
    """The implementation `impl` names on `backend` (default: JAX's) for networks computing in
    `dtype` (default float32): 'xla', 'matmul', 'onednn', 'winograd', 'onednn_winograd' or
    'auto' for the mixed CPU form (the last two a choice per layer, see `form`).

    'auto' is 'xla' on GPU and TPU; on CPU 'onednn' where the extension loads ('onednn_winograd'
    where its kernels are AVX2's: `form` takes Winograd's for the large 3x3 layers; in bfloat16 on
    a CPU whose oneDNN has no bfloat16 convolutions, oneDNN's float32 ones on the same
    bfloat16 operands: `onednn_operands`), else the mixed form; in float64, which oneDNN
    does not compute, 'xla'. An explicit 'onednn' that cannot run is an error here, when the
    model is built, with the reason.
    """
    if impl not in IMPLS:
        raise ValueError(f"conv_impl must be one of {IMPLS}, got {impl!r}")
    backend = backend or jax.default_backend()
    dtype = jnp.dtype(dtype or jnp.float32)
    if impl == "onednn":
        if backend != "cpu":
            raise ValueError(f"conv_impl='onednn' runs on CPU only; this process computes on {backend} "
                             "(use 'auto' or 'xla')")
        if not onednn.available():
            raise RuntimeError(f"conv_impl='onednn' cannot run: {onednn.unavailable_reason()}; "
                               "conv_impl='auto' falls back to the pure-JAX convolutions")
        if dtype not in (jnp.float32, jnp.bfloat16):
            raise ValueError(f"conv_impl='onednn' computes in float32 or bfloat16, not {dtype}; "
                             "use conv_impl='xla' or 'matmul' (or 'auto')")
        if not onednn.supports(dtype):
            raise RuntimeError(f"conv_impl='onednn' cannot run in {dtype}: {onednn.unsupported_reason(dtype)}; "
                               "conv_impl='auto' runs oneDNN's float32 convolutions on the bfloat16 operands")
    if impl == "auto":
        if backend != "cpu":
            return "xla"
        if dtype == jnp.float64:
            return "xla"
        if onednn.available():
            return "onednn_winograd" if avx2_only() else "onednn"
    return impl


def avx2_only() -> bool:
    """Whether this process's oneDNN runs AVX2 kernels (no avx512_core: an AVX2-only CPU such
    as AMD Zen 3, or ONEDNN_MAX_CPU_ISA=AVX2), decided once per process: there 'auto' takes
    Winograd's form for the large 3x3 layers, where oneDNN's direct AVX2 convolutions are
    slower (`winograd`, WINOGRAD_AUTO_MFLOP). oneDNN 2023.2 has bfloat16 convolutions from
    avx512_core up, so their absence is the test (`onednn.supports`)."""
    return onednn.available() and not onednn.supports(jnp.bfloat16)


def _without_winograd(backend: str | None, dtype) -> str:
    """What 'winograd' computes the layers Winograd's form does not take with: oneDNN where it
    runs the dtype, else what 'auto' takes."""
    backend = backend or jax.default_backend()
    if backend == "cpu" and onednn.available() and jnp.dtype(dtype or jnp.float32) in (jnp.float32, jnp.bfloat16):
        return "onednn"
    return "xla" if backend != "cpu" or jnp.dtype(dtype or jnp.float32) == jnp.float64 else "auto"


def describe(impl: str, dtype=None, backend: str | None = None) -> str:
    """Which convolutions a model computing in `dtype` runs with `impl`, and why, for the logs."""
    resolved = resolve(impl, backend, dtype)
    if resolved == "winograd":
        rest = _describe(_without_winograd(backend, dtype), dtype)
        return f"Winograd's F(2x2, 3x3) for the 3x3 layers; elsewhere {rest}"
    if resolved == "onednn_winograd":
        return (f"{_describe('onednn', dtype)}; Winograd's F(2x2, 3x3) for the 3x3 layers of "
                f"{WINOGRAD_AUTO_MFLOP:.0f} MFLOP or more (oneDNN runs AVX2 kernels here)")
    return _describe(resolved, dtype)


def _describe(resolved: str, dtype) -> str:
    if resolved == "onednn":
        if jnp.dtype(dtype or jnp.float32) == jnp.bfloat16 and not onednn.supports(jnp.bfloat16):
            return f"oneDNN's, float32 kernels on the bfloat16 operands ({onednn.unsupported_reason(jnp.bfloat16)})"
        return "oneDNN's"
    if resolved == "auto":
        return (f"XLA's, and matrix products for layers with few output channels (no oneDNN: "
                f"{onednn.unavailable_reason()})")
    return {"xla": "XLA's", "matmul": "matrix products (XLA's for strided and 3-channel layers)"}[resolved]


def form(impl: str, stride: int, in_channels: int, out_channels: int, backend: str | None = None,
         dtype=None, kernel_size: int | None = None, mflop: float = 0.0) -> str:
    """How one layer (a `kernel_size` square kernel, `mflop` in its forward pass on one device)
    is computed: 'onednn', 'xla', 'winograd', 'taps_in' or 'taps_out'.

    'winograd' takes Winograd's form for the stride-1 3x3 layers with at least
    MIN_WINOGRAD_CHANNELS input and output channels (a ResNet block's), and for the others
    oneDNN's convolution where it runs (else what 'auto' takes); 'onednn_winograd' ('auto'
    where oneDNN's kernels are AVX2's) the same for those of WINOGRAD_AUTO_MFLOP or more,
    oneDNN's for the rest.

    'onednn' takes oneDNN's convolution for every layer. 'matmul' takes matrix products for
    every stride-1 layer with at least 16 input channels; the mixed 'auto' (CPU without
    oneDNN) only for those with fewer than 16 output channels (the generator's 7x7 output
    layer, the PatchGAN's last layer), where XLA:CPU's convolution is slowest. In the whole
    train step that mixed form measured faster than 'matmul' at 128² and 8 % slower at
    256², with 28 % less memory there (experiments/bench/README.md).
    """
    # A model passes the implementation `resolve` chose when it was built (and checked there);
    # only 'auto' is decided here, per layer.
    if impl == "auto" or impl not in IMPLS + ("onednn_winograd",):
        impl = resolve(impl, backend, dtype)
    if impl == "onednn_winograd":
        impl = "winograd" if mflop >= WINOGRAD_AUTO_MFLOP else "onednn"
    if impl == "winograd":
        if kernel_size == 3 and stride == 1 and min(in_channels, out_channels) >= MIN_WINOGRAD_CHANNELS:
            return "winograd"
        impl = _without_winograd(backend, dtype)  # 'auto' here is the mixed form, handled below
    if impl == "onednn":
        return "onednn"
    if impl == "xla" or stride != 1 or in_channels < MIN_MATMUL_CHANNELS:
        return "xla"
    if out_channels < MIN_MATMUL_CHANNELS:
        return "taps_out"
    return "taps_in" if impl == "matmul" else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: tuple[int, int] = (0, 0),
           impl: str = "auto", dtype=None) -> jax.Array:
    """`F.conv2d` without bias, NHWC input and (kh, kw, in, out) kernel, zero `padding` (h, w).

    The convolution runs in `dtype` (default: x's), x cast to it. A float32 kernel (a
    parameter) in a bfloat16 convolution is rounded to bfloat16; oneDNN rounds it inside its
    custom call, so that the kernel's gradient reaches the parameter in float32
    (`cyclejax.onednn`).
    """
    ph, pw = padding
    kh, kw, c, o = kernel.shape
    dtype = jnp.dtype(dtype or x.dtype)
    n, h, w, _ = x.shape
    n //= onednn._shards(n)  # one device's rows where the batch is split over a mesh
    mflop = 2e-6 * n * ((h + 2 * ph - kh) // stride + 1) * ((w + 2 * pw - kw) // stride + 1) * kh * kw * c * o
    how = form(impl, stride, c, o, dtype=dtype, kernel_size=kh if kh == kw else None, mflop=mflop)
    if how == "onednn":
        return onednn.conv2d(*onednn_operands(x, kernel, dtype), stride, padding)
    if how == "winograd":
        if dtype == jnp.bfloat16:  # float32 on bfloat16's values, returning float32, as oneDNN's here
            x, kernel = _rounded_activation(x.astype(jnp.float32)), _rounded_kernel(kernel.astype(jnp.float32))
        else:
            x, kernel = x.astype(dtype), kernel.astype(dtype)
        return winograd(jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))), kernel)
    x = x.astype(dtype)
    kernel = kernel.astype(dtype)
    if how == "xla":
        return lax.conv_general_dilated(x, kernel, (stride, stride), ((ph, ph), (pw, pw)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, h, w, _ = x.shape
    if h < kh or w < kw:
        raise ValueError(f"a {kh}x{kw} convolution needs an input of at least that size, got {h}x{w}")
    y = _taps_in(x, kernel) if how == "taps_in" else _taps_out(x, kernel)
    return y.reshape(n, h, w, o)[:, : h - kh + 1, : w - kw + 1]


def onednn_operands(x: jax.Array, kernel: jax.Array, dtype=None) -> tuple[jax.Array, jax.Array]:
    """(x, kernel) as oneDNN takes them on this CPU for a convolution in `dtype` (default x's).

    bfloat16 where its oneDNN has no bfloat16 convolutions (an AVX2-only CPU: `onednn.supports`,
    decided once per process): both stay float32, rounded to bfloat16's values, so that oneDNN's
    float32 convolution computes what its bfloat16 one would (products of bfloat16 values are
    exact in float32, sums in float32). x's gradient is rounded the same way (it comes back
    in bfloat16 there), the kernel's is not (float32 there). Rounding in float32 rather than
    casting to bfloat16 and back lets XLA fuse it into the operation that made x: the cast
    pair cost a memory pass per convolution and direction (the bfloat16 step ran 6 % slower
    than the float32 one at 128x128 on the AVX2-capped Zen 4).
    """
    dtype = jnp.dtype(dtype or x.dtype)
    if dtype != jnp.bfloat16 or onednn.supports(jnp.bfloat16):
        return x.astype(dtype), kernel
    return _rounded_activation(x.astype(jnp.float32)), _rounded_kernel(kernel.astype(jnp.float32))


def _round(x: jax.Array) -> jax.Array:
    """x rounded to bfloat16's values, in x's dtype."""
    return x.astype(jnp.bfloat16).astype(x.dtype)


@jax.custom_vjp
def _rounded_kernel(k: jax.Array) -> jax.Array:
    """k rounded to bfloat16; its gradient passes unrounded (as oneDNN's bfloat16 convolution
    returns a float32 kernel's gradient)."""
    return _round(k)


_rounded_kernel.defvjp(lambda k: (_round(k), None), lambda _, g: (g,))


@jax.custom_vjp
def _rounded_activation(x: jax.Array) -> jax.Array:
    """x rounded to bfloat16; its gradient rounded too (a bfloat16 activation's gradient is bfloat16)."""
    return _round(x)


_rounded_activation.defvjp(lambda x: (_round(x), None), lambda _, g: (_round(g),))


def _offsets(kh: int, kw: int, w: int) -> list[int]:
    """Where tap (i, j) reads, relative to the output pixel, in the flattened image."""
    return [i * w + j for i in range(kh) for j in range(kw)]


def _flat(x: jax.Array, extra: int) -> jax.Array:
    """(N, H, W, C) -> (N*H*W + extra, C): the pixels in a row, `extra` zero rows after them."""
    return jnp.pad(x.reshape(-1, x.shape[-1]), ((0, extra), (0, 0)))


def _sum_of_taps(rows: jax.Array, taps: jax.Array, offsets: list[int], pixels: int) -> jax.Array:
    """sum_t rows[off_t : off_t + pixels] @ taps[t] in float32, one tap after another.

    A loop, not nine independent products: XLA:CPU would otherwise keep every tap's slice
    and product alive at once (measured: 4x the generator's temporary memory).
    """
    acc_dtype = jnp.promote_types(rows.dtype, jnp.float32)  # float64 in a float64 network

    def add_tap(acc, tap):
        off, weights = tap
        return acc + jnp.dot(lax.dynamic_slice_in_dim(rows, off, pixels), weights,
                             preferred_element_type=acc_dtype), None

    start = jnp.zeros((pixels, taps.shape[-1]), acc_dtype)
    return lax.scan(add_tap, start, (jnp.asarray(offsets, jnp.int32), taps))[0]


@jax.custom_vjp
def _taps_in(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(N*H*W, O): output pixel p = sum over taps of x_flat[p + off_t] @ kernel[t]."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    offsets = _offsets(kh, kw, w)
    y = _sum_of_taps(_flat(x, offsets[-1]), kernel.reshape(kh * kw, c, o), offsets, n * h * w)
    return y.astype(x.dtype)


def _taps_in_fwd(x, kernel):
    return _taps_in(x, kernel), (x, kernel)


def _taps_in_bwd(saved, dy):
    """The input gradient is the same sum with the taps reversed; the kernel gradient one
    product per tap. Only x and the kernel are kept from the forward pass."""
    x, kernel = saved
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    pixels = n * h * w
    offsets = _offsets(kh, kw, w)
    last = offsets[-1]
    # dy holds zeros at the positions cut off in the forward pass (reshape/slice's transpose).
    dx = _sum_of_taps(jnp.pad(dy, ((last, 0), (0, 0))), jnp.swapaxes(kernel.reshape(kh * kw, c, o), 1, 2),
                      [last - off for off in offsets], pixels)
    flat = _flat(x, last)

    def tap_gradient(_, off):
        return None, lax.dot_general(lax.dynamic_slice_in_dim(flat, off, pixels), dy, (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.promote_types(flat.dtype, jnp.float32))

    dk = lax.scan(tap_gradient, None, jnp.asarray(offsets, jnp.int32))[1]
    return dx.astype(x.dtype).reshape(x.shape), dk.reshape(kernel.shape).astype(kernel.dtype)


_taps_in.defvjp(_taps_in_fwd, _taps_in_bwd)


def _taps_out(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(N*H*W, O) for few output channels: one product to every tap's output, then the sum of
    their shifted slices (XLA:CPU runs a 64 -> 3 convolution at a few GFLOP/s)."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    offsets = _offsets(kh, kw, w)
    pixels = n * h * w
    z = jnp.dot(_flat(x, offsets[-1]), kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o),
                preferred_element_type=jnp.promote_types(x.dtype, jnp.float32)).reshape(-1, kh * kw, o)
    return sum(lax.slice_in_dim(z[:, t], off, off + pixels) for t, off in enumerate(offsets)).astype(x.dtype)


# Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
# Neural Networks", 2016): a 2x2 tile of a 3x3 convolution's output is A^T [(G g G^T) * (B^T d B)] A
# for the 4x4 input tile d around it, so the layer is 16 products (one per point of the 4x4
# transformed tile) of (tiles x in) by (in x out): 16 multiplications per tile and channel pair
# instead of 36. The transforms' entries are 0, +-1 and +-1/2: exact in any float format, so
# in float64 the form equals the direct convolution to float64 round-off.
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def _winograd_input(x: jax.Array) -> jax.Array:
    """(N, 2T+2, 2S+2, C) -> (16, N*T*S, C): B^T d B of every 4x4 tile d (stride 2)."""
    n, h, w, c = x.shape
    t, s = (h - 2) // 2, (w - 2) // 2
    blocks = x.reshape(n, t + 1, 2, s + 1, 2, c)  # a tile is 2x2 of these 2x2 blocks
    d = jnp.stack([jnp.stack([blocks[:, i:i + t, :, j:j + s] for j in range(2)]) for i in range(2)])
    d = d.transpose(0, 4, 1, 6, 2, 3, 5, 7).reshape(16, n * t * s * c)  # (tile row, tile column), the rest
    # One small product each way: XLA:CPU ran the same sums as an einsum over the kernel's
    # axes at 1/20 of this speed.
    return (jnp.asarray(np.kron(_WINOGRAD_BT, _WINOGRAD_BT), x.dtype) @ d).reshape(16, n * t * s, c)


def _winograd_kernel(kernel: jax.Array) -> jax.Array:
    """(3, 3, C, O) -> (16, C, O): G g G^T."""
    _, _, c, o = kernel.shape
    return (jnp.asarray(np.kron(_WINOGRAD_G, _WINOGRAD_G), kernel.dtype) @ kernel.reshape(9, c * o)).reshape(16, c, o)


def _winograd_output(m: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """(16, N*T*S, O) -> (N, 2T, 2S, O): A^T m A of every tile, the tiles in place."""
    n, t, s, o = shape
    y = (jnp.asarray(np.kron(_WINOGRAD_AT, _WINOGRAD_AT), m.dtype) @ m.reshape(16, -1)).reshape(2, 2, n, t, s, o)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * t, 2 * s, o)


def winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 3x3 convolution, no padding, NHWC input and HWIO kernel, by Winograd's F(2x2, 3x3).

    Measured on the 2-core AMD EPYC with the instruction set capped to AVX2 (3x3 256->256 at
    32x32, forward and both gradients): 9.8 ms against oneDNN's 15.1 (its AVX2 kernels); with
    AVX-512, 11.7 against 13.0 (experiments/bench/README.md). An odd output size is computed one
    row or column larger, on a zero row or column, and cut.
    """
    n, h, w, _ = x.shape
    ho, wo = h - 2, w - 2
    if ho < 1 or wo < 1:
        raise ValueError(f"a 3x3 convolution needs an input of at least that size, got {h}x{w}")
    x = jnp.pad(x, ((0, 0), (0, ho % 2), (0, wo % 2), (0, 0)))
    y = _winograd(x, kernel)
    return y[:, :ho, :wo] if (ho % 2 or wo % 2) else y


@jax.custom_vjp
def _winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    m = jnp.einsum("pnc,pco->pno", _winograd_input(x), _winograd_kernel(kernel))
    return _winograd_output(m, (n, (h - 2) // 2, (w - 2) // 2, kernel.shape[-1]))


def _winograd_fwd(x, kernel):
    return _winograd(x, kernel), (x, kernel)


def _winograd_bwd(saved, dy):
    """Both gradients in the transformed space; only x and the kernel are kept from the forward
    pass, and the transformed input is computed again here: it is 4x x's size (x made to
    depend on dy keeps XLA from reusing the forward pass's instead, which kept them all alive
    for the backward pass: 2.4 GB more at 256x256)."""
    x, kernel = saved
    x = x + 0 * dy[(0,) * dy.ndim]  # x again, but after dy (XLA:CPU drops optimisation barriers before its CSE)
    v, u = _winograd_input(x), _winograd_kernel(kernel)
    n, t, s, o = dy.shape[0], dy.shape[1] // 2, dy.shape[2] // 2, dy.shape[3]
    m = jax.ShapeDtypeStruct((16, n * t * s, o), dy.dtype)
    (dm,) = jax.linear_transpose(lambda m: _winograd_output(m, (n, t, s, o)), m)(dy)
    (dx,) = jax.linear_transpose(_winograd_input, x)(jnp.einsum("pno,pco->pnc", dm, u))
    (dk,) = jax.linear_transpose(_winograd_kernel, kernel)(jnp.einsum("pnc,pno->pco", v, dm))
    return dx, dk


_winograd.defvjp(_winograd_fwd, _winograd_bwd)
