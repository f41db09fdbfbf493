"""train_and_evaluate: exact resume and the architecture check (the eval report: test_train_cli.py)."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclejax import checkpoints, train
from tests.conftest import tiny_train_config


def _final_params(workdir):
    mngr = checkpoints.manager(workdir)
    step = mngr.latest_step()
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return step, restored["state"]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path):
    straight = train.train_and_evaluate(tiny_train_config(max_steps=12), tmp_path / "straight")
    first = train.train_and_evaluate(tiny_train_config(max_steps=6), tmp_path / "resumed")
    second = train.train_and_evaluate(tiny_train_config(max_steps=12), tmp_path / "resumed")
    assert first["step"] == 6 and second["step"] == straight["step"] == 12
    step_a, a = _final_params(tmp_path / "straight")
    step_b, b = _final_params(tmp_path / "resumed")
    assert step_a == step_b == 12
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    assert all(jax.tree_util.tree_leaves(same)), "resumed state differs from the uninterrupted one"
    assert second["metrics"] == straight["metrics"]
    assert int(a["pool_A"]["count"]) == 5 and int(a["step"]) == 12

    # The same workdir with another architecture is refused by name, before any training.
    with pytest.raises(checkpoints.CheckpointMismatch, match="ngf: checkpoint 4, config 8"):
        train.train_and_evaluate(tiny_train_config(max_steps=14, ngf=8), tmp_path / "resumed")
    assert _final_params(tmp_path / "resumed")[0] == 12
