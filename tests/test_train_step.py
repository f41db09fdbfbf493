"""One whole compiled train step of a tiny CycleGAN against the official PyTorch iteration."""
import re

import jax
import numpy as np
import pytest
import torch

from cyclejax import model as model_lib
from cyclejax import onednn, parallel, train_state, train_step
from tests import conftest
from tests.conftest import impls
from tests import steps
from tests import torch_reference as ref
from tests.inert import NamingApplier, instance_norm_roundoff

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)

SIZE = 32


def tiny_config(**overrides):
    # The official defaults (the quick-start config changes the discriminator and the rate).
    return conftest.tiny_config("paper,tiny", **overrides)


def _batch(seed, n=2):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32) for k in "AB"}


def _watch_instance_norms(nets):
    """For each conv bias that feeds an instance norm: sum over pixels of |dL/dy| / sigma per channel.

    Instance norm subtracts the per-channel mean, so such a bias's true gradient is exactly
    zero and what is computed is round-off of the sum over pixels of the gradient that reaches
    the conv output, g = (dL/dy - mean terms) / sigma: at most a few float32 eps of
    sum |dL/dy| / sigma, summed over every call of the network.
    """
    scale = {}

    def hook_for(name, key):
        def hook(module, inputs, output):
            sigma = inputs[0].detach().var(dim=(2, 3), unbiased=False, keepdim=True).add(module.eps).sqrt()

            def on_grad(g):
                s = (g.detach().abs() / sigma).sum(dim=(0, 2, 3)).numpy().astype(np.float64)
                scale[name][key] = scale[name].get(key, 0.0) + s

            if output.requires_grad:
                output.register_hook(on_grad)
        return hook

    for name, net in nets.items():
        scale[name] = {}
        for module_name, module in net.named_modules():
            if isinstance(module, (torch.nn.ReLU, torch.nn.LeakyReLU)):
                module.inplace = False  # same values; an in-place activation would hide the norm's output gradient
            if isinstance(module, torch.nn.InstanceNorm2d):
                prefix, _, index = module_name.rpartition(".")
                module.register_forward_hook(hook_for(name, f"{prefix}.{int(index) - 1}.bias"))
    return scale


def _torch_iteration(config, params, batch):
    """The official optimize_parameters() on the same weights: losses, gradients, new weights, and
    the round-off scale of the biases before instance norm (`_watch_instance_norms`)."""
    torch.manual_seed(0)
    nets = ref.networks(config.netG, config.netD, config.ngf, config.ndf, config.n_layers_D)
    for k, net in nets.items():
        ref.load_flax(net, params[k])
    roundoff = _watch_instance_norms(nets)
    it = ref.OfficialIteration(nets, lr=config.lr, beta1=config.beta1, lambda_A=config.lambda_A,
                               lambda_B=config.lambda_B, lambda_identity=config.lambda_identity)
    it.set_input(ref.nchw(batch["A"]), ref.nchw(batch["B"]))
    # optimize_parameters(), step by step, to reset the round-off watch between G and D.
    it.forward()
    it.set_requires_grad(it.D, False)
    it.opt_G.zero_grad()
    it.backward_G()
    it.opt_G.step()
    for name in ("D_A", "D_B"):
        roundoff[name].clear()  # the gradient that reached D while updating G is not D's
    it.set_requires_grad(it.D, True)
    it.opt_D.zero_grad()
    it.backward_D()
    it.opt_D.step()
    loss = it.loss
    grads = {k: {n: p.grad.numpy().copy() for n, p in net.named_parameters()} for k, net in nets.items()}
    weights = {k: {n: p.detach().numpy().copy() for n, p in net.named_parameters()} for k, net in nets.items()}
    return {k: float(v.detach()) for k, v in loss.items()}, grads, weights, nets, roundoff


@pytest.fixture(scope="module")
def one_step():
    """One step of the tiny model with the default conv_impl ('auto': oneDNN's where built), then
    two more. Every conv_impl's step is checked against the float64 truth below (and in float64,
    tests/test_exactness.py); what uses this fixture does not depend on the convolutions."""
    config = tiny_config()
    model = model_lib.build(config, steps_per_epoch=10)
    state = train_state.create(model, 0, (SIZE, SIZE, 3), (SIZE, SIZE, 3))
    initial = jax.tree_util.tree_map(np.asarray, state.params)
    mesh = parallel.make_mesh(jax.devices()[:1])
    step = train_step.jit_train_step(model, mesh)
    batch = _batch(0)
    new_state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
    result = config, initial, batch, jax.device_get(new_state), jax.device_get(metrics)
    # Later steps reuse the first compilation (the state comes back with the same shardings):
    # neither a trace nor a compilation happens after the first step.
    events = []
    listener = lambda event, duration, **kw: events.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for seed in (1, 2):
            new_state, _ = step(new_state, parallel.shard_batch(_batch(seed), mesh))
        jax.block_until_ready(new_state)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not [e for e in events if e.startswith("/jax/core/compile/")], events
    assert int(new_state.step) == 3
    return result


@pytest.fixture(scope="module")
def official():
    """The official iteration from the tiny model's float32 weights on the first batch, with the
    step's draws: in float64 (the truth) and in float32. The same for every conv_impl."""
    config = tiny_config()
    data = [_batch(0)]
    model, state = steps.initial(config, SIZE)
    draws = [steps.step_draws(model, state, data[0])]
    start = jax.device_get(state)
    return {dtype: steps.official(config, start, data, draws, dtype) for dtype in ("float64", "float32")}


@pytest.mark.parametrize("conv_impl", impls())
def test_one_step_is_as_close_to_the_float64_truth_as_torch_float32_is(conv_impl, official):
    """Losses, every gradient, every updated weight of one step in float32: within 4 times torch's
    own float32 error from the float64 truth (the same weights and batch), plus 16 float32 units of
    the network's largest value (tests/steps.py: check_float32). A tolerance measured, not tuned:
    on an AVX2-only CPU a poorly conditioned gradient (G_A's first layer, before instance norm)
    is 1.5 % off in both, and passes; a wrong tap or update rule is off by far more everywhere."""
    config = tiny_config(conv_impl=conv_impl)
    _, ours, _ = steps.ours(config, [_batch(0)])
    assert steps.check_float32(ours, official["float32"], official["float64"], config.lr) > 100
    assert float(ours[0]["losses"]["cycle_A"]) > 0.1  # a real step, not zeros on both sides


def test_instance_norm_roundoff_measures_what_the_torch_hooks_measure(one_step):
    """tests/inert.py's JAX form of `_watch_instance_norms`, on the same weights and batch: the same
    round-off scale for every bias before instance norm, of the generators and the discriminators."""
    config, initial, batch, _, _ = one_step
    *_, theirs = _torch_iteration(config, initial, batch)
    model = model_lib.build(config, steps_per_epoch=10)
    key, stats = jax.random.PRNGKey(0), {k: {} for k in initial}
    nets = lambda kind: {k: v for k, v in initial.items() if k.startswith(kind)}  # noqa: E731
    apply = jax.jit(lambda g, x: model_lib.apply_train_mode(getattr(model, g), initial[g], {}, x), static_argnums=0)
    fake_B, fake_A = (apply(g, batch[d]) for g, d in (("G_A", "A"), ("G_B", "B")))
    g_scales = instance_norm_roundoff(
        lambda a, b: train_step.generator_loss(nets("G"), nets("D"), NamingApplier(model, stats, key), a, b)[0],
        ("G_A", "G_B"))
    d_scales = instance_norm_roundoff(
        lambda a, b: train_step.discriminator_loss(nets("D"), NamingApplier(model, stats, key), a, b, fake_A, fake_B,
                                                   key)[0],
        ("D_A", "D_B"))
    ours = {**g_scales(batch["A"], batch["B"]), **d_scales(batch["A"], batch["B"])}
    for name, scales in ours.items():
        torch_keys = {re.sub(r"_(\d+)", r".\1", k).replace("/", "."): v for k, v in scales.items()}
        assert set(torch_keys) == set(theirs[name]), name
        for key_, scale in torch_keys.items():
            np.testing.assert_allclose(scale, theirs[name][key_], rtol=1e-2, err_msg=f"{name}.{key_}")


def test_step_counter_and_pools_advance(one_step):
    _, _, batch, new_state, _ = one_step
    assert int(new_state.step) == 1
    assert int(new_state.pool_A.count) == 2 and int(new_state.pool_B.count) == 2


def test_wgangp_batch_norm_step_adds_the_penalty_and_updates_running_statistics():
    """The other options in one step: gradient penalty, norm='batch' statistics, no identity, no pool."""
    config = tiny_config(gan_mode="wgangp", norm="batch", no_dropout=True, pool_size=0, lambda_identity=0.0)
    model = model_lib.build(config, steps_per_epoch=10)
    state = jax.device_get(train_state.create(model, 0, (SIZE, SIZE, 3), (SIZE, SIZE, 3)))  # kept: the step donates
    mesh = parallel.make_mesh(jax.devices()[:1])
    new_state, metrics = train_step.jit_train_step(model, mesh)(parallel.replicate(state, mesh),
                                                                  parallel.shard_batch(_batch(0), mesh))
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["idt_A"]) == 0.0 and float(metrics["idt_B"]) == 0.0
    # D_A = 0.5 * (-mean D_A(real_B) + mean D_A(fake_B)) + penalty, with fake_B = G_A(real_A) before the update.
    batch = _batch(0)
    run = lambda k, x: np.asarray(model_lib.apply_train_mode(getattr(model, k), state.params[k],  # noqa: E731
                                                             state.batch_stats[k], x))
    critic = 0.5 * (-run("D_A", batch["B"]).mean() + run("D_A", run("G_A", batch["A"])).mean())
    assert float(metrics["D_A"]) - critic > 1e-4  # the gradient penalty is in
    before = np.asarray(state.batch_stats["G_A"]["model_2"]["mean"])
    after = np.asarray(jax.device_get(new_state.batch_stats["G_A"]["model_2"]["mean"]))
    assert not np.allclose(before, after)
    assert new_state.pool_A.size == 0 and new_state.pool_A.images is None  # no pool, no array


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_compiler_options_take_the_memory_scheduler_for_large_convolutions(monkeypatch):
    """The tiny model's largest convolutions, the 7x7 layers from and to 3 channels with
    ngf = 4, take 2 * 256² * 4 * 3 * 49 = 77 MFLOP a sample at 256x256: XLA's defaults for a
    batch of 2, the memory-minimising scheduler for a batch of 33 per device (2,545 MFLOP).
    Without the lock, or without oneDNN, no change."""
    mflop = 2 * 256**2 * 4 * 3 * 49 / 1e6
    assert 2 * mflop < train_step.MEMORY_SCHEDULER_MFLOP <= 33 * mflop
    model = model_lib.build(tiny_config(conv_impl="onednn"), steps_per_epoch=10)
    memory = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    shape = (256, 256, 3)
    assert train_step.compiler_options(model, shape, shape, 2) == {}
    assert train_step.compiler_options(model, shape, shape, 33) == memory
    xla = model_lib.build(tiny_config(conv_impl="xla"), steps_per_epoch=10)
    assert train_step.compiler_options(xla, shape, shape, 33) == {}
    monkeypatch.setattr(onednn, "serial_limit_mflop", lambda: -1.0)
    assert train_step.compiler_options(model, shape, shape, 33) == {}


def test_the_memory_scheduler_changes_no_number():
    """The scheduler orders the same computations: one step gives bit for bit the same state
    (and the option does reach XLA: the programs' temporary buffers differ)."""
    model = model_lib.build(tiny_config(), steps_per_epoch=10)
    state = jax.device_get(train_state.create(model, 0, (SIZE, SIZE, 3), (SIZE, SIZE, 3)))
    mesh = parallel.make_mesh(jax.devices()[:1])
    results, temp = [], []
    for options in (None, {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}):
        args = parallel.replicate(state, mesh), parallel.shard_batch(_batch(0), mesh)
        compiled = train_step.jit_train_step(model, mesh, options).lower(*args).compile()
        temp.append(compiled.memory_analysis().temp_size_in_bytes)
        results.append(jax.tree_util.tree_leaves(jax.device_get(compiled(*args))))
    assert temp[0] != temp[1]
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
