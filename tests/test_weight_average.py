"""The generators' weight average (config.ema_decay): what it holds, and that keeping it changes no step.

Resumed runs keep it bitwise (tests/test_train.py, tests/test_kill_resume.py: the tiny config
keeps one, as the quick-start does); exports and the end-of-run score use it
(tests/test_export_cli.py).
"""
import dataclasses
import json

import flax.struct
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclejax import checkpoints, config_check, parallel, train_step
from cyclejax.config_check import ConfigError
from tests import steps
from tests.conftest import tiny_config

SIZE = 32


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_the_average_is_the_moving_average_of_every_steps_weights():
    """In float64, against the average computed here from each step's weights: after step t
    (0-based) a <- k a + (1 - k) w_t, k = min(ema_decay, (1 + t) / (10 + t)), from the initial
    weights. A decay of 0.3 is the cap from step 3 on, so both branches of the min are taken."""
    decay, n = 0.3, 6
    with jax.enable_x64(True):
        config = tiny_config(dtype="float64", ema_decay=decay)
        model, state = steps.initial(config, SIZE)
        step = jax.jit(train_step.make_train_step(model))
        want = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), jax.device_get(state.g_params))
        assert all(np.array_equal(a, b) for a, b in zip(_leaves(state.ema), _leaves(want)))
        for t, batch in enumerate(steps.batches(n, 1, SIZE, dtype=np.float64)):
            state, _ = step(state, batch)
            k = min(decay, (1 + t) / (10 + t))
            want = jax.tree_util.tree_map(lambda a, w: k * a + (1 - k) * np.asarray(w), want,
                                          jax.device_get(state.g_params))
            got = jax.device_get(state.ema)
            assert set(got) == {"G_A", "G_B"}
            for a, b in zip(_leaves(got), _leaves(want)):
                assert a.dtype == np.float64
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        # The average is not the last weights: translations see something else.
        last = _leaves(state.g_params)
        assert max(float(np.max(np.abs(a - w))) for a, w in zip(_leaves(state.ema), last)) > 1e-4
        assert state.translation_params["G_A"] is state.ema["G_A"]
        assert state.translation_params["D_A"] is state.params["D_A"]


def test_keeping_the_average_changes_no_step():
    """The compiled step with and without the average: the same losses and weights, bit for bit."""
    runs = {}
    mesh = parallel.make_mesh()
    data = steps.batches(3, 1, SIZE)
    for decay in (0.0, 0.999):
        model, state = steps.initial(tiny_config(ema_decay=decay), SIZE)
        state = parallel.replicate(state, mesh)
        step = train_step.jit_train_step(model, mesh)
        history = []
        for batch in data:
            state, metrics = step(state, parallel.shard_batch(batch, mesh))
            history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        runs[decay] = history, jax.device_get(state)
    (h0, s0), (h1, s1) = runs[0.0], runs[0.999]
    assert s0.ema == {} and set(s1.ema) == {"G_A", "G_B"}
    assert h0 == h1
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(s0.params), _leaves(s1.params)))
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(s0.translation_params),
                                      jax.tree_util.tree_leaves(s0.params)))  # no average: the last weights


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused_by_name(decay):
    with pytest.raises(ConfigError, match=rf"config.ema_decay={decay} must be in \[0, 1\)"):
        config_check.validate(tiny_config(ema_decay=decay), 1)


def test_a_checkpoint_from_before_the_average_resumes(tmp_path):
    """A run of the paper configs (no average) checkpointed before the train state had its `ema`
    field resumes as it was saved; with the average asked for, it is a mismatch named by key."""
    config = tiny_config("paper,tiny")
    model, state = steps.initial(config, SIZE)
    state = state.replace(step=state.step + 7)
    fields = [f.name for f in dataclasses.fields(state) if f.name != "ema"]
    # The TrainState as it was, without `ema`.
    Old = flax.struct.dataclass(type("TrainState", (), {"__annotations__": dict.fromkeys(fields, object)}))
    old = Old(**{name: getattr(state, name) for name in fields})
    mngr = checkpoints.manager(tmp_path)
    mngr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(old),
                                         config=ocp.args.JsonSave(json.loads(config.to_json()))))
    mngr.wait_until_finished()
    fresh = steps.initial(config, SIZE)[1]
    restored = checkpoints.restore_latest(mngr, fresh, config)
    assert int(restored.step) == 7 and restored.ema == {}
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(restored), _leaves(state)))
    with pytest.raises(checkpoints.CheckpointMismatch, match=r"made with ema_decay=0.0 and holds no average"):
        checkpoints.restore_latest(mngr, fresh, tiny_config("paper,tiny", ema_decay=0.999))
    mngr.close()
