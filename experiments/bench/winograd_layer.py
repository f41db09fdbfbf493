"""One 3x3 stride-1 layer, forward and both gradients (compiled, median of 40 calls): oneDNN's
convolution against Winograd's form (`cyclejax.convolution.winograd`), at the sizes that set
WINOGRAD_AUTO_MFLOP: `XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 python
experiments/bench/winograd_layer.py`."""
import sys, time, numpy as np, jax, jax.numpy as jnp
from cyclejax import convolution
def timeit(f, *a, reps=40):
    jax.block_until_ready(f(*a)); ts=[]
    for _ in range(reps):
        t=time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
rng = np.random.default_rng(0)
for C, hw in [(64, 16), (64, 32), (64, 64), (128, 16), (128, 32), (256, 16), (256, 32)]:
    x = jnp.asarray(rng.standard_normal((1, hw + 2, hw + 2, C)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, C, C)) * 0.05, jnp.float32)
    ct = jnp.asarray(rng.standard_normal((1, hw, hw, C)), jnp.float32)
    res = []
    for impl in ("onednn", "winograd"):
        f = lambda x, k, impl=impl: convolution.conv2d(x, k, impl=impl)
        both = jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * ct), argnums=(0, 1)))
        res.append(timeit(both, x, k))
    print(f"C={C} {hw}x{hw}: onednn {res[0]:.3f} ms, winograd {res[1]:.3f} ms, ratio {res[0]/res[1]:.2f}", flush=True)
