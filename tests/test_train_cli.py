"""The real command line, end to end: a preemption (SIGTERM), a resume."""
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from cyclejax import onednn
from tests.isa import AVX2_CAP

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config=cyclejax/configs/default.py:tiny", "--config.log_every=2"]


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "cyclejax.train", f"--workdir={workdir}", *TINY, *extra]


@pytest.mark.slow
def test_preemption_then_resume_through_the_command_line(tmp_path):
    """A SIGTERM (a TPU VM's preemption notice) makes the command save the step it reached and
    exit with 0; the same command then resumes from there. (SIGKILL at any moment, then a
    resume: tests/test_kill_resume.py.)"""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ckpt = tmp_path / "checkpoints"
    proc = subprocess.Popen(_cmd(tmp_path, "--config.checkpoint_every=1000", "--config.n_epochs=1000",
                                 "--config.eval_at_end=False"),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    watchdog = threading.Timer(300, proc.kill)  # a run that stops printing: readline returns "" when it is killed
    watchdog.start()
    try:
        while line := proc.stdout.readline():
            seen.append(line)
            if line.startswith("step "):
                break
    finally:
        watchdog.cancel()
    assert proc.poll() is None, "".join(seen)[-3000:]
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    log = "".join(seen) + rest
    assert proc.returncode == 0, log[-3000:]
    assert "resumed from step" not in log
    preempted_at = int(log.split("preempted (SIGTERM) at step ")[1].split(":")[0])
    assert preempted_at >= 2 and (ckpt / str(preempted_at)).is_dir()

    # The same command again (stopping 4 steps later) resumes from the preempted step's checkpoint.
    target = preempted_at + 4
    out = subprocess.run(_cmd(tmp_path, "--config.checkpoint_every=2", "--config.n_epochs=1000",
                              f"--config.max_steps={target}",
                              "--config.sample_every=2", "--config.eval_at_end=True"),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"resumed from step {preempted_at}" in out.stdout
    assert f"step {target}/{target}" in out.stdout  # plain log lines when not on a terminal
    assert "ratio = model / better baseline" in out.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["step"] == target
    for d in ("AtoB", "BtoA"):
        assert set(report[d]) == {"model", "identity", "colour_transfer"}
        assert report[d]["identity"] > report[d]["colour_transfer"] > 0
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # one writer per process run
    grid = Image.open(tmp_path / "samples" / f"step_{target:08d}.png")
    assert grid.size[1] == 4 * 32 and grid.size[0] == 6 * 34


@pytest.mark.slow
def test_bad_config_value_is_refused_before_compiling(tmp_path):
    cmd = _cmd(tmp_path, "--config.netG=resnet_12blocks")
    out = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "config.netG='resnet_12blocks' is not allowed" in out.stderr
    assert not (tmp_path / "checkpoints").exists()
    assert _imported(out.stderr, "jax", "flax") == ["jax", "flax"]  # the report is read right
    assert not _imported(out.stderr, "tensorflow", "orbax.checkpoint")  # refused before they load


@pytest.mark.slow
@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
def test_bfloat16_on_an_avx2_cpu_trains_and_an_explicit_onednn_is_one_error(tmp_path):
    """With the instruction set capped to AVX2 (as on a Zen 3, where oneDNN has no bfloat16
    convolutions): conv_impl='auto' trains in bfloat16 on oneDNN's float32 kernels (and would take
    Winograd's form for large 3x3 layers) and says so; conv_impl='onednn' is one error line naming
    what the CPU lacks, before anything compiles."""
    env = {**os.environ, **AVX2_CAP}
    out = subprocess.run(_cmd(tmp_path / "auto", "--config.dtype=bfloat16", "--config.max_steps=2"), cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "convolutions: oneDNN's, float32 kernels on the bfloat16 operands (" in out.stdout
    assert "; Winograd's F(2x2, 3x3) for the 3x3 layers of 600 MFLOP or more (oneDNN runs AVX2" in out.stdout
    assert "step 2/2" in out.stdout
    out = subprocess.run(_cmd(tmp_path / "onednn", "--config.dtype=bfloat16", "--config.conv_impl=onednn"),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    # The cap is named where the CPU has AVX-512; on an AVX2-only CPU the missing flags are.
    [line] = out.stderr.splitlines()
    assert line.startswith("error: config.conv_impl='onednn' cannot run in bfloat16: "), line
    assert ("ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below avx512_core" in line
            or "this CPU lacks AVX-512 (avx512bw" in line), line
    assert not (tmp_path / "onednn" / "checkpoints").exists()


@pytest.mark.parametrize("flag, message", [
    ("--config.ngff=3", '--config.ngff: the config has no key \'ngff\'; did you mean "ngf"?'),
    ("--config.ngf=abc", "--config.ngf=abc: invalid literal for int()"),
    ("--config=nothing.py", "nothing.py"),
    ("--workdirr=x", "Unknown command line flag 'workdirr'"),
])
def test_flag_and_config_key_mistakes_are_one_line(tmp_path, flag, message):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "cyclejax.train", f"--workdir={tmp_path}", flag],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "checkpoints").exists()
    # Refused before TensorFlow and Orbax load (seconds of a run's start-up).
    loaded = _imported(out.stderr, "tensorflow", "orbax.checkpoint")
    assert not loaded, loaded


def _imported(importtime: str, *modules) -> list[str]:
    """Which of `modules` a process's `python -X importtime` report (its stderr) shows imported."""
    names = {line.rsplit("|", 1)[-1].strip() for line in importtime.splitlines() if line.startswith("import time:")}
    return [m for m in modules if m in names]


@pytest.mark.slow
def test_commands_show_only_their_own_lines_unless_asked(tmp_path):
    """TensorFlow's start-up lines and Orbax's INFO lines are hidden; --verbosity=0 brings them back."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    train = subprocess.run(_cmd(tmp_path / "run", "--config.max_steps=2"), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert train.stderr == ""
    assert train.stdout.splitlines()[0].startswith("cyclejax: training embedded into ")
    export = [sys.executable, "-m", "cyclejax.export", f"--workdir={tmp_path / 'run'}"]
    quiet = subprocess.run(export + [f"--output={tmp_path / 'b1'}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]
    assert quiet.stdout.startswith("cyclejax: wrote ")
    loud = subprocess.run(_cmd(tmp_path / "run", "--config.max_steps=4", "--verbosity=0"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr[-2000:]
    # Orbax's INFO lines come back on every CPU (TensorFlow's start-up lines depend on the CPU kind:
    # "oneDNN custom operations are on" is printed on AVX-512 CPUs, not on an AVX2-only Zen 3).
    assert "orbax-checkpoint version" in loud.stderr, loud.stderr[-2000:]
