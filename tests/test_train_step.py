"""One whole compiled train step of a tiny CycleGAN against the official PyTorch iteration."""
import jax
import numpy as np
import pytest
import torch

from cyclejax import model as model_lib
from cyclejax import parallel, train_state
from cyclejax.configs import default
from cyclejax.train_step import METRICS
from tests import torch_reference as ref

SIZE = 32


def tiny_config(**overrides):
    # The official defaults (the quick-start config changes the discriminator and the rate).
    c = default.paper()
    c.netG, c.ngf, c.ndf = "resnet_6blocks", 4, 4
    c.update(overrides)
    return c


def _batch(seed, n=2):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32) for k in "AB"}


def _torch_iteration(config, params, batch):
    """The official optimize_parameters() on the same weights: losses, gradients, new weights."""
    torch.manual_seed(0)
    nets = {
        "G_A": ref.ResnetGenerator(ngf=config.ngf, n_blocks=6),
        "G_B": ref.ResnetGenerator(ngf=config.ngf, n_blocks=6),
        "D_A": ref.NLayerDiscriminator(ndf=config.ndf, n_layers=config.n_layers_D),
        "D_B": ref.NLayerDiscriminator(ndf=config.ndf, n_layers=config.n_layers_D),
    }
    for k, net in nets.items():
        ref.load_flax(net, params[k])
    G = list(nets["G_A"].parameters()) + list(nets["G_B"].parameters())
    D = list(nets["D_A"].parameters()) + list(nets["D_B"].parameters())
    opt_G = torch.optim.Adam(G, lr=config.lr, betas=(config.beta1, 0.999))
    opt_D = torch.optim.Adam(D, lr=config.lr, betas=(config.beta1, 0.999))
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    real_A, real_B = ref.nchw(batch["A"]), ref.nchw(batch["B"])
    lA, lB, li = config.lambda_A, config.lambda_B, config.lambda_identity

    fake_B = nets["G_A"](real_A)
    rec_A = nets["G_B"](fake_B)
    fake_A = nets["G_B"](real_B)
    rec_B = nets["G_A"](fake_A)
    for p in D:
        p.requires_grad_(False)
    opt_G.zero_grad()
    loss = {}
    loss["idt_A"] = l1(nets["G_A"](real_B), real_B) * lB * li
    loss["idt_B"] = l1(nets["G_B"](real_A), real_A) * lA * li
    pred = nets["D_A"](fake_B)
    loss["G_A"] = mse(pred, torch.ones_like(pred))
    pred = nets["D_B"](fake_A)
    loss["G_B"] = mse(pred, torch.ones_like(pred))
    loss["cycle_A"] = l1(rec_A, real_A) * lA
    loss["cycle_B"] = l1(rec_B, real_B) * lB
    sum(loss.values()).backward()
    opt_G.step()
    for p in D:
        p.requires_grad_(True)
    opt_D.zero_grad()
    for name, real, fake in (("D_A", real_B, fake_B), ("D_B", real_A, fake_A)):
        p_real, p_fake = nets[name](real), nets[name](fake.detach())
        loss[name] = 0.5 * (mse(p_real, torch.ones_like(p_real)) + mse(p_fake, torch.zeros_like(p_fake)))
        loss[name].backward()
    opt_D.step()
    grads = {k: {n: p.grad.numpy().copy() for n, p in net.named_parameters()} for k, net in nets.items()}
    weights = {k: {n: p.detach().numpy().copy() for n, p in net.named_parameters()} for k, net in nets.items()}
    return {k: float(v.detach()) for k, v in loss.items()}, grads, weights, nets


@pytest.fixture(scope="module")
def one_step():
    config = tiny_config()
    model = model_lib.build(config, steps_per_epoch=10)
    state = train_state.create(model, 0, (SIZE, SIZE, 3), (SIZE, SIZE, 3))
    initial = jax.tree_util.tree_map(np.asarray, state.params)
    mesh = parallel.make_mesh(jax.devices()[:1])
    step = parallel.compile_train_step(model, mesh)
    batch = _batch(0)
    new_state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
    result = config, initial, batch, jax.device_get(new_state), jax.device_get(metrics)
    # Later steps reuse the first compilation (the state comes back with the same shardings).
    for seed in (1, 2):
        new_state, _ = step(new_state, parallel.shard_batch(_batch(seed), mesh))
    assert step._cache_size() == 1
    assert int(new_state.step) == 3
    return result


def test_losses_equal_the_official_iteration(one_step):
    config, initial, batch, _, metrics = one_step
    theirs, _, _, _ = _torch_iteration(config, initial, batch)
    assert set(metrics) == set(METRICS) | {"lr"}
    for name in METRICS:
        assert float(metrics[name]) == pytest.approx(theirs[name], rel=1e-4, abs=1e-6), name
    assert float(metrics["lr"]) == pytest.approx(config.lr)


def test_gradients_and_updates_equal_the_official_iteration(one_step):
    config, initial, batch, new_state, _ = one_step
    _, grads, weights, nets = _torch_iteration(config, initial, batch)
    # After Adam's first step its first moment is (1 - beta1) * gradient.
    mu = {**new_state.opt_state_G[0].mu, **new_state.opt_state_D[0].mu}
    for name, net in nets.items():
        our_grads = ref.flax_to_torch(net, jax.tree_util.tree_map(lambda m: m / (1 - config.beta1), mu[name]))
        our_weights = ref.flax_to_torch(net, new_state.params[name])
        for key, g in grads[name].items():
            scale = max(np.abs(g).max(), 1e-2)  # round-off gradients (~1e-7) get an absolute floor
            np.testing.assert_allclose(our_grads[key], g, atol=2e-4 * scale, rtol=0, err_msg=f"{name}.{key}")
            # Adam's first step moves each weight by about lr * sign(g); where the gradient is
            # round-off (a bias before instance norm) the sign is noise, so compare the rest.
            solid = np.abs(g) > 1e-5
            np.testing.assert_allclose(our_weights[key][solid], weights[name][key][solid], atol=1e-6, err_msg=f"{name}.{key}")
            assert np.all(np.abs(our_weights[key] - ref.flax_to_torch(net, initial[name])[key]) <= config.lr * 1.001)


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
    new_state, metrics = parallel.compile_train_step(model, mesh)(parallel.replicate(state, mesh),
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
    assert new_state.pool_A.images.shape[0] == 0
