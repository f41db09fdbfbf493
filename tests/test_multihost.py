"""Several processes train one model: two local processes on loopback (CPU, gloo collectives), each
with 2 devices, resume a checkpoint of one process with 4 devices and reach the state that process
reaches; checkpoints move between topologies (one process -> two, two -> this test's single device)."""
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cyclejax import checkpoints
from cyclejax import model as model_lib
from tests.conftest import tiny_config
from tests.inert import inert_biases
from tests.steps import FLOAT64_COMPILER_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
# In float64 (x64 on), so that the two topologies' different summation orders (gloo's
# all-reduce across processes against one process's) leave round-off far below what a
# difference in the data or the arithmetic would show, on every CPU kind: in float32, Adam
# amplified that round-off in parameters with tiny gradients to 3e-6 on one CPU, 1.5e-7 on another.
OFFICIAL_D = dict(netD="basic", n_layers_D=3, lr=2e-4, dtype="float64")
TINY = ["--config=cyclejax/configs/default.py:tiny", "--config.batch_size=4", "--config.log_every=1",
        *(f"--config.{k}={v}" for k, v in OFFICIAL_D.items())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, x64: bool = False) -> dict:
    """`devices` CPU devices a process; with `x64`, 64-bit JAX and XLA's code at LLVM's optimisation
    level 0 (tests/steps.py: the float64 runs compile faster, their rounding is float64's)."""
    flags = [f"--xla_force_host_platform_device_count={devices}"]
    if x64:
        flags += [f"--{k}={v}" for k, v in FLOAT64_COMPILER_OPTIONS.items()]
    return dict(os.environ, XLA_FLAGS=" ".join(flags), PYTHONUNBUFFERED="1", JAX_ENABLE_X64="1" if x64 else "0")


def run_processes(cmd: list[str], processes: int, devices: int, x64: bool = False) -> list[str]:
    """`cmd` as `processes` local processes of one JAX cluster on loopback, each with `devices` CPU
    devices and its --coordinator_address, --num_processes and --process_id flags: their stdouts."""
    port = _free_port()
    procs = [subprocess.Popen(cmd + [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
                                     f"--process_id={i}"], cwd=ROOT, env=_env(devices, x64), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
            outs.append(stdout)
    finally:
        for p in procs:
            p.kill()
    return outs


def _train(workdir, processes: int, steps: int) -> list[str]:
    cmd = [sys.executable, "-m", "cyclejax.train", f"--workdir={workdir}", *TINY, f"--config.max_steps={steps}",
           "--config.checkpoint_every=3"]
    if processes == 1:
        out = subprocess.run(cmd, cwd=ROOT, env=_env(4, x64=True), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return [out.stdout]
    return run_processes(cmd, processes=2, devices=2, x64=True)


def _state(workdir):
    mngr = ocp.CheckpointManager(Path(workdir) / "checkpoints", options=ocp.CheckpointManagerOptions(read_only=True))
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=checkpoints.restore_anywhere()))["state"]
    mngr.close()
    return step, jax.tree_util.tree_map(np.asarray, state)


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # One process with 4 devices trains 5 steps, saving steps 3 and 5; two processes with 2
    # devices each resume its checkpoint of step 3 (written by one process) and train steps 4
    # and 5. A resumed run is the uninterrupted one to the bit (tests/test_kill_resume.py), so
    # both reach step 5 from the same state by the same two steps; one command fewer than
    # running the one process to 3 and resuming it too.
    _train(one, processes=1, steps=5)
    shutil.copytree(one, two)
    shutil.rmtree(two / "checkpoints" / "5")
    outs = _train(two, processes=2, steps=5)
    assert "4 devices, 2 process(es)" in outs[0] and "resumed from step 3" in outs[0] and "step 5/" in outs[0]
    # Only process 0 prints, logs and writes samples. Gloo announces its connections itself, from
    # several threads, one fragment at a time, so its lines can interleave: take its fragments out
    # and what is left must be the numbers it printed between them.
    rest = outs[1]
    for fragment in ("[Gloo] Rank ", " is connected to ", " peer ranks. ",
                     "Expected number of connected peer ranks is : "):
        rest = rest.replace(fragment, " ")
    assert re.fullmatch(r"[\d\s]*", rest), outs[1]
    # The checkpoint the two processes wrote restores in this process (one device), in float64.
    with jax.enable_x64(True):
        (step_2, a), (step_1, b) = _state(two), _state(one)
        assert step_2 == step_1 == 5
        assert a["params"]["G_A"]["model_1"]["kernel"].dtype == np.float64
        # Conv biases before instance norm have a zero true gradient, so Adam turns round-off
        # into +-lr steps of random sign there (tests/inert.py), even in float64; they are left
        # out, and the networks' outputs compared instead.
        config = tiny_config(**OFFICIAL_D)
        model = model_lib.build(config, steps_per_epoch=20)
        x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3))
        worst_param, worst_output = 0.0, 0.0
        for name in ("G_A", "G_B", "D_A", "D_B"):
            net = getattr(model, name)
            inert = inert_biases(net, b["params"][name], x)
            flat_b = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(b["params"][name])}
            for path, v in jax.tree_util.tree_leaves_with_path(a["params"][name]):
                if jax.tree_util.keystr(path) not in inert:
                    w = flat_b[jax.tree_util.keystr(path)]
                    worst_param = max(worst_param, float(np.max(np.abs(v - w)) / max(np.max(np.abs(w)), 1e-3)))
            outs = [np.asarray(net.apply({"params": s["params"][name]}, x, train=True)) for s in (a, b)]
            worst_output = max(worst_output, float(np.max(np.abs(outs[0] - outs[1]))))
    # Relative to each tensor's largest weight; a shard or a mean taken wrong moves weights by
    # about the rate (2e-4 a step, 1e-2 of their scale) and outputs by 1e-3 or more.
    assert worst_param <= 1e-9 and worst_output <= 1e-9, (worst_param, worst_output)
    np.testing.assert_array_equal(a["pool_A"]["count"], b["pool_A"]["count"])
