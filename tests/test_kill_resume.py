"""Killed at any moment, the train command loses nothing: the same command resumes, and the
final state is bitwise the uninterrupted run's. A damaged latest checkpoint is skipped with a
warning naming it; a workdir of unreadable checkpoints is an error, never a fresh start."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclejax import checkpoints

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 16
# The tiny config's own schedule (20 steps an epoch: the rate is constant for these 16 steps), so
# that these runs share their compiled step with the suite's other tiny runs (the persistent
# compilation cache of tests/conftest.py).
FLAGS = ["--config=cyclejax/configs/default.py:tiny", f"--config.max_steps={TOTAL}",
         "--config.checkpoint_every=2", "--config.sample_every=4", "--config.eval_at_end=True",
         "--config.log_every=4"]


def _train(workdir, *extra, moment=None, timeout=300):
    prefix = ["-m", "tests.kill_points", moment, "--"] if moment else ["-m", "cyclejax.train"]
    return subprocess.run([sys.executable, *prefix, f"--workdir={workdir}", *FLAGS, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _state(workdir):
    mngr = checkpoints.manager(workdir)
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return step, state


def _assert_same_state(a_dir, b_dir):
    (sa, a), (sb, b) = _state(a_dir), _state(b_dir)
    assert sa == sb == TOTAL
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    leaves = jax.tree_util.tree_leaves(same)
    assert len(leaves) > 20 and all(leaves), "the resumed state differs from the uninterrupted one"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run no kill interrupted; it keeps every checkpoint (the damaged-checkpoint test starts
    from a copy of its first 12 steps)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    out = _train(workdir, "--config.keep_checkpoints=0")
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_sigkill_at_seven_moments_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    moments = ["step:3", "save_started:6", "before_commit:10", "sample:12", "restore", "before_commit:16", "eval"]
    # Where each run must resume from, where that is certain: Orbax finishes one save before it
    # starts the next, so a kill in the commit of step N leaves N - 2 as the latest.
    resumes_from = {"sample:12": 8, "eval": 14}
    for moment in moments:
        killed = _train(workdir, moment=moment)
        assert killed.returncode == -signal.SIGKILL, (moment, killed.stdout[-2000:], killed.stderr[-3000:])
        assert f"kill_points: killing at {moment}" in killed.stderr
        assert "Traceback" not in killed.stderr
        if moment in resumes_from:
            assert f"resumed from step {resumes_from[moment]} in" in killed.stdout, (moment, killed.stdout)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == TOTAL  # the eval kill came after the last save
    done = _train(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from step {TOTAL}" in done.stdout
    _assert_same_state(workdir, uninterrupted)
    assert json.loads((workdir / "eval.json").read_text()) == json.loads((uninterrupted / "eval.json").read_text())
    # The half-written grid was written again when step 12 was trained again.
    grids = [(d / "samples" / "step_00000012.png").read_bytes() for d in (workdir, uninterrupted)]
    assert grids[0] == grids[1]


def _truncate_largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    victim = max(files, key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:1000])
    return victim


@pytest.mark.slow
def test_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    # A run stopped after step 12 (the uninterrupted one's files up to there; a resumed run is
    # that run to the bit), whose checkpoint of step 12 is then damaged.
    shutil.copytree(uninterrupted / "checkpoints", workdir / "checkpoints",
                    ignore=lambda folder, names: [n for n in names if n.isdigit() and int(n) > 12])
    _truncate_largest_array_file(workdir / "checkpoints" / "12")
    export = subprocess.run([sys.executable, "-m", "cyclejax.export", f"--workdir={workdir}",
                             f"--output={tmp_path / 'bundle'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert export.returncode == 2 and "Traceback" not in export.stderr, export.stderr[-3000:]
    assert f"error: the checkpoint {workdir / 'checkpoints' / '12'} cannot be read" in export.stderr
    resumed = _train(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint {workdir / 'checkpoints' / '12'} is damaged and was skipped" in resumed.stderr
    assert "resuming from step 10 instead" in resumed.stderr and "resumed from step 10" in resumed.stdout
    assert "Traceback" not in resumed.stderr  # Orbax's abandoned reads are not shown
    assert [p.name.split("-")[0] for p in (workdir / "damaged_checkpoints").iterdir()] == ["12"]
    _assert_same_state(workdir, uninterrupted)

    # Every checkpoint unreadable: an error naming the folder, not a silent start from step 0.
    for step_dir in (workdir / "checkpoints").iterdir():
        if step_dir.name.isdigit():
            _truncate_largest_array_file(step_dir)
    refused = _train(workdir)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{workdir / 'checkpoints'} holds checkpoints of steps" in errors[0], refused.stderr
    assert "none can be read" in errors[0] and "Traceback" not in refused.stderr
