"""`python -m tests.kill_points MOMENT -- TRAIN_FLAGS...`: the train command, SIGKILLed at MOMENT.

Runs `python -m cyclejax.train TRAIN_FLAGS` in this process after wrapping one function so
that the process kills itself (SIGKILL: no handler, no flush, no cleanup) at a chosen moment,
which an outside kill could only hit by luck. Prints `kill_points: killing at ...` first.

MOMENT is one of
  step:N            after the step that reaches N was dispatched, before anything else
  save_started:N    just after the checkpoint of step N was handed to Orbax (written in the background)
  before_commit:N   in Orbax's commit of step N: every file written, the folder not yet renamed
  sample:N          half-way through writing the sample grid of step N
  restore           while restoring the checkpoint to resume from
  eval              while scoring the finished run
"""
import os
import runpy
import signal
import sys

import cyclejax.checkpoints
import cyclejax.embedded_score
import cyclejax.storage
import cyclejax.train_step
from orbax.checkpoint._src.path import atomicity


def _die(what: str) -> None:
    print(f"kill_points: killing at {what}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(moment: str) -> None:
    kind, _, arg = moment.partition(":")
    if kind == "step":
        jit_step = cyclejax.train_step.jit_train_step

        def patched_jit(model, mesh, options=None):
            step_fn = jit_step(model, mesh, options)

            def stepped(state, batch):
                out = step_fn(state, batch)
                if int(out[0].step) == int(arg):
                    _die(moment)
                return out
            return stepped
        cyclejax.train_step.jit_train_step = patched_jit
    elif kind == "save_started":
        save = cyclejax.checkpoints.save

        def patched_save(mngr, state, config):
            save(mngr, state, config)
            if int(state.step) == int(arg):
                assert mngr.is_saving_in_progress()
                _die(f"{moment} (saving in progress)")
        cyclejax.checkpoints.save = patched_save
    elif kind == "before_commit":
        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def patched_finalize(self, *a, **k):
            if self._final_path.name == arg:
                _die(f"{moment} ({self._tmp_path.name} written, not renamed)")
            return await finalize(self, *a, **k)
        atomicity.AtomicRenameTemporaryPath.finalize = patched_finalize
    elif kind == "sample":
        write_png = cyclejax.storage.write_png

        def patched_write_png(path, image):
            if path.name == f"step_{int(arg):08d}.png":
                with open(path, "wb") as f:
                    f.write(b"\x89PNG\r\n\x1a\n half a grid")
                _die(moment)
            write_png(path, image)
        cyclejax.storage.write_png = patched_write_png
    elif kind == "restore":
        restore_latest = cyclejax.checkpoints.restore_latest

        def patched_restore(mngr, like, config):
            if mngr.latest_step() is not None:
                _die(moment)
            return restore_latest(mngr, like, config)
        cyclejax.checkpoints.restore_latest = patched_restore
    elif kind == "eval":
        def patched_score(*a, **k):
            _die(moment)
        cyclejax.embedded_score.score = patched_score
    else:
        raise SystemExit(f"unknown moment {moment!r}")


if __name__ == "__main__":
    moment, sep, *flags = sys.argv[1:]
    assert sep == "--", sys.argv
    _arm(moment)
    sys.argv = ["cyclejax.train", *flags]
    runpy.run_module("cyclejax.train", run_name="__main__", alter_sys=True)
