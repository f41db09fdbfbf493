"""Trains a CycleGAN: `python -m cyclejax.train [--workdir=DIR] [--config=CONFIG.py] [--config.KEY=VALUE ...]`.

With no flags it trains `cyclejax/configs/default.py` on the embedded dataset into a new
folder under ./runs/ and scores the result. Running the same command on the same workdir
resumes from its latest checkpoint. `train_and_evaluate(config, workdir)` is the whole run,
callable from a notebook.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from cyclejax import (checkpoints, config_check, datasets, embedded_score, input_pipeline, nonfinite, parallel,
                      preemption, train_state)
from cyclejax import model as model_lib
from cyclejax.progress import Progress
from cyclejax.samples import SampleWriter

_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and samples go (default: a new ./runs/<time>)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs outside TPU VMs (GPU clusters)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "with --coordinator_address: how many processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "with --coordinator_address: this process's index")
_CONFIG = config_flags.DEFINE_config_file("config", str(Path(__file__).parent / "configs" / "default.py"),
                                          "a config file; override keys with --config.KEY=VALUE")


def _swap(config, a, b):
    return (b, a) if config.direction == "BtoA" else (a, b)


def load_data(config: ml_collections.ConfigDict):
    """Train and (if present) test images of both domains, after `direction`."""
    train_A, train_B = _swap(config, *(datasets.load_images(config.dataset, s, config.max_dataset_size)
                                       for s in ("trainA", "trainB")))
    tests = []
    for split in ("testA", "testB"):
        tests.append(datasets.load_images(config.dataset, split) if datasets.has_split(config.dataset, split) else [])
    test_A, test_B = _swap(config, *tests)
    return train_A, train_B, test_A, test_B


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) in `workdir`; returns the last metrics and, on the embedded dataset, eval.json."""
    workdir = Path(workdir)
    mesh = parallel.make_mesh()
    config_check.validate(config, jax.device_count(), jax.process_count())
    is_main = jax.process_index() == 0
    t_start = time.time()

    train_A, train_B, test_A, test_B = load_data(config)
    spe = input_pipeline.steps_per_epoch(len(train_A), len(train_B), config.batch_size)
    total = (config.n_epochs + config.n_epochs_decay) * spe
    if config.max_steps:
        total = min(total, config.max_steps)
    if is_main:
        print(f"data: {len(train_A)} A and {len(train_B)} B training images, {spe} steps per epoch, {total} steps",
              flush=True)

    model = model_lib.build(config, spe)
    sample_batch = {k: input_pipeline.test_images(v[:1], config) for k, v in (("A", train_A), ("B", train_B))}
    state = train_state.create(model, config.seed, sample_batch["A"].shape[1:], sample_batch["B"].shape[1:])
    # Replicated over the mesh first, so a checkpoint restores straight into the shardings of
    # this run's topology (whatever topology wrote it).
    state = parallel.replicate(state, mesh)
    mngr = checkpoints.manager(workdir, config.keep_checkpoints)
    restored = checkpoints.restore_latest(mngr, state, config)
    if restored is not None:
        state = restored
        if is_main:
            print(f"resumed from step {int(state.step)} in {workdir}", flush=True)
    start = int(state.step)
    step_fn = parallel.compile_train_step(model, mesh)

    batches = input_pipeline.train_batches(train_A, train_B, config, start, jax.process_index(), jax.process_count())
    progress = Progress(workdir, start, total, spe, enabled=is_main)
    samples = (SampleWriter(workdir, test_A or train_A, test_B or train_B, config, model, progress.writer)
               if is_main else None)
    metrics = {}
    record = nonfinite.init()
    stop = preemption.Watcher(mngr)
    done = start
    try:
        for step in range(start, total):
            batch = next(batches)
            assert int(batch["step"][0]) == step, (int(batch["step"][0]), step)
            state, metrics = step_fn(state, parallel.shard_batch({"A": batch["A"], "B": batch["B"]}, mesh))
            record = nonfinite.track(record, metrics, step + 1)
            done = step + 1
            log = config.log_every and done % config.log_every == 0
            if log:
                nonfinite.check(record)
            progress.update(done, metrics, config.batch_size, log=log)
            if samples and config.sample_every and (done % config.sample_every == 0 or done == total):
                samples.write(done, state)
            if stop.requested(done) and done < total:
                _save(mngr, state, config, record)
                if is_main:
                    print(f"preempted (SIGTERM) at step {done}: checkpoint saved in {workdir}; run the same "
                          f"command again to resume", flush=True)
                break
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
                _save(mngr, state, config, record)
        else:
            if total > start:
                _save(mngr, state, config, record)
        mngr.wait_until_finished()
    finally:
        stop.close()
        progress.close()
        mngr.close()
    result = {"step": done, "preempted": done < total, "metrics": {k: float(v) for k, v in jax.device_get(metrics).items()},
              "train_seconds": time.time() - t_start}
    if is_main and config.eval_at_end and done == total and datasets.kind(config.dataset) == "embedded":
        state = jax.device_get(state)
        to_B = model_lib.translator(model.G_A, state.params["G_A"], state.batch_stats["G_A"])
        to_A = model_lib.translator(model.G_B, state.params["G_B"], state.batch_stats["G_B"])
        if config.direction == "BtoA":
            to_A, to_B = to_B, to_A
        report = embedded_score.evaluate(to_B, to_A, step=int(state.step))
        (workdir / "eval.json").write_text(json.dumps(report, indent=2))
        print(embedded_score.format_table(report), flush=True)
        result["eval"] = report
    return result


def _save(mngr, state, config, record) -> None:
    """A checkpoint, unless some step since the start went non-finite (then NonFiniteError)."""
    nonfinite.check(record)
    if not bool(jax.device_get(nonfinite.state_is_finite(state))):
        raise nonfinite.NonFiniteError(f"the state at step {int(jax.device_get(state.step))} holds NaN or Inf "
                                       f"although its losses were finite; stopped without saving it")
    checkpoints.save(mngr, state, config)


def default_workdir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def main(argv):
    del argv
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and TF are chatty at INFO
    parallel.initialize_processes(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    is_main = jax.process_index() == 0
    if jax.process_count() > 1 and not _WORKDIR.value:
        print("error: a run over several processes needs --workdir, a path every host reaches (e.g. gs://bucket/run)",
              file=sys.stderr)
        sys.exit(2)
    workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir()
    if is_main:
        print(f"cyclejax: training {_CONFIG.value.dataset} into {workdir} on {jax.device_count()} devices, "
              f"{jax.process_count()} process(es)", flush=True)
    try:
        result = train_and_evaluate(_CONFIG.value, workdir)
    except (config_check.ConfigError, datasets.DatasetError, checkpoints.CheckpointMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except nonfinite.NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    if is_main and not result["preempted"]:
        print(f"cyclejax: done; see {workdir} (tensorboard --logdir {workdir})", flush=True)


if __name__ == "__main__":
    app.run(main)
