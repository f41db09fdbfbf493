"""The official CycleGAN losses: `GANLoss` in its three modes, the WGAN-GP penalty, and L1.

All reductions are means, as torch's default `reduction='mean'`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GAN_MODES = ("lsgan", "vanilla", "wgangp")
# The eight losses a train step reports, in the order the official code prints them.
METRICS = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")


def _full(x: jax.Array) -> jax.Array:
    """x in float32, or float64 where it is (a float64 network)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def gan_loss(prediction: jax.Array, target_is_real: bool, gan_mode: str = "lsgan") -> jax.Array:
    """`GANLoss(gan_mode)(prediction, target_is_real)` on discriminator logits."""
    prediction = _full(prediction)
    target = 1.0 if target_is_real else 0.0
    if gan_mode == "lsgan":
        return jnp.mean(jnp.square(prediction - target))
    if gan_mode == "vanilla":
        # BCEWithLogitsLoss: max(x, 0) - x * t + log(1 + exp(-|x|)).
        return jnp.mean(jnp.maximum(prediction, 0) - prediction * target + jnp.log1p(jnp.exp(-jnp.abs(prediction))))
    if gan_mode == "wgangp":
        return -jnp.mean(prediction) if target_is_real else jnp.mean(prediction)
    raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {gan_mode!r}")


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """`nn.L1Loss()`: the mean absolute difference over every element."""
    return jnp.mean(jnp.abs(_full(a) - _full(b)))


def gradient_penalty(
    discriminator: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    constant: float = 1.0,
    lambda_gp: float = 10.0,
) -> jax.Array:
    """The official `cal_gradient_penalty(type='mixed')`: λ·mean((‖∇D(x̂)‖₂ − c)²) on interpolates.

    x̂ = α·real + (1 − α)·fake with one α ~ U[0, 1) per sample; the gradient is that of
    sum(D(x̂)) (torch's `grad_outputs=ones`), its norm taken per sample over all pixels.
    """
    alpha = interpolation_weights(key, real.shape[0], real.dtype).reshape((-1,) + (1,) * (real.ndim - 1))
    interpolates = alpha * real + (1.0 - alpha) * fake
    grads = jax.grad(lambda x: jnp.sum(discriminator(x)))(interpolates)
    norms = jnp.linalg.norm(grads.reshape(grads.shape[0], -1) + 1e-16, axis=1)
    return lambda_gp * jnp.mean(jnp.square(norms - constant))


def interpolation_weights(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """The penalty's α, one per sample, U[0, 1) (float32, float64 for float64 images)."""
    return jax.random.uniform(key, (n,), jnp.promote_types(dtype, jnp.float32))
