"""oneDNN's CPU convolutions, the kernels torch's CPU convolutions run, as XLA custom calls.

XLA:CPU's own convolutions, and their backward passes above all, ran at half torch's speed
on the 2-core AMD EPYC where the project is measured (experiments/bench/README.md). The
C++ in `cyclejax/csrc/onednn_conv.cc` (built by `pip install` into `cyclejax/_onednn_conv*.so`
where a C++ compiler exists, see setup.py) runs oneDNN's forward, backward-data and
backward-weights convolution primitives on JAX's NHWC/HWIO arrays; `conv2d` wires them
together with `jax.custom_vjp`, and `conv_transpose` is the backward-data one. It is optional: without the extension or the
`onednn-cpu-gomp` runtime, `conv_impl='auto'` falls back to the pure-JAX forms.

oneDNN threads with OpenMP (GNU libgomp), one team per calling thread, as many threads as
`OMP_NUM_THREADS` or the cores. XLA:CPU runs independent operations concurrently; the
handlers let one convolution of 20 MFLOP or more run at a time (two OpenMP teams as wide
as the machine slowed each other down: the reasons and numbers are in
`cyclejax/csrc/onednn_conv.cc`), smaller ones run beside it. Float32 and bfloat16
(oneDNN's avx512_core_bf16 and AMX kernels where the CPU has them; accumulation in
float32). A bfloat16 convolution takes its
kernel in float32 or bfloat16: a float32 kernel (a parameter, as the networks pass it) is
rounded to bfloat16 when it is packed, and its gradient comes back in float32 as oneDNN's
accumulator holds it, not rounded to bfloat16 on the way to the float32 parameter.

Several devices: XLA cannot split a custom call, so each one runs per device inside
`jax.shard_map` over the `data` axis of the mesh in context while the step is traced
(`train_step.jit_train_step` sets it): the forward and backward-data calls on the device's
rows of the batch, the backward-weights call on them too with its kernel gradient summed
over the devices. Without that mesh (a network applied outside the train step), or where
the devices do not divide the batch, XLA runs the call on the whole, gathered batch: the
same results with redundant work.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from cyclejax.parallel import DATA_AXIS

RUNTIME = "onednn-cpu-gomp"  # the PyPI distribution that holds libdnnl.so.3 (GNU OpenMP build)
_TARGETS = {  # FFI target name -> symbol in the extension
    "cyclejax_onednn_conv_forward": "CyclejaxConvForward",
    "cyclejax_onednn_conv_backward_data": "CyclejaxConvBackwardData",
    "cyclejax_onednn_conv_backward_weights": "CyclejaxConvBackwardWeights",
    "cyclejax_onednn_conv_pack": "CyclejaxConvPack",
}
_FORWARD, _BACKWARD_DATA = 0, 1  # the primitive kinds a kernel is packed for


def _extension_path() -> Path | None:
    spec = importlib.util.find_spec("cyclejax._onednn_conv")
    return Path(spec.origin) if spec is not None and spec.origin else None


def _runtime_library() -> Path | None:
    """libdnnl.so.3 from the onednn-cpu-gomp wheel (installed under the environment's lib/)."""
    try:
        files = importlib.metadata.distribution(RUNTIME).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libdnnl.so.3":
            return Path(f.locate()).resolve()
    return None


_library: ctypes.CDLL | None = None


@functools.cache
def _load() -> str | None:
    """Loads the extension and registers its handlers with XLA once; None if that worked,
    else why it did not (a sentence for error messages)."""
    global _library
    extension = _extension_path()
    if extension is None:
        return ("the oneDNN extension (cyclejax/_onednn_conv*.so) is not built: reinstall with a C++ "
                "compiler present (`pip install -e .` on Linux x86-64 builds it)")
    runtime = _runtime_library()
    try:
        if runtime is not None:
            # The extension needs libdnnl.so.3 by name; loading it first, globally, lets the
            # dynamic linker find it outside the library path.
            ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(str(extension))
    except OSError as e:
        return f"the oneDNN extension {extension} did not load ({e}); `pip install {RUNTIME}` provides libdnnl.so.3"
    for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    shape = ctypes.POINTER(ctypes.c_int64)
    library.CyclejaxConvPackedBytes.argtypes = (ctypes.c_int64, ctypes.c_int64, shape, shape, shape,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    library.CyclejaxConvPackedBytes.restype = ctypes.c_int64
    library.CyclejaxConvPeakConcurrency.argtypes = (ctypes.c_int64,)
    library.CyclejaxConvPeakConcurrency.restype = ctypes.c_int64
    library.CyclejaxConvSerialMflop.argtypes = ()
    library.CyclejaxConvSerialMflop.restype = ctypes.c_double
    _library = library
    return None


def available() -> bool:
    """Whether oneDNN's convolutions can run in this process."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True)."""
    return _load()


# Convolutions asked of oneDNN to learn whether it computes a dtype on this CPU: a generator's
# first layer (7x7 from 3 channels), a ResNet block's layer, a strided discriminator layer.
_PROBES = (((1, 14, 14, 3), (7, 7, 3, 16), (1, 8, 8, 16), 1, (0, 0)),
           ((1, 8, 8, 16), (3, 3, 16, 16), (1, 8, 8, 16), 1, (1, 1)),
           ((1, 8, 8, 16), (4, 4, 16, 32), (1, 4, 4, 32), 2, (1, 1)))
_KINDS = (0, 1, 2)  # forward, backward-data, backward-weights
AVX512_CORE = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})  # oneDNN's avx512_core


@functools.cache
def supports(dtype) -> bool:
    """Whether oneDNN computes convolutions with `dtype` operands on this CPU, decided once per
    process by asking it for the primitives of a few of the networks' layers, every kind.

    float32: wherever the extension loads. bfloat16: where oneDNN 2023.2 has bfloat16 kernels for
    the CPU, from avx512_core up (emulated there; native with avx512_bf16 or AMX: Zen 4,
    Cooper Lake, Sapphire Rapids); not on AVX2-only CPUs (Zen 3, Haswell to Alder Lake), nor
    under ONEDNN_MAX_CPU_ISA=AVX2. Other dtypes: never.
    """
    dtype = jnp.dtype(dtype)
    if not available() or dtype not in (jnp.float32, jnp.bfloat16):
        return False
    for x, k, y, stride, padding in _PROBES:
        arrays = [(ctypes.c_int64 * 4)(*s) for s in (x, k, y)]
        for kind in _KINDS:
            if _library.CyclejaxConvPackedBytes(kind, dtype == jnp.bfloat16, *arrays, stride, *padding) < 0:
                return False
    return True


def unsupported_reason(dtype) -> str:
    """Why `supports(dtype)` is False: a sentence naming the CPU's missing feature."""
    dtype = jnp.dtype(dtype)
    if not available():
        return unavailable_reason()
    if dtype not in (jnp.float32, jnp.bfloat16):
        return f"oneDNN's convolutions take float32 or bfloat16, not {dtype}"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap and AVX512_CORE <= cpu_flags():
        return (f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below avx512_core, the least instruction set its "
                f"bfloat16 convolutions need")
    missing = " ".join(sorted(AVX512_CORE - cpu_flags()))
    return (f"this CPU lacks AVX-512 ({missing} not in /proc/cpuinfo's flags), which oneDNN's bfloat16 "
            f"convolutions need (avx512_core at least; avx512_bf16 or AMX to run them at speed)")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def peak_concurrency(reset: bool = False) -> int:
    """The most convolution calls that ran at once since the last reset (`reset` starts anew)."""
    _require()
    return int(_library.CyclejaxConvPeakConcurrency(int(reset)))


def serial_limit_mflop() -> float:
    """The size (MFLOP) from which a convolution waits for the others to finish; negative: none
    waits (`CYCLEJAX_ONEDNN_SERIAL_MFLOP`, default 20)."""
    _require()
    return float(_library.CyclejaxConvSerialMflop())


def largest_mflop(fn: Callable[..., Any], *args: Any) -> float:
    """The largest of the convolutions `fn(*args)` calls, in MFLOP (0 if none), traced
    abstractly (`args` may be `jax.ShapeDtypeStruct`s).

    Forward, backward-data and backward-weights calls of one convolution do the same number
    of products, so the forward pass tells the size of the backward one's calls too.
    """
    global _traced
    outer, _traced = _traced, []
    try:
        jax.eval_shape(fn, *args)
        return max(_traced, default=0.0)
    finally:
        _traced = outer


_traced: list[float] | None = None  # MFLOP of the calls traced inside `largest_mflop`


def _require() -> None:
    reason = _load()
    if reason is not None:
        raise RuntimeError(f"conv_impl='onednn' cannot run: {reason}")


def _shards(batch: int) -> int:
    """How many devices split a batch of `batch` rows where the step is being traced: the size
    of the `data` axis of the mesh in context, or 1 (no such mesh, or it does not divide)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    devices = mesh.shape[DATA_AXIS]
    return devices if batch % devices == 0 else 1


def _rows(shape: tuple[int, ...], shards: int) -> tuple[int, ...]:
    """One device's part of an NHWC `shape` split `shards` ways along the batch."""
    return (shape[0] // shards, *shape[1:])


def _call(target: str, shape: tuple[int, ...], a: jax.Array, b: jax.Array, stride: int,
          padding: tuple[int, int], kernel_shape: tuple[int, ...], packed: bool = False,
          shards: int = 1) -> jax.Array:
    """One custom call: operands of one dtype (float32 or bfloat16), a float32 result of
    `shape`; with `packed`, `b` is a kernel of HWIO shape `kernel_shape` packed by `_pack`.
    With `shards` > 1 it runs per device (`_shards`): the batch's rows of `a` (and of `b` for
    backward-weights, whose per-device kernel gradients are summed); a packed `b` whole."""
    _require()  # registers the handlers before XLA compiles a call to them
    weights = target == "cyclejax_onednn_conv_backward_weights"
    if _traced is not None:
        # 2 * (output elements) * kh * kw * in channels, as the handler counts it.
        y_shape = shape if target == "cyclejax_onednn_conv_forward" else (a.shape if not weights else b.shape)
        _traced.append(2.0 * np.prod(_rows(y_shape, shards)) * np.prod(kernel_shape[:3]) / 1e6)

    def call(a, b):
        out = shape if weights else _rows(shape, shards)
        y = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out, jnp.float32))(
            a, b, stride=np.int64(stride), pad_top=np.int64(padding[0]), pad_left=np.int64(padding[1]),
            kernel=np.asarray(kernel_shape, np.int64), packed=np.int64(packed))
        return jax.lax.psum(y, DATA_AXIS) if weights and shards > 1 else y

    if shards == 1:
        return call(a, b)
    return jax.shard_map(call, mesh=jax.sharding.get_abstract_mesh(),
                         in_specs=(P(DATA_AXIS), P(DATA_AXIS) if weights else P()),
                         out_specs=P() if weights else P(DATA_AXIS))(a, b)


@functools.cache
def _packed_size(kind: int, dtype: str, x_shape, kernel_shape, y_shape, stride: int, padding) -> int:
    """Elements of `kernel_shape` packed for that primitive (oneDNN's layout may pad channels)."""
    arrays = [(ctypes.c_int64 * 4)(*s) for s in (x_shape, kernel_shape, y_shape)]
    nbytes = _library.CyclejaxConvPackedBytes(kind, dtype == "bfloat16", *arrays, stride, *padding)
    if nbytes < 0:
        why = "" if supports(dtype) else f" ({unsupported_reason(dtype)})"
        raise RuntimeError(f"oneDNN has no {dtype} convolution for x {x_shape}, kernel {kernel_shape}, "
                           f"stride {stride}{why}")
    return nbytes // jnp.dtype(dtype).itemsize


def _pack(kernel: jax.Array, kind: int, x_shape, y_shape, stride: int, padding, dtype) -> jax.Array:
    """`kernel` (HWIO) reordered into the layout oneDNN's forward or backward-data primitive for
    this convolution wants (`x_shape` -> `y_shape`, NHWC), as a flat array in the primitive's
    operand `dtype` (a float32 kernel is rounded to bfloat16 here when `dtype` is bfloat16).

    A step applies each generator three times with the same kernels: XLA merges the identical
    packs, so each kernel is reordered once per step and direction instead of at every call
    (torch reorders at every call). Not differentiable: used inside the custom VJPs only.
    """
    _require()
    dtype = jnp.dtype(dtype)
    size = _packed_size(kind, str(dtype), tuple(x_shape), tuple(kernel.shape), tuple(y_shape), stride,
                        tuple(padding))
    return jax.ffi.ffi_call("cyclejax_onednn_conv_pack", jax.ShapeDtypeStruct((size,), dtype))(
        kernel, kind=np.int64(kind), stride=np.int64(stride), pad_top=np.int64(padding[0]),
        pad_left=np.int64(padding[1]), x_shape=np.asarray(x_shape, np.int64), y_shape=np.asarray(y_shape, np.int64))


# The three convolutions are bilinear and each one's gradient is made of the other two:
# <forward(x, k), dy> = <x, backward_data(dy, k)> = <k, backward_weights(x, dy)>. Writing
# every gradient with them makes the custom calls differentiable to any order (WGAN-GP's
# penalty differentiates a gradient). `geometry` is (stride, top/left padding, output size).
# Each returns float32 (oneDNN accumulates in float32; a bfloat16 network's norms then read
# float32 as torch.autocast's do); cotangents go back in their primal's dtype. Activations and
# their cotangents are in the convolution's dtype; a kernel may be float32 in a bfloat16
# convolution (packed rounded, its cotangent float32).


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _forward(x: jax.Array, kernel: jax.Array, geometry) -> jax.Array:
    stride, padding, out_size = geometry
    out = (x.shape[0], *out_size, kernel.shape[-1])
    shards = _shards(x.shape[0])
    packed = _pack(kernel, _FORWARD, _rows(x.shape, shards), _rows(out, shards), stride, padding, x.dtype)
    return _call("cyclejax_onednn_conv_forward", out, x, packed, stride, padding, kernel.shape, packed=True,
                 shards=shards)


def _forward_fwd(x, kernel, geometry):
    return _forward(x, kernel, geometry), (x, kernel)


def _forward_bwd(geometry, saved, dy):
    x, kernel = saved
    dy = dy.astype(x.dtype)
    return (_backward_data(dy, kernel, geometry, x.shape).astype(x.dtype),
            _backward_weights(x, dy, geometry, kernel.shape).astype(kernel.dtype))


_forward.defvjp(_forward_fwd, _forward_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _backward_data(dy: jax.Array, kernel: jax.Array, geometry, x_shape: tuple[int, ...]) -> jax.Array:
    stride, padding, _ = geometry
    shards = _shards(dy.shape[0])
    packed = _pack(kernel, _BACKWARD_DATA, _rows(x_shape, shards), _rows(dy.shape, shards), stride, padding,
                   dy.dtype)
    return _call("cyclejax_onednn_conv_backward_data", x_shape, dy, packed, stride, padding, kernel.shape,
                 packed=True, shards=shards)


def _backward_data_fwd(dy, kernel, geometry, x_shape):
    return _backward_data(dy, kernel, geometry, x_shape), (dy, kernel)


def _backward_data_bwd(geometry, x_shape, saved, ddx):
    dy, kernel = saved
    ddx = ddx.astype(dy.dtype)
    return (_forward(ddx, kernel, geometry).astype(dy.dtype),
            _backward_weights(ddx, dy, geometry, kernel.shape).astype(kernel.dtype))


_backward_data.defvjp(_backward_data_fwd, _backward_data_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _backward_weights(x: jax.Array, dy: jax.Array, geometry, kernel_shape: tuple[int, ...]) -> jax.Array:
    stride, padding, _ = geometry
    return _call("cyclejax_onednn_conv_backward_weights", kernel_shape, x, dy, stride, padding, kernel_shape,
                 shards=_shards(x.shape[0]))


def _backward_weights_fwd(x, dy, geometry, kernel_shape):
    return _backward_weights(x, dy, geometry, kernel_shape), (x, dy)


def _backward_weights_bwd(geometry, kernel_shape, saved, ddk):
    x, dy = saved
    return (_backward_data(dy, ddk, geometry, x.shape).astype(x.dtype),
            _forward(x, ddk, geometry).astype(dy.dtype))


_backward_weights.defvjp(_backward_weights_fwd, _backward_weights_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int]) -> jax.Array:
    """`F.conv2d` without bias: NHWC `x`, (kh, kw, in, out) `kernel`, zero `padding` (h, w),
    x in float32 or bfloat16, the kernel in x's dtype or float32 (see the module docstring);
    the result is float32."""
    _require()
    if x.dtype not in (jnp.float32, jnp.bfloat16) or kernel.dtype not in (x.dtype, jnp.float32):
        raise TypeError(f"oneDNN convolutions take float32 or bfloat16 inputs and a kernel of their dtype or "
                        f"float32, got {x.dtype} and {kernel.dtype}")
    kh, kw = kernel.shape[:2]
    ph, pw = padding
    # Rows and columns that no window reaches (a stride that does not divide the size) are
    # cut here, so oneDNN sees the exact fit it expects.
    n, h, w, _ = x.shape
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(f"a {kh}x{kw} convolution needs an input of at least that size, got {h}x{w} "
                         f"with padding {padding}")
    oh, ow = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
    used_h, used_w = (oh - 1) * stride + kh - ph, (ow - 1) * stride + kw - pw
    if used_h < h or used_w < w:
        x = x[:, :min(h, used_h), :min(w, used_w)]
    return _forward(x, kernel, (stride, (ph, pw), (oh, ow)))


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int, padding: int, output_padding: int) -> jax.Array:
    """`F.conv_transpose2d` without bias: NHWC `x`, `kernel` (kh, kw, in, out) (torch's weight
    (in, out, kh, kw) transposed), for `output_padding <= padding`.

    A transposed convolution is the input gradient of the convolution it transposes, so it
    runs as oneDNN's backward-data primitive (torch's deconvolution does the same work):
    about half the products of the sub-pixel form, whose stride-1 kernel is mostly zeros.
    The result is float32.
    """
    _require()
    if not 0 <= output_padding <= padding:
        raise ValueError(f"oneDNN's transposed convolution needs 0 <= output_padding <= padding, got "
                         f"output_padding={output_padding}, padding={padding}")
    n, h, w, _ = x.shape
    kh, kw, _, out = kernel.shape
    size = ((h - 1) * stride - 2 * padding + kh + output_padding, (w - 1) * stride - 2 * padding + kw + output_padding)
    # The convolution it transposes maps `size` back to (h, w), with the kernel's in and out swapped.
    return _backward_data(x, kernel.transpose(0, 1, 3, 2), (stride, (padding, padding), (h, w)), (n, *size, out))
