"""What one CycleGAN is: its four networks, its loss weights and its two optimisers.

A static description (no arrays); the arrays live in the `TrainState` pytree.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclejax import convolution, layers, networks, optim

# float64 is for exactness checks against float64 references (it needs JAX_ENABLE_X64=1).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


@dataclasses.dataclass(frozen=True)
class CycleGAN:
    G_A: nn.Module  # A -> B
    G_B: nn.Module  # B -> A
    D_A: nn.Module  # judges domain B
    D_B: nn.Module  # judges domain A
    tx_G: optax.GradientTransformation  # one Adam over G_A and G_B
    tx_D: optax.GradientTransformation  # one Adam over D_A and D_B
    schedule: optax.Schedule
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    ema_decay: float = 0.0  # the generators' weight average (`train_state.update_average`); 0: none
    dtype: Any = jnp.float32  # the networks' compute dtype

    @property
    def uses_identity(self) -> bool:
        return self.lambda_identity > 0

    @property
    def image_dtype(self) -> Any:
        """What images, pools and losses are held in: float32, float64 in a float64 model."""
        return layers.full_precision(self.dtype)


def apply_train_mode(net: nn.Module, params, batch_stats, x, rngs=None):
    """Applies a network in training mode, as the official train and test scripts do.

    With norm='batch' the batch statistics are used and the running ones left unchanged.
    Dropout (no_dropout=False) stays on, as in the official test.py; without `rngs` (sample
    grids, translation, export) its masks come from a fixed key, so that an image always
    gets the same translation.
    """
    if rngs is None:
        rngs = {"dropout": jax.random.key(0)}
    if batch_stats:
        return net.apply({"params": params, "batch_stats": batch_stats}, x, train=True, rngs=rngs,
                         mutable=["batch_stats"])[0]
    return net.apply({"params": params}, x, train=True, rngs=rngs)


def build(config: ml_collections.ConfigDict, steps_per_epoch: int, backend: str | None = None) -> CycleGAN:
    """The CycleGAN a config describes (keys named as the official options), with the
    convolutions `conv_impl` takes on `backend` (default: JAX's; 'cuda' or 'tpu' to export
    for a device this process does not have)."""
    dtype = DTYPES[config.get("dtype", "float32")]
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 (or run inside jax.enable_x64())")
    impl = convolution.resolve(config.get("conv_impl", "auto"), backend, dtype)
    g = dict(ngf=config.ngf, norm=config.norm, use_dropout=not config.no_dropout,
             init_type=config.init_type, init_gain=config.init_gain, dtype=dtype, conv_impl=impl)
    d = dict(ndf=config.ndf, n_layers_D=config.n_layers_D, norm=config.norm,
             init_type=config.init_type, init_gain=config.init_gain, dtype=dtype, conv_impl=impl)
    schedule = optim.learning_rate_schedule(config.lr, config.n_epochs, config.n_epochs_decay, steps_per_epoch,
                                            layers.full_precision(dtype))
    return CycleGAN(
        G_A=networks.define_G(config.netG, config.input_nc, config.output_nc, **g),
        G_B=networks.define_G(config.netG, config.output_nc, config.input_nc, **g),
        D_A=networks.define_D(config.netD, config.output_nc, **d),
        D_B=networks.define_D(config.netD, config.input_nc, **d),
        tx_G=optim.adam(schedule, config.beta1),
        tx_D=optim.adam(schedule, config.beta1),
        schedule=schedule,
        gan_mode=config.gan_mode,
        lambda_A=config.lambda_A,
        lambda_B=config.lambda_B,
        lambda_identity=config.lambda_identity,
        pool_size=config.pool_size,
        ema_decay=config.get("ema_decay", 0.0),
        dtype=dtype,
    )


def batch_translator(net, params, batch_stats):
    """A function of an array of same-sized images (uint8, or float in [-1, 1]) -> their translations as
    float images in [-1, 1], run `batch` at a time through one jitted generator (training-mode norms)."""
    apply = jax.jit(lambda x: apply_train_mode(net, params, batch_stats, x))

    def run(images: np.ndarray, batch: int = 16) -> np.ndarray:
        x = images.astype(np.float32) / 127.5 - 1.0 if images.dtype == np.uint8 else images
        return np.concatenate([np.asarray(apply(x[i:i + batch])) for i in range(0, len(x), batch)])

    return run
