"""One CycleGAN iteration as a pure function: `train_step(state, batch) -> (state, metrics)`.

It does what the official `CycleGANModel.optimize_parameters` does, in the same order:
forward both cycles; update G_A and G_B together with the discriminators frozen; then
update D_A and D_B together on the fakes made before the generator update, drawn through
the image pools. Networks run in training mode throughout (batch statistics for
norm='batch', dropout when enabled), and running statistics are folded in call by call in
the official order.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jax.sharding import Mesh

from cyclejax import image_pool, losses, onednn, parallel, train_state
from cyclejax.losses import METRICS
from cyclejax.model import CycleGAN, apply_train_mode
from cyclejax.train_state import TrainState

Batch = dict[str, jax.Array]  # {'A': (N, H, W, C_A), 'B': (N, H, W, C_B)}, values in [-1, 1]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


class NetworkApplier:
    """Applies the networks in training mode, threading running statistics and dropout keys."""

    # Each network as a nested jit (`_apply`). Off where what runs inside a network is watched
    # while the step is traced (Flax interceptors, patched activations: the tests' probes), as
    # a nested jit's trace is cached and would keep its values to itself.
    nested = True

    def __init__(self, model: CycleGAN, batch_stats: dict[str, Any], key: jax.Array):
        self.model = model
        self.stats = dict(batch_stats)
        self.key = key
        self.calls = 0

    def __call__(self, name: str, params: Any, x: jax.Array) -> jax.Array:
        net = getattr(self.model, name)
        self.calls += 1
        rngs = {"dropout": jax.random.fold_in(self.key, self.calls)}
        apply = _apply if self.nested else _apply.__wrapped__
        if self.stats[name]:
            y, updates = apply(net, {"params": params, "batch_stats": self.stats[name]}, x, rngs, ("batch_stats",))
            self.stats[name] = updates["batch_stats"]
            return y
        return apply(net, {"params": params}, x, rngs, ())

    def without_stats(self, name: str, params: Any, x: jax.Array) -> jax.Array:
        """Applies a network in training mode without recording its statistics (for the penalty)."""
        return apply_train_mode(getattr(self.model, name), params, self.stats[name], x,
                                rngs={"dropout": jax.random.fold_in(self.key, 0)})


@functools.partial(jax.jit, static_argnums=(0, 4))
def _apply(net: nn.Module, variables: dict[str, Any], x: jax.Array, rngs: dict[str, jax.Array],
           mutable: tuple[str, ...]):
    """`net.apply` in training mode, as a nested jit: the step calls each generator three times
    and each discriminator up to four times on inputs of one shape, and a nested jit is traced
    once for them all (tracing the tiny step 1.8 -> 1.0 s). XLA inlines it: the compiled step
    computes the same numbers to the bit (2026-12-06: one step's outputs, three configs)."""
    return net.apply(variables, x, train=True, rngs=rngs, mutable=list(mutable) if mutable else False)


def generator_loss(g_params, d_params, run: NetworkApplier, real_A, real_B):
    """The official `backward_G`: returns (loss, (fakes, the six generator-side losses))."""
    m = run.model
    fake_B = run("G_A", g_params["G_A"], real_A)
    rec_A = run("G_B", g_params["G_B"], fake_B)
    fake_A = run("G_B", g_params["G_B"], real_B)
    rec_B = run("G_A", g_params["G_A"], fake_A)
    if m.uses_identity:
        idt_A = run("G_A", g_params["G_A"], real_B)
        idt_B = run("G_B", g_params["G_B"], real_A)
        loss_idt_A = losses.l1(idt_A, real_B) * m.lambda_B * m.lambda_identity
        loss_idt_B = losses.l1(idt_B, real_A) * m.lambda_A * m.lambda_identity
    else:
        loss_idt_A = loss_idt_B = jnp.zeros((), jnp.float32)
    loss_G_A = losses.gan_loss(run("D_A", d_params["D_A"], fake_B), True, m.gan_mode)
    loss_G_B = losses.gan_loss(run("D_B", d_params["D_B"], fake_A), True, m.gan_mode)
    loss_cycle_A = losses.l1(rec_A, real_A) * m.lambda_A
    loss_cycle_B = losses.l1(rec_B, real_B) * m.lambda_B
    total = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
    parts = dict(G_A=loss_G_A, G_B=loss_G_B, cycle_A=loss_cycle_A, cycle_B=loss_cycle_B,
                 idt_A=loss_idt_A, idt_B=loss_idt_B)
    return total, (fake_A, fake_B, parts)


def discriminator_loss(d_params, run: NetworkApplier, real_A, real_B, fake_A, fake_B, gp_key):
    """The official `backward_D_A` + `backward_D_B` on pooled fakes (no gradient into G)."""
    m = run.model

    def basic(name, real, fake, key):
        loss = 0.5 * (losses.gan_loss(run(name, d_params[name], real), True, m.gan_mode)
                      + losses.gan_loss(run(name, d_params[name], fake), False, m.gan_mode))
        if m.gan_mode == "wgangp":
            # Not called by the official CycleGAN; the README explains why we add it here.
            loss = loss + losses.gradient_penalty(lambda x: run.without_stats(name, d_params[name], x), real, fake, key)
        return loss

    key_A, key_B = jax.random.split(gp_key)
    loss_D_A = basic("D_A", real_B, jax.lax.stop_gradient(fake_B), key_A)
    loss_D_B = basic("D_B", real_A, jax.lax.stop_gradient(fake_A), key_B)
    return loss_D_A + loss_D_B, dict(D_A=loss_D_A, D_B=loss_D_B)


def step_with_intermediates(model: CycleGAN) -> Callable[[TrainState, Batch], tuple[TrainState, dict, dict]]:
    """The step for `model`, also returning what it computes on the way (for tests across topologies).

    `(state, batch) -> (new state, metrics, intermediates)`, intermediates: the random keys
    (`keys`: dropout, pool_A, pool_B, gp), the fakes (`fake_A`, `fake_B`), the images shown to
    the discriminators (`pooled_A`, `pooled_B`), `g_grads`, `g_updates`, `d_grads`, `d_updates`,
    the new `batch_stats` and the eight `losses`. `make_train_step` drops them, so the compiled
    step computes and returns nothing more.
    """

    def step(state: TrainState, batch: Batch):
        real_A = batch["A"].astype(model.image_dtype)
        real_B = batch["B"].astype(model.image_dtype)
        key = jax.random.fold_in(state.rng, state.step)
        dropout_key, pool_key_A, pool_key_B, gp_key = jax.random.split(key, 4)
        g_params, d_params = state.g_params, state.d_params

        # Generators, discriminators frozen.
        def g_objective(g):
            run = NetworkApplier(model, state.batch_stats, dropout_key)
            loss, aux = generator_loss(g, d_params, run, real_A, real_B)
            return loss, (aux, run.stats)

        (_, ((fake_A, fake_B, g_parts), stats)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(g_params)
        g_updates, opt_state_G = model.tx_G.update(g_grads, state.opt_state_G, g_params)
        new_g = optax.apply_updates(g_params, g_updates)

        # Discriminators, on the pre-update fakes through the pools.
        pool_A, pooled_A = image_pool.query(state.pool_A, fake_A, pool_key_A)
        pool_B, pooled_B = image_pool.query(state.pool_B, fake_B, pool_key_B)

        def d_objective(d):
            run = NetworkApplier(model, stats, jax.random.fold_in(dropout_key, 1 << 20))
            loss, parts = discriminator_loss(d, run, real_A, real_B, pooled_A, pooled_B, gp_key)
            return loss, (parts, run.stats)

        (_, (d_parts, stats)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(d_params)
        d_updates, opt_state_D = model.tx_D.update(d_grads, state.opt_state_D, d_params)
        new_d = optax.apply_updates(d_params, d_updates)

        new_state = state.replace(
            params={**new_g, **new_d},
            batch_stats=stats,
            opt_state_G=opt_state_G,
            opt_state_D=opt_state_D,
            pool_A=pool_A,
            pool_B=pool_B,
            step=state.step + 1,
            ema=train_state.update_average(state.ema, new_g, state.step, model.ema_decay),
        )
        parts = {**g_parts, **d_parts}
        metrics = {name: parts[name] for name in METRICS}
        metrics["lr"] = jnp.asarray(model.schedule(state.step), jnp.float32)
        intermediates = dict(
            keys=dict(dropout=dropout_key, pool_A=pool_key_A, pool_B=pool_key_B, gp=gp_key),
            fake_A=fake_A, fake_B=fake_B, pooled_A=pooled_A, pooled_B=pooled_B,
            g_grads=g_grads, g_updates=g_updates, d_grads=d_grads, d_updates=d_updates,
            batch_stats=stats, losses=parts,
        )
        return new_state, metrics, intermediates

    return step


def make_train_step(model: CycleGAN) -> StepFn:
    """The un-jitted step for `model`; `jit_train_step` compiles it."""
    step = step_with_intermediates(model)

    def train_step(state: TrainState, batch: Batch):
        new_state, metrics, _ = step(state, batch)
        return new_state, metrics

    return train_step


# The size of a convolution (MFLOP, per device) from which the step takes XLA's memory-
# minimising scheduler on CPU (`compiler_options`): the ResNet blocks' take 4,832 at 256x256
# and 1,208 at 128x128.
MEMORY_SCHEDULER_MFLOP = 2500.0


def compiler_options(model: CycleGAN, shape_A: tuple[int, int, int], shape_B: tuple[int, int, int],
                     per_device_batch: int) -> dict[str, str]:
    """XLA options for `model`'s step on (H, W, C) images, `per_device_batch` on each device.

    On CPU, when the step's oneDNN convolutions run one at a time (`cyclejax.onednn`) and the
    largest takes `MEMORY_SCHEDULER_MFLOP` or more, XLA's memory-minimising scheduler instead
    of its default, which orders the program for concurrency: those convolutions cannot
    overlap, and what XLA runs beside one slows it down, its OpenMP team holding every core
    (at 256x256 in bfloat16 the ResNet blocks' forward convolutions took 5.6 ms a call in
    the default order, 4.9 in this one, 4.7 in torch). Measured on the 2-core AMD EPYC in
    interleaved runs (experiments/bench/README.md): at 256x256 the bfloat16 step 3.9 %
    faster over 16 rounds, the float32 one as fast with 8 % less memory; at 128x128 the
    bfloat16 step 4.6 % slower (its convolutions are a quarter as long, and what XLA runs
    beside them pays more there), the quick-start model 3-7 % slower: below the limit the
    default stays. The schedule changes no number. Elsewhere (GPU, TPU, XLA's own
    convolutions): no options.
    """
    if jax.default_backend() != "cpu" or not onednn.available():
        return {}
    limit = onednn.serial_limit_mflop()
    # Each distinct network and input once (G_A and G_B are one network where the options make them equal).
    inputs = {(getattr(model, name), shape) for name, shape in train_state.input_shapes(shape_A, shape_B).items()}
    largest = max(onednn.largest_mflop(lambda x, net=net: net.init(jax.random.key(0), x, train=False),
                                       jax.ShapeDtypeStruct((per_device_batch, *shape), jnp.float32))
                  for net, shape in inputs)
    if limit < 0 or largest < max(MEMORY_SCHEDULER_MFLOP, limit):
        return {}
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def jit_train_step(model: CycleGAN, mesh: Mesh, options: dict[str, str] | None = None) -> StepFn:
    """The compiled step: state replicated over the mesh and donated, batch sharded over `data`;
    `options`: XLA compiler options (`compiler_options`). The mesh is in context while the step
    is traced, so that oneDNN's convolutions run per device on it (`cyclejax.onednn`).

    One jitted step per model (models built from the same options are equal), mesh and options
    in a process: a second run of the same config (a notebook's training cell run again, a
    resume after an interruption) neither traces nor compiles its step again."""
    return _jit_train_step(model, mesh, tuple(sorted((options or {}).items())))


@functools.cache
def _jit_train_step(model: CycleGAN, mesh: Mesh, options: tuple[tuple[str, str], ...]) -> StepFn:
    return jax.jit(
        parallel.traced_on(mesh, make_train_step(model)),
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
        donate_argnums=0,
        compiler_options=dict(options) or None,
    )
