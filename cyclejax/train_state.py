"""The whole training state of a CycleGAN as one pytree."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from cyclejax import image_pool
from cyclejax.model import CycleGAN

NETS = ("G_A", "G_B", "D_A", "D_B")
GENERATOR_NETS = ("G_A", "G_B")
DISCRIMINATOR_NETS = ("D_A", "D_B")


def input_shapes(shape_A: tuple[int, ...], shape_B: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """What each network takes: a generator its source domain, a discriminator the domain it judges."""
    return {"G_A": shape_A, "G_B": shape_B, "D_A": shape_B, "D_B": shape_A}


@flax.struct.dataclass
class TrainState:
    params: dict[str, Any]  # {'G_A', 'G_B', 'D_A', 'D_B'}: each network's parameters
    batch_stats: dict[str, Any]  # the same keys: running statistics of norm='batch' ({} otherwise)
    opt_state_G: Any  # Adam over {'G_A', 'G_B'}
    opt_state_D: Any  # Adam over {'D_A', 'D_B'}
    pool_A: image_pool.ImagePool  # fakes of domain A (G_B's outputs) shown to D_B
    pool_B: image_pool.ImagePool  # fakes of domain B (G_A's outputs) shown to D_A
    step: jax.Array  # int32
    rng: jax.Array  # uint32[2]: the run's key; each step folds its index in
    # {'G_A', 'G_B'}: the generators' weights averaged over the steps (`update_average`), or {}
    # when the model keeps no average (ema_decay 0).
    ema: dict[str, Any] = flax.struct.field(default_factory=dict)

    @property
    def g_params(self) -> dict[str, Any]:
        return {k: self.params[k] for k in GENERATOR_NETS}

    @property
    def d_params(self) -> dict[str, Any]:
        return {k: self.params[k] for k in DISCRIMINATOR_NETS}

    @property
    def translation_params(self) -> dict[str, Any]:
        """Every network's parameters as translations use them: the generators' average where
        one is kept, the last weights otherwise (samples, the end-of-run score, exports)."""
        return {**self.params, **self.ema}


def update_average(average: dict[str, Any], params: dict[str, Any], step: jax.Array, decay: float) -> dict[str, Any]:
    """The exponential moving average after step `step` (0-based) has produced `params`.

    Its decay is min(decay, (1 + step) / (10 + step)) (TensorFlow's ExponentialMovingAverage
    with num_updates): early on the average follows the weights closely, so the random
    initial weights are forgotten within a few steps, and later it spans about 1 / (1 - decay)
    steps. `{}` (no average kept) stays `{}`.
    """
    if not average:
        return average
    leaf = jax.tree_util.tree_leaves(average)[0]
    t = step.astype(leaf.dtype)
    keep = jnp.minimum(jnp.asarray(decay, leaf.dtype), (1 + t) / (10 + t))
    return optax.incremental_update(params, average, 1 - keep)


# `create` runs three kinds of compiled program, each cached in the process and persistently:
# eager operations would compile (or read from the persistent cache) a program per operation and
# shape, 35 of them for the tiny model (zeros, copies and key operations: about 1.5 s of each
# run's start on the 2-core VM).


@jax.jit
def _keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The state's key, and one 'rbg' key per network for its parameters (XLA:CPU compiles the
    'rbg' generator about three times faster than threefry: most of a small model's start-up)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1), jax.random.split(jax.random.key(seed, impl="rbg"), 4)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(net: nn.Module, key: jax.Array, shape: tuple[int, ...]) -> dict[str, Any]:
    """`net`'s variables for inputs of (H, W, C) `shape`, compiled once per distinct network and
    shape in a process: equal networks (G_A and G_B, D_A and D_B where the domains have as many
    channels, and every network of a later model with the same options) share one program."""
    return net.init({"params": key}, jnp.zeros((1, *shape), jnp.float32), train=False)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _rest(model: CycleGAN, params: dict[str, Any], shape_A: tuple[int, ...], shape_B: tuple[int, ...]) -> dict:
    """Both optimisers' states, both pools, the step and the generators' average."""
    g = {k: params[k] for k in GENERATOR_NETS}
    d = {k: params[k] for k in DISCRIMINATOR_NETS}
    return dict(
        opt_state_G=model.tx_G.init(g),
        opt_state_D=model.tx_D.init(d),
        pool_A=image_pool.init_pool(model.pool_size, shape_A, model.image_dtype),
        pool_B=image_pool.init_pool(model.pool_size, shape_B, model.image_dtype),
        step=jnp.zeros((), jnp.int32),
        ema=jax.tree_util.tree_map(jnp.copy, g) if model.ema_decay > 0 else {},  # copies: the step donates both
    )


def create(model: CycleGAN, seed: int, shape_A: tuple[int, int, int], shape_B: tuple[int, int, int]) -> TrainState:
    """Initialises every network (official init), both optimisers and both pools.

    `shape_A`, `shape_B`: (H, W, C) of one image of each domain.
    """
    shape_A, shape_B = tuple(shape_A), tuple(shape_B)  # static arguments: hashable
    rng, keys = _keys(seed)
    params, batch_stats = {}, {}
    for (name, shape), key in zip(input_shapes(shape_A, shape_B).items(), keys):
        variables = _init(getattr(model, name), key, shape)
        params[name] = variables["params"]
        batch_stats[name] = variables.get("batch_stats", {})
    return TrainState(params=params, batch_stats=batch_stats, rng=rng, **_rest(model, params, shape_A, shape_B))
