"""The same train steps on both sides: cyclejax's compiled step and the official iteration in
torch, from the same weights and batches, with the same random draws (image pools, WGAN-GP's
interpolation weights), in float32 or float64. Each side's result is in torch's layout:

    [{"losses": {name: float}, "grads": {net: {key: array}}, "state": {net: {key: array}}}, ...]

one entry per step; `state` is each network's state dict after the step (its weights, and
running statistics for norm='batch'), `grads` the gradients that step's updates used.
"""
from __future__ import annotations

import jax
import numpy as np
import torch

from cyclejax import image_pool, losses, model as model_lib, train_state, train_step
from cyclejax.losses import METRICS
from tests import torch_reference as ref

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# XLA options for the float64 steps: LLVM's optimisation level 0 (XLA's default is 3), which
# compiles them faster. It changes how the arithmetic is scheduled into instructions (fused
# multiply-adds, vector reductions), so rounding at float64's 1e-16, seven orders below the
# 1e-9 these steps are held to; the float32 steps compile as the train command's do.
FLOAT64_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def batches(n_steps: int, batch: int, size: int, seed: int = 0, dtype=np.float32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.uniform(-1, 1, (batch, size, size, 3)).astype(dtype) for k in "AB"} for _ in range(n_steps)]


def initial(config, size: int):
    """(model, initial state) for `config` on size x size images."""
    model = model_lib.build(config, steps_per_epoch=100)
    return model, train_state.create(model, config.seed, (size, size, 3), (size, size, 3))


def ours(config, data: list[dict[str, np.ndarray]]):
    """cyclejax's steps: (initial state, per-step results, per-step draws) with the config's dtype
    and conv_impl. Call inside `jax.enable_x64()` for float64."""
    model, state = initial(config, data[0]["A"].shape[1])
    start = jax.device_get(state)
    step = jax.jit(train_step.step_with_intermediates(model),
                   compiler_options=FLOAT64_COMPILER_OPTIONS if config.dtype == "float64" else None)
    nets = ref.networks(config.netG, config.netD, config.ngf, config.ndf, config.n_layers_D, config.norm)
    results, draws = [], []
    for batch in data:
        draws.append(step_draws(model, state, batch))
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
    return start, results, draws


def _parameters(net, arrays: dict) -> dict:
    """The entries of a state dict that are parameters (gradients have no running statistics)."""
    names = dict(net.named_parameters())
    return {k: v for k, v in arrays.items() if k in names}


def step_draws(model, state, batch) -> dict:
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


def official(config, start, data: list[dict[str, np.ndarray]], draws: list[dict], dtype: str):
    """The official iterations from cyclejax's `start` state (its weights as `dtype`) on `data`,
    with `draws` (from `ours`) replayed: per-step results in the layout of `ours`."""
    torch_dtype = TORCH_DTYPES[dtype]
    nets = ref.networks(config.netG, config.netD, config.ngf, config.ndf, config.n_layers_D, config.norm)
    for k, net in nets.items():
        net.to(torch_dtype)
        ref.load_flax(net, start.params[k], start.batch_stats[k])
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


def _group(name: str) -> str:
    return name.split(".")[0]  # 'loss X', 'grads NET', 'state NET'


def _scales(result: dict) -> dict[str, float]:
    """The largest magnitude of each group (a loss; a network's gradients; its state), at least 1."""
    scale: dict[str, float] = {}
    for name, v in tensors(result):
        scale[_group(name)] = max(scale.get(_group(name), 1.0), float(np.abs(v).max()))
    return scale


def check(ours: list[dict], truth: list[dict], lr: float, bound) -> int:
    """Asserts |ours - truth| <= bound(name, truth's array, step) + Adam's slack, element by element,
    for every loss, gradient and state entry of every step; returns how many arrays it checked.

    Adam's slack: a bias-corrected first moment is an average of the gradients so far, and the
    update lr * m / (sqrt(v) + eps) moves by at most lr / eps times a change of it (its
    largest slope, at a gradient of zero), so step t adds lr / eps * (largest |g_ours - g_truth|
    of steps <= t) to what a weight may differ by. That is what lets the bias before an
    instance norm through: its true gradient is zero, each side computes round-off, and Adam
    turns that into +-lr steps of random sign (2e4 times the round-off while it is below eps);
    elsewhere the slack is far below the bound.
    """
    n = 0
    slack: dict[str, np.ndarray] = {}
    gap: dict[str, np.ndarray] = {}
    for step, (a, b) in enumerate(zip(ours, truth)):
        mine, want_all = dict(tensors(a)), dict(tensors(b))
        assert mine.keys() == want_all.keys(), set(mine) ^ set(want_all)
        for name, want in want_all.items():
            if name.startswith("grads "):
                weight = "state " + name.removeprefix("grads ")
                gap[weight] = np.maximum(gap.get(weight, 0.0), np.abs(mine[name] - want))
                slack[weight] = slack.get(weight, 0.0) + lr / 1e-8 * gap[weight]
        for name, want in want_all.items():
            error = np.abs(mine[name] - want)
            allowed = bound(name, want, step) + slack.get(name, 0.0)
            bad = error > allowed
            assert not bad.any(), (f"step {step + 1}: {name}: {bad.sum()} of {bad.size} off, largest error "
                                   f"{error.max():.3g} at |value| {np.abs(want).flat[error.argmax()]:.3g}, "
                                   f"allowed there {np.broadcast_to(allowed, error.shape).flat[error.argmax()]:.3g}")
            n += 1
    return n


def check_float64(ours: list[dict], theirs: list[dict], lr: float, rtol: float = 1e-9, atol: float = 1e-12) -> int:
    """float64 against float64: |ours - theirs| <= atol * scale + rtol |theirs| (+ Adam's slack), the
    scale being the group's largest magnitude where above 1 (a bias before instance norm has a
    zero gradient that each side computes as round-off of the sums it cancels from: 1e-11 in
    an untrained WGAN-GP critic, whose gradients are ~1e3)."""
    scales = [_scales(r) for r in theirs]
    return check(ours, theirs, lr, lambda name, want, step: atol * scales[step][_group(name)] + rtol * np.abs(want))


def check_float32(ours: list[dict], torch32: list[dict], truth: list[dict], lr: float, factor: float = 4.0,
                  floor_ulps: float = 16.0) -> int:
    """float32 against the float64 truth, bounded by torch's own float32 error from the same truth:
    each array's error <= factor * torch's largest error on that array + floor_ulps float32 units of
    the group's largest magnitude (+ Adam's slack). Nothing here depends on the CPU kind: torch
    measures the round-off of this machine's kernels on the same inputs."""
    eps = float(np.finfo(np.float32).eps)
    scales = [_scales(r) for r in truth]
    torch_error = [{name: float(np.abs(v - dict(tensors(t))[name]).max()) for name, v in tensors(r)}
                   for r, t in zip(torch32, truth)]
    return check(ours, truth, lr, lambda name, want, step: factor * torch_error[step][name]
                 + floor_ulps * eps * scales[step][_group(name)])
