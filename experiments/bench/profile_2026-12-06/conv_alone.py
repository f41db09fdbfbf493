"""One ResNet-block convolution (3x3, 256 -> 256 channels, 34x34 -> 32x32) alone: `python conv_alone.py torch|jax`
(jax: cyclejax's oneDNN call; CYCLEJAX_ONEDNN_BLOCKED picks layouts). Median of 30 calls, ms."""
import os, sys, time, statistics
import numpy as np
which = sys.argv[1]
N = 30
def timeit(f):
    for _ in range(3): f()
    ts = []
    for _ in range(N):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3
x = np.random.default_rng(0).standard_normal((1, 34, 34, 256)).astype(np.float32)
k = (np.random.default_rng(1).standard_normal((3, 3, 256, 256)) * 0.05).astype(np.float32)
dy = np.random.default_rng(2).standard_normal((1, 32, 32, 256)).astype(np.float32)
if which == "torch":
    import torch
    torch.set_num_threads(2)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    kt = torch.tensor(k.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    dyt = torch.tensor(dy.transpose(0, 3, 1, 2).copy())
    def fwd():
        with torch.no_grad(): torch.nn.functional.conv2d(xt, kt)
    def both():
        y = torch.nn.functional.conv2d(xt, kt); gx, gk = torch.autograd.grad(y, (xt, kt), dyt)
    print(f"torch fwd {timeit(fwd):.2f} ms  fwd+bwd {timeit(both):.2f} ms")
else:
    import jax, jax.numpy as jnp
    from cyclejax import onednn
    from cyclejax import convolution
    conv = lambda x, k: convolution.conv2d(x, k, 1, (0, 0), impl="onednn")
    xj, kj, dyj = map(jnp.asarray, (x, k, dy))
    f = jax.jit(conv)
    g = jax.jit(lambda x, k, dy: jax.vjp(conv, x, k)[1](dy))
    gx = jax.jit(lambda x, k, dy: jax.vjp(lambda x: conv(x, k), x)[1](dy))
    gk = jax.jit(lambda x, k, dy: jax.vjp(lambda k: conv(x, k), k)[1](dy))
    r = lambda fn, *a: (lambda: jax.block_until_ready(fn(*a)))
    print(f"jax blocked={os.environ.get('CYCLEJAX_ONEDNN_BLOCKED')} fwd {timeit(r(f, xj, kj)):.2f} dx {timeit(r(gx, xj, kj, dyj)):.2f} dk {timeit(r(gk, xj, kj, dyj)):.2f} fwd+bwd {timeit(r(g, xj, kj, dyj)):.2f} ms")
