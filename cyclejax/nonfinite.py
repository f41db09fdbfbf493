"""Stops a run whose losses or state turn NaN or Inf, before it can checkpoint them.

The loop keeps a small device-side record of the first step whose losses were not finite
(`track`, one tiny jitted op per step, dispatched asynchronously like the step itself), and
reads it only where it would act on it: at log steps and before every checkpoint
(`check`). Before a save, the whole state is also checked (`state_is_finite`), since an
update can turn parameters non-finite while that step's losses were still finite.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cyclejax.errors import NonFiniteError
from cyclejax.losses import METRICS


def init() -> dict[str, jax.Array]:
    return {"step": jnp.array(-1, jnp.int32), "losses": jnp.zeros((len(METRICS),), jnp.float32)}


@jax.jit
def track(record: dict[str, jax.Array], metrics: dict[str, jax.Array], step) -> dict[str, jax.Array]:
    """Remembers `step` and its losses if they are the first non-finite ones."""
    losses = jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in METRICS])
    first = (record["step"] < 0) & ~jnp.all(jnp.isfinite(losses))
    return {"step": jnp.where(first, jnp.asarray(step, jnp.int32), record["step"]),
            "losses": jnp.where(first, losses, record["losses"])}


def check(record: dict[str, jax.Array]) -> None:
    """Raises `NonFiniteError` naming the step and its losses if any step went non-finite."""
    step = int(jax.device_get(record["step"]))
    if step >= 0:
        losses = np.asarray(jax.device_get(record["losses"]))
        shown = " ".join(f"{k}={v:.4g}" for k, v in zip(METRICS, losses))
        raise NonFiniteError(f"non-finite loss at step {step}: {shown}. Training stopped; no checkpoint of this "
                             f"or later steps was written. Lower lr, or check the data.")


@jax.jit
def state_is_finite(state) -> jax.Array:
    leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
