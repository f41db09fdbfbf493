"""train_and_evaluate: exact resume, architecture mismatch, the default eval report."""
import json

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


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    train.train_and_evaluate(tiny_train_config(max_steps=1), tmp_path)
    with pytest.raises(checkpoints.CheckpointMismatch, match="ngf: checkpoint 4, config 8"):
        train.train_and_evaluate(tiny_train_config(max_steps=2, ngf=8), tmp_path)


@pytest.mark.slow
def test_embedded_run_writes_eval_report_and_samples(tmp_path):
    result = train.train_and_evaluate(tiny_train_config(max_steps=2, sample_every=2, eval_at_end=True), tmp_path)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["step"] == 2 and result["eval"] == report
    for d in ("AtoB", "BtoA"):
        assert set(report[d]) == {"model", "identity", "colour_transfer"}
        assert report[d]["identity"] > report[d]["colour_transfer"] > 0
    assert (tmp_path / "samples" / "step_00000002.png").exists()
    assert list(tmp_path.glob("events.out.tfevents.*"))
