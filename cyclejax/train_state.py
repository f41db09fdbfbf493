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


@functools.partial(jax.jit, static_argnums=0)
def _init(net: nn.Module, key: jax.Array, x: jax.Array) -> dict[str, Any]:
    """`net`'s variables, compiled once per distinct network and input shape in a process:
    equal networks (G_A and G_B, D_A and D_B where the domains have as many channels, and every
    network of a later model with the same options) share one program, traced once."""
    return net.init({"params": key}, x, train=False)


def create(model: CycleGAN, seed: int, shape_A: tuple[int, int, int], shape_B: tuple[int, int, int]) -> TrainState:
    """Initialises every network (official init), both optimisers and both pools.

    `shape_A`, `shape_B`: (H, W, C) of one image of each domain.
    """
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    # Parameters are drawn with the 'rbg' generator: XLA:CPU compiles it about three times
    # faster than threefry, which is most of the start-up time of a small model.
    keys = dict(zip(NETS, jax.random.split(jax.random.key(seed, impl="rbg"), 4)))
    inputs = {name: jnp.zeros((1, *shape), jnp.float32) for name, shape in input_shapes(shape_A, shape_B).items()}
    params, batch_stats = {}, {}
    for name in NETS:
        variables = _init(getattr(model, name), keys[name], inputs[name])
        params[name] = variables["params"]
        batch_stats[name] = variables.get("batch_stats", {})
    g = {k: params[k] for k in GENERATOR_NETS}
    d = {k: params[k] for k in DISCRIMINATOR_NETS}
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state_G=model.tx_G.init(g),
        opt_state_D=model.tx_D.init(d),
        pool_A=image_pool.init_pool(model.pool_size, shape_A, model.image_dtype),
        pool_B=image_pool.init_pool(model.pool_size, shape_B, model.image_dtype),
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        ema=jax.tree_util.tree_map(jnp.copy, g) if model.ema_decay > 0 else {},  # copies: the step donates both
    )
