"""Run in a subprocess with ONEDNN_VERBOSE=1: one convolution forward and backward through
cyclejax's oneDNN and one through torch's (its own oneDNN build), then torch's kernel level."""
import jax
import jax.numpy as jnp
import torch

from cyclejax import onednn

x = jnp.ones((1, 16, 16, 16), jnp.float32)
k = jnp.ones((3, 3, 16, 16), jnp.float32) / 100
jax.block_until_ready(jax.grad(lambda x, k: jnp.sum(onednn.conv2d(x, k, 1, (1, 1))), argnums=(0, 1))(x, k))
t = torch.randn(1, 64, 64, 64, requires_grad=True)
torch.nn.functional.conv2d(t, torch.randn(64, 64, 3, 3, requires_grad=True), padding=1).sum().backward()
print("torch capability:", torch.backends.cpu.get_cpu_capability(), flush=True)
