"""A whole training run as one function of (config, workdir): `train_and_evaluate`.

Trains (or resumes from the workdir's latest checkpoint), shows progress, writes samples
and checkpoints, stops cleanly on SIGTERM or a non-finite loss, and on the embedded dataset
scores the result into eval.json. `python -m cyclejax.train` is its command line; a
notebook calls it directly.
"""
from __future__ import annotations

import itertools
import json
import os
import time

import jax
import ml_collections

from cyclejax import (checkpoints, config_check, convolution, datasets, embedded_score, host_memory, input_pipeline, nonfinite,
                      parallel, preemption, preprocessing, storage, train_state, train_step)
from cyclejax import model as model_lib
from cyclejax.errors import NonFiniteError
from cyclejax.progress import Progress
from cyclejax.samples import SampleWriter


def _swap(config, a, b):
    return (b, a) if config.direction == "BtoA" else (a, b)


def load_data(config: ml_collections.ConfigDict):
    """Train and (if present) test splits of both domains, after `direction`; nothing decoded yet."""
    train_A, train_B = _swap(config, *(datasets.load_split(config.dataset, s, config.max_dataset_size)
                                       for s in ("trainA", "trainB")))
    tests = []
    for split in ("testA", "testB"):
        tests.append(datasets.load_split(config.dataset, split) if datasets.has_split(config.dataset, split) else [])
    mode = preprocessing.preprocess_mode(config)
    if mode == "none":
        datasets.check_same_size([s for s in (train_A, train_B, *tests) if s],
                                 "use --config.preprocess=resize_and_crop (to --config.crop_size) or "
                                 "--config.preprocess=auto")
    if mode in ("none", "scale_width"):
        _check_one_train_size(config, train_A, train_B)
    test_A, test_B = _swap(config, *tests)
    return train_A, train_B, test_A, test_B


def _check_one_train_size(config: ml_collections.ConfigDict, *splits: datasets.Split) -> None:
    """Every training image of both domains preprocessed to one size: batches are stacked, and
    each image pool holds one domain's translations of the other's images."""
    first = None
    for split in splits:
        for name, (h, w) in zip(split.names, split.sizes):
            size = preprocessing.train_size(config, h, w)
            first = first or (name, size)
            if size != first[1]:
                raise datasets.DatasetError(
                    f"with preprocess={config.preprocess!r} {first[0]} trains at {first[1][1]}x{first[1][0]} but "
                    f"{name} at {size[1]}x{size[0]}: every training image of both domains must give one size; "
                    "use --config.preprocess=resize_and_crop or scale_width_and_crop")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: storage.PathLike) -> dict:
    """Trains (or resumes) in `workdir`; returns the last metrics and, on the embedded dataset, eval.json."""
    host_memory.keep_freed_memory()  # also when called from a notebook, not through the command
    workdir = storage.resolve(workdir)  # local or gs://
    mesh = parallel.make_mesh()
    config_check.validate(config, jax.device_count(), jax.process_count())
    is_main = jax.process_index() == 0
    t_start = time.time()

    train_A, train_B, test_A, test_B = load_data(config)
    t_listed = time.time() - t_start
    spe = input_pipeline.steps_per_epoch(len(train_A), len(train_B), config.batch_size)
    total = (config.n_epochs + config.n_epochs_decay) * spe
    if config.max_steps:
        total = min(total, config.max_steps)
    if is_main:
        print(f"data: {len(train_A)} A and {len(train_B)} B training images, {spe} steps per epoch, {total} steps "
              f"(listed in {t_listed:.1f} s; decoded as batches need them)", flush=True)

    model = model_lib.build(config, spe)
    if is_main:
        print(f"convolutions: {convolution.describe(config.conv_impl, model.dtype)}", flush=True)
    shapes = {k: (*preprocessing.train_size(config, *v.sizes[0]), 3)  # the reader gives RGB
              for k, v in (("A", train_A), ("B", train_B))}
    state = train_state.create(model, config.seed, shapes["A"], shapes["B"])
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
    options = train_step.compiler_options(model, shapes["A"], shapes["B"], config.batch_size // jax.device_count())
    step_fn = train_step.jit_train_step(model, mesh, options)

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
            if step == start:
                jax.block_until_ready(metrics)
                host_memory.release_free_pages()  # see host_memory: keeps the step's peak memory steady
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
        batches.close()  # tf.data's threads stopped before anything else (see input_pipeline.Batches)
        stop.close()
        progress.close()
        mngr.close()
    result = {"step": done, "preempted": done < total, "metrics": {k: float(v) for k, v in jax.device_get(metrics).items()},
              "train_seconds": time.time() - t_start}
    if is_main and config.eval_at_end and done == total and datasets.kind(config.dataset) == "embedded":
        state = jax.device_get(state)
        params = state.translation_params  # the generators' average where the run keeps one
        to_B = model_lib.batch_translator(model.G_A, params["G_A"], state.batch_stats["G_A"])
        to_A = model_lib.batch_translator(model.G_B, params["G_B"], state.batch_stats["G_B"])
        if config.direction == "BtoA":
            to_A, to_B = to_B, to_A
        report = embedded_score.score(to_B, to_A, step=int(state.step))
        (workdir / "eval.json").write_text(json.dumps(report, indent=2))
        print(embedded_score.format_table(report), flush=True)
        result["eval"] = report
    return result


def _save(mngr, state, config, record) -> None:
    """A checkpoint, unless some step since the start went non-finite (then NonFiniteError)."""
    nonfinite.check(record)
    if not bool(jax.device_get(nonfinite.state_is_finite(state))):
        raise NonFiniteError(f"the state at step {int(jax.device_get(state.step))} holds NaN or Inf "
                                       f"although its losses were finite; stopped without saving it")
    checkpoints.save(mngr, state, config)


def default_workdir(parent: str = "runs") -> str:
    """A new folder `parent/<date-time>`, created here so that two runs started in the same
    second (seeds in parallel, say) never share one: the second gets `<date-time>-2`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(parent, exist_ok=True)
    for n in itertools.count(1):
        path = os.path.join(parent, stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
