"""The official optimisers and `linear` learning-rate policy, as Optax objects.

The official policy steps once per epoch: during epoch e (0-based) the rate is
lr · (1 − max(0, e + 1 − n_epochs) / (n_epochs_decay + 1)). Ours is the continuous
per-step form of the same line: constant for `n_epochs` epochs, then linear to zero over
`n_epochs_decay` epochs. At every epoch boundary the two differ by at most
1 / (n_epochs_decay + 1) of lr (tests/test_optim.py), and ours ends at zero.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax


def official_multiplier(epoch: int, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> float:
    """The official `lambda_rule` of `networks.get_scheduler` for 0-based `epoch`."""
    return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


def learning_rate_schedule(lr: float, n_epochs: int, n_epochs_decay: int, steps_per_epoch: int,
                           dtype=jnp.float32) -> optax.Schedule:
    """lr for `n_epochs * steps_per_epoch` steps, then linear decay to 0 over `n_epochs_decay` epochs,
    computed in `dtype` (float64 for a float64 model: optax would round it to float32, as it
    divides the int32 step count)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    schedule = optax.linear_schedule(
        init_value=lr,
        end_value=0.0,
        transition_steps=max(1, n_epochs_decay * steps_per_epoch),
        transition_begin=n_epochs * steps_per_epoch,
    )
    return lambda count: schedule(jnp.asarray(count, dtype))


def adam(schedule: optax.Schedule, beta1: float = 0.5, beta2: float = 0.999) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, betas=(beta1, beta2)), eps 1e-8 (optax's adam is the same update)."""
    return optax.adam(schedule, b1=beta1, b2=beta2, eps=1e-8)
