"""Refuses impossible configs before anything compiles, naming the key and what is allowed."""
from __future__ import annotations

import jax
import ml_collections

from cyclejax import convolution, layers, losses, model, networks, preprocessing
from cyclejax.errors import UserError


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and what is allowed."""


def _one_of(config, key, allowed):
    if config.get(key) not in allowed:
        raise ConfigError(f"config.{key}={config.get(key)!r} is not allowed; use one of {list(allowed)}")


def validate(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> None:
    _one_of(config, "netG", networks.GENERATOR_ARCHS)
    _one_of(config, "netD", networks.DISCRIMINATOR_ARCHS)
    _one_of(config, "norm", layers.NORMS)
    _one_of(config, "init_type", layers.INIT_TYPES)
    _one_of(config, "gan_mode", losses.GAN_MODES)
    _one_of(config, "preprocess", preprocessing.PREPROCESS)
    _one_of(config, "direction", ("AtoB", "BtoA"))
    _one_of(config, "dtype", tuple(model.DTYPES))
    _one_of(config, "conv_impl", convolution.IMPLS)
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("config.dtype='float64' needs 64-bit JAX: run with JAX_ENABLE_X64=1 (float64 is for "
                          "exactness checks; float32 and bfloat16 are the training dtypes)")
    try:  # an explicit conv_impl this process cannot run (oneDNN on a GPU, bfloat16 on an AVX2 CPU, ...)
        convolution.resolve(config.conv_impl, dtype=model.DTYPES[config.dtype])
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"config.{e}") from None
    for key in ("ngf", "ndf", "batch_size", "crop_size", "load_size", "input_nc", "output_nc", "n_layers_D"):
        if int(config.get(key)) < 1:
            raise ConfigError(f"config.{key}={config.get(key)!r} must be a positive integer")
    for key in ("n_epochs", "n_epochs_decay", "pool_size", "lambda_identity", "max_steps", "keep_checkpoints",
                "max_dataset_size", "log_every", "sample_every", "checkpoint_every", "prefetch"):
        if config.get(key) < 0:
            raise ConfigError(f"config.{key}={config.get(key)!r} must not be negative")
    if not 0 <= config.get("ema_decay", 0.0) < 1:
        raise ConfigError(f"config.ema_decay={config.get('ema_decay')!r} must be in [0, 1): 0 keeps no average of the "
                          "generators' weights, 0.999 averages over about the last 1,000 steps")
    if config.n_epochs + config.n_epochs_decay < 1:
        raise ConfigError("config.n_epochs + config.n_epochs_decay must be at least 1")
    mode = preprocessing.preprocess_mode(config)
    if mode in ("resize_and_crop", "scale_width_and_crop") and config.crop_size > config.load_size:
        raise ConfigError(f"config.crop_size={config.crop_size} is larger than config.load_size={config.load_size}; "
                          f"crop_size must be <= load_size with preprocess={config.preprocess!r}")
    if config.batch_size % device_count:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of the {device_count} devices")
    if config.batch_size % process_count:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of the {process_count} processes")
    if config.lambda_identity > 0 and config.input_nc != config.output_nc:
        raise ConfigError(f"identity loss (config.lambda_identity={config.lambda_identity}) needs input_nc == output_nc, "
                          f"got {config.input_nc} and {config.output_nc}; set lambda_identity=0")
    multiple = networks.generator_multiple(config.netG)
    if mode != "none" and config.crop_size % multiple:
        raise ConfigError(f"config.netG={config.netG!r} needs crop_size to be a multiple of {multiple}, "
                          f"got crop_size={config.crop_size}")
    if config.input_nc != 3 or config.output_nc != 3:
        raise ConfigError("the input pipeline reads RGB images: input_nc and output_nc must be 3")
