"""The official optimisers and `linear` learning-rate policy, as Optax objects.

The official policy steps once per epoch: during epoch e (0-based) the rate is
lr · (1 − max(0, e + 1 − n_epochs) / (n_epochs_decay + 1)). Ours is the continuous
per-step form of the same line: constant for `n_epochs` epochs, then linear to zero over
`n_epochs_decay` epochs. At every epoch boundary the two differ by at most
1 / (n_epochs_decay + 1) of lr (tests/test_optim.py), and ours ends at zero.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax


def official_multiplier(epoch: int, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> float:
    """The official `lambda_rule` of `networks.get_scheduler` for 0-based `epoch`."""
    return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


# The schedule and the optimiser are cached, so that models built from the same options compare
# equal and share their compiled step (`train_step.jit_train_step`).
@functools.cache
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


@functools.cache
def adam(schedule: optax.Schedule, beta1: float = 0.5, beta2: float = 0.999) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, betas=(beta1, beta2)), eps 1e-8: optax.adam's update and state, with
    its bias corrections computed accurately (`scale_by_adam`)."""
    return optax.chain(scale_by_adam(beta1, beta2, 1e-8), optax.scale_by_learning_rate(schedule))


def scale_by_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """`optax.scale_by_adam(b1, b2, eps)` (same moments, same `ScaleByAdamState`), except the bias
    corrections 1 - b^t, computed as -expm1(t log b) with log b from the host's double.

    optax computes 1 - b2^t in the parameters' float32 from b2 rounded to float32, where torch
    uses Python's double: at t = 1, 1 - 0.999 loses 13 of float32's 24 bits (relative 1.3e-5),
    so that Adam's first steps were 6e-6 longer than torch's (the largest difference from the
    official iteration in float32 left, 450 times torch's own round-off on the biases;
    tests/test_train_step.py). This form is good to a few float32 units at every t.
    """
    base = optax.scale_by_adam(b1, b2, eps)

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)

        def step(m, v):
            t = count.astype(m.dtype)
            return (m / -jnp.expm1(t * math.log(b1))) / (jnp.sqrt(v / -jnp.expm1(t * math.log(b2))) + eps)

        return jax.tree.map(step, mu, nu), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(base.init, update)
