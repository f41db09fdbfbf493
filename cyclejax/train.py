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
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cyclejax import checkpoints, config_check, datasets, embedded_score, input_pipeline, parallel, train_state
from cyclejax import model as model_lib
from cyclejax.progress import Progress
from cyclejax.samples import SampleWriter

_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and samples go (default: a new ./runs/<time>)")
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


def translator(net, params, batch_stats):
    """A jitted function uint8 or float images -> translated float images in [-1, 1] (training-mode norms)."""
    apply = jax.jit(lambda x: model_lib.apply_train_mode(net, params, batch_stats, x))

    def run(images: np.ndarray, batch: int = 16) -> np.ndarray:
        x = images.astype(np.float32) / 127.5 - 1.0 if images.dtype == np.uint8 else images
        return np.concatenate([np.asarray(apply(x[i:i + batch])) for i in range(0, len(x), batch)])

    return run


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
    mngr = checkpoints.manager(workdir, config.keep_checkpoints)
    restored = checkpoints.restore_latest(mngr, state, config)
    if restored is not None:
        state = restored
        if is_main:
            print(f"resumed from step {int(state.step)} in {workdir}", flush=True)
    start = int(state.step)
    state = parallel.replicate(state, mesh)
    step_fn = parallel.compile_train_step(model, mesh)

    batches = input_pipeline.train_batches(train_A, train_B, config, start, jax.process_index(), jax.process_count())
    progress = Progress(workdir, start, total, spe, enabled=is_main)
    samples = (SampleWriter(workdir, test_A or train_A, test_B or train_B, config, model, progress.writer)
               if is_main else None)
    metrics = {}
    try:
        for step in range(start, total):
            batch = next(batches)
            assert int(batch["step"][0]) == step, (int(batch["step"][0]), step)
            state, metrics = step_fn(state, parallel.shard_batch({"A": batch["A"], "B": batch["B"]}, mesh))
            done = step + 1
            progress.update(done, metrics, config.batch_size, log=config.log_every and done % config.log_every == 0)
            if samples and config.sample_every and (done % config.sample_every == 0 or done == total):
                samples.write(done, state)
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
                checkpoints.save(mngr, state, config)
        if total > start:
            checkpoints.save(mngr, state, config)
        mngr.wait_until_finished()
    finally:
        progress.close()
        mngr.close()
    result = {"step": total, "metrics": {k: float(v) for k, v in jax.device_get(metrics).items()},
              "train_seconds": time.time() - t_start}
    if is_main and config.eval_at_end and datasets.kind(config.dataset) == "embedded":
        state = jax.device_get(state)
        to_B = translator(model.G_A, state.params["G_A"], state.batch_stats["G_A"])
        to_A = translator(model.G_B, state.params["G_B"], state.batch_stats["G_B"])
        if config.direction == "BtoA":
            to_A, to_B = to_B, to_A
        report = embedded_score.evaluate(to_B, to_A, step=int(state.step))
        (workdir / "eval.json").write_text(json.dumps(report, indent=2))
        print(embedded_score.format_table(report), flush=True)
        result["eval"] = report
    return result


def default_workdir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def main(argv):
    del argv
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and TF are chatty at INFO
    workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir()
    print(f"cyclejax: training {_CONFIG.value.dataset} into {workdir}", flush=True)
    try:
        train_and_evaluate(_CONFIG.value, workdir)
    except (config_check.ConfigError, datasets.DatasetError, checkpoints.CheckpointMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"cyclejax: done; see {workdir} (tensorboard --logdir {workdir})", flush=True)


if __name__ == "__main__":
    app.run(main)
