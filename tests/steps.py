"""The same train steps on both sides: cyclejax's compiled step and the official iteration in
torch, from the same weights and batches, with the same random draws (image pools, WGAN-GP's
interpolation weights), in float32 or float64. Each side's result is in torch's layout:

    [{"losses": {name: float}, "grads": {net: {key: array}}, "state": {net: {key: array}}}, ...]

one entry per step; `state` is each network's state dict after the step (its weights, and
running statistics for norm='batch'), `grads` the gradients that step's updates used.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from cyclejax import image_pool, losses, model as model_lib, train_state, train_step
from cyclejax.losses import METRICS
from tests import torch_reference as ref

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def batches(n_steps: int, batch: int, size: int, seed: int = 0, dtype=np.float32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(dtype) for k in "AB"} for _ in range(n_steps)]


def ours(config, data: list[dict[str, np.ndarray]]):
    """cyclejax's steps: (initial state, per-step results, per-step draws) with the config's dtype
    and conv_impl. Call inside `jax.enable_x64()` for float64."""
    size = data[0]["A"].shape[1]
    model = model_lib.build(config, steps_per_epoch=100)
    state = train_state.create(model, config.seed, (size, size, 3), (size, size, 3))
    initial = jax.device_get(state)
    step = jax.jit(train_step.step_with_intermediates(model))
    nets = ref.networks(config.netG, config.netD, config.ngf, config.ndf, config.n_layers_D, config.norm)
    results, draws = [], []
    for batch in data:
        draws.append(_draws(model, state, batch))
        state, _, inter = step(state, batch)
        inter = jax.device_get(inter)
        new = jax.device_get(state)
        grads = {**inter["g_grads"], **inter["d_grads"]}
        results.append({
            "losses": {k: float(inter["losses"][k]) for k in METRICS},
            "grads": {k: _parameters(net, ref.flax_to_torch(net, grads[k], new.batch_stats[k], np.float64))
                      for k, net in nets.items()},
            "state": {k: ref.flax_to_torch(net, new.params[k], new.batch_stats[k], np.float64)
                      for k, net in nets.items()},
        })
    return initial, results, draws


def _parameters(net, arrays: dict) -> dict:
    """The entries of a state dict that are parameters (gradients have no running statistics)."""
    names = dict(net.named_parameters())
    return {k: v for k, v in arrays.items() if k in names}


def _draws(model, state, batch) -> dict:
    """What the official code would draw in this step: per pool, the (uniform, slot) pairs of
    the images that find it full; per discriminator, WGAN-GP's interpolation weights."""
    key = jax.random.fold_in(state.rng, state.step)
    _, pool_key_A, pool_key_B, gp_key = jax.random.split(key, 4)  # as train_step does
    n = batch["A"].shape[0]
    out = {"alpha": {}, "pool": {}}
    for name, pool_key, pool in (("A", pool_key_A, state.pool_A), ("B", pool_key_B, state.pool_B)):
        p, slots = jax.device_get(image_pool.draws(pool_key, n, model.pool_size))
        filling = max(0, model.pool_size - int(pool.count))  # images stored without a draw
        out["pool"][name] = list(zip(p[filling:].tolist(), slots[filling:].tolist()))
    for net, k in zip(("D_A", "D_B"), jax.random.split(gp_key)):
        out["alpha"][net] = np.asarray(losses.interpolation_weights(k, n, model.image_dtype))
    return out


class _Replay:
    """Python's `random` for the official ImagePool: cyclejax's draws, one image at a time."""

    def __init__(self):
        self.pending: list[tuple[float, int]] = []
        self.slot = None

    def uniform(self, a, b):
        p, self.slot = self.pending.pop(0)
        return p

    def randint(self, a, b):
        assert a == 0 and 0 <= self.slot <= b, (a, b, self.slot)
        return self.slot


def official(config, initial, data: list[dict[str, np.ndarray]], draws: list[dict], dtype: str):
    """The official iterations from cyclejax's `initial` state (its weights as `dtype`) on `data`,
    with `draws` (from `ours`) replayed: per-step results in the layout of `ours`."""
    torch_dtype = TORCH_DTYPES[dtype]
    nets = ref.networks(config.netG, config.netD, config.ngf, config.ndf, config.n_layers_D, config.norm)
    for k, net in nets.items():
        net.to(torch_dtype)
        ref.load_flax(net, initial.params[k], initial.batch_stats[k])
        for m in net.modules():
            if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU)):
                m.inplace = False  # same values; keeps autograd simple for WGAN-GP's double backward
    replay = {"A": _Replay(), "B": _Replay()}
    alpha = {}
    it = ref.OfficialIteration(nets, lr=config.lr, beta1=config.beta1, lambda_A=config.lambda_A,
                               lambda_B=config.lambda_B, lambda_identity=config.lambda_identity,
                               gan_mode=config.gan_mode, pool_size=config.pool_size, pool_random=replay.get,
                               penalty_alpha=lambda name: torch.from_numpy(alpha[name]).to(torch_dtype))
    results = []
    for batch, drawn in zip(data, draws):
        for name in "AB":
            replay[name].pending = list(drawn["pool"][name])
        alpha.update(drawn["alpha"])
        it.set_input(ref.nchw(batch["A"], np.dtype(dtype)), ref.nchw(batch["B"], np.dtype(dtype)))
        loss = it.optimize_parameters()
        assert not any(r.pending for r in replay.values()), "the official pool drew less than cyclejax's"
        results.append({
            "losses": loss,
            "grads": {k: {n: p.grad.detach().double().numpy().copy() for n, p in net.named_parameters()}
                      for k, net in nets.items()},
            "state": {k: {n: v.detach().double().numpy().copy() for n, v in net.state_dict().items()
                          if not n.endswith("num_batches_tracked")} for k, net in nets.items()},
        })
    return results


def tensors(result: dict):
    """(name, array) for every loss, gradient and state entry of one step's result."""
    for k, v in result["losses"].items():
        yield f"loss {k}", np.asarray(v, np.float64)
    for part in ("grads", "state"):
        for net, arrays in result[part].items():
            for key, v in arrays.items():
                yield f"{part} {net}.{key}", np.asarray(v, np.float64)
