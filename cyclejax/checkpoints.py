"""Orbax checkpoints of the whole train state and its config, in <workdir>/checkpoints.

Saves are asynchronous and atomic (Orbax writes to a temporary folder and renames it, or on
GCS marks a finished step with a commit file), so a crash or kill mid-save leaves the previous
checkpoint as the latest usable one. A finished checkpoint that cannot be read back (a file
truncated or lost afterwards) is skipped with a warning, moved aside to
<workdir>/damaged_checkpoints/, and the one before it restored; a workdir whose every
checkpoint is unreadable is an error, never a silent fresh start.
"""
from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import logging as std_logging
import sys
import threading
import time

import jax
import numpy as np
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from cyclejax import storage
from cyclejax.errors import UserError
from cyclejax.train_state import TrainState

# Keys that change the shapes or meaning of the saved arrays: a checkpoint made with other
# values cannot be resumed.
ARCHITECTURE_KEYS = ("netG", "netD", "n_layers_D", "ngf", "ndf", "norm", "input_nc", "output_nc", "pool_size",
                     "crop_size", "no_dropout")


class CheckpointMismatch(UserError):
    """A workdir whose checkpoint was made with another architecture."""


class CheckpointsUnreadable(UserError):
    """A workdir that holds checkpoints none of which can be restored."""


def manager(workdir: storage.PathLike, keep: int = 3) -> ocp.CheckpointManager:
    """Orbax's manager of `workdir/checkpoints`, keeping the latest `keep` (0: every one; Orbax
    would read 0 as none and delete each checkpoint as it is written)."""
    if keep < 0:
        raise ValueError(f"keep must be 0 (all) or more, got {keep}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, enable_async_checkpointing=True, create=True)
    return ocp.CheckpointManager(storage.resolve(workdir) / "checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, state: TrainState, config: ml_collections.ConfigDict) -> None:
    step = int(jax.device_get(state.step))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            config=ocp.args.JsonSave(json.loads(config.to_json()))), force=True)


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def saved_run_config(workdir: storage.PathLike, step: int) -> dict:
    """The config a run saved with its checkpoint of `step` (FileNotFoundError if there is none)."""
    ckpt_dir = storage.resolve(workdir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"{workdir} has no checkpoints folder ({ckpt_dir})")
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        if step not in mngr.all_steps():
            raise FileNotFoundError(f"{ckpt_dir} has no checkpoint of step {step}")
        return saved_config(mngr, step)
    finally:
        mngr.close()


def check_compatible(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
    differ = [f"{k}: checkpoint {saved.get(k)!r}, config {config.get(k)!r}" for k in ARCHITECTURE_KEYS
              if saved.get(k) != config.get(k)]
    if differ:
        raise CheckpointMismatch(
            f"the checkpoint in {where} was made with another architecture ({'; '.join(differ)}). "
            f"Use a fresh --workdir, or set these keys as the checkpoint has them."
        )


def check_average(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
    """A run that keeps the generators' average (ema_decay > 0) resumes only a checkpoint that
    holds one, and the other way round; the decay itself may change."""
    kept, keep = saved.get("ema_decay", 0.0) > 0, config.get("ema_decay", 0.0) > 0
    if kept != keep:
        raise CheckpointMismatch(
            f"the checkpoint in {where} was made with ema_decay={saved.get('ema_decay', 0.0)!r} and "
            f"{'holds' if kept else 'holds no'} average of the generators' weights, this run has "
            f"ema_decay={config.get('ema_decay')!r}. Use a fresh --workdir, or "
            f"--config.ema_decay={saved.get('ema_decay', 0.0)!r} to resume this one.")


def restore_latest(mngr: ocp.CheckpointManager, like: TrainState, config: ml_collections.ConfigDict) -> TrainState | None:
    """The latest readable checkpoint restored into the shapes and shardings of `like`, or None
    when there is none; unreadable ones after it are set aside (see the module docstring)."""
    steps = sorted(mngr.all_steps(), reverse=True)
    _silence_abandoned_reads()
    damaged = []
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    for step in steps:
        try:
            saved = saved_config(mngr, step)
        except Exception as e:  # noqa: BLE001 - missing or corrupt JSON, storage errors
            damaged.append((step, _short(e)))
            continue
        check_compatible(saved, config, str(mngr.directory))  # a mismatch is the user's, not damage
        check_average(saved, config, str(mngr.directory))
        tree = _saved_tree(mngr, step)
        _check_shapes(mngr, step, tree, like)
        try:
            restored = _restore_state(mngr, step, tree, abstract)
        except Exception as e:  # noqa: BLE001 - TensorStore reports truncated or missing data variously
            damaged.append((step, _short(e)))
            gc.collect()  # the abandoned reads, quietly
            continue
        if damaged:
            _set_aside(mngr, damaged, step)
        return restored
    if damaged:
        raise CheckpointsUnreadable(
            f"{mngr.directory} holds checkpoints of steps {sorted(steps)} and none can be read "
            f"(step {damaged[0][0]}: {damaged[0][1]}). Move that folder away to start afresh.")
    return None


def _restore_state(mngr: ocp.CheckpointManager, step: int, tree, abstract: TrainState) -> TrainState:
    """The state of checkpoint `step` (metadata `tree`) in the shapes and shardings of `abstract`.
    A checkpoint written before the train state had its `ema` field (no average kept) has no
    entry for it: it is restored without one, `ema` empty as such a run's state has it."""
    if abstract.ema or tree is None or "ema" in tree:
        return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    target = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract) if f.name != "ema"}
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return abstract.replace(**restored, ema={})


def _saved_tree(mngr: ocp.CheckpointManager, step: int):
    """The metadata tree of checkpoint `step`'s state (names to array metadata), None if unreadable."""
    try:
        return ocp.StandardCheckpointer().metadata(mngr.directory / str(step) / "state").item_metadata.tree
    except Exception:  # noqa: BLE001 - damaged metadata: the restore reports it
        return None


def _names(path) -> tuple:
    """A key path as plain names, whether its nodes are dicts or dataclasses."""
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def _check_shapes(mngr: ocp.CheckpointManager, step: int, tree, like: TrainState) -> None:
    """CheckpointMismatch when a saved array's shape is not this run's (images of another size:
    the image pools), read from the checkpoint's metadata: a restore would fail as if the
    checkpoint were damaged. Metadata that cannot be read is left to the restore to judge."""
    if tree is None:  # damaged metadata: the restore reports it
        return
    saved = {_names(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(tree) if hasattr(m, "shape")}
    for path, leaf in jax.tree_util.tree_leaves_with_path(like):
        want, have = tuple(np.shape(leaf)), saved.get(_names(path))
        if have is not None and have != want:
            name = "/".join(str(n) for n in _names(path))
            raise CheckpointMismatch(
                f"the checkpoint in {mngr.directory} (step {step}) holds {name} of shape {have}, this run needs "
                f"{want}: the training images have another size (preprocess, load_size, crop_size or the "
                "dataset changed). Use a fresh --workdir, or the settings the checkpoint was made with.")


def _silence_abandoned_reads() -> None:
    """Orbax reads a checkpoint's arrays concurrently; when one read fails, it closes its event
    loop and abandons the others, whose ends Python would print with tracebacks ('Exception
    ignored in <coroutine>', 'RuntimeError: Event loop is closed', asyncio's 'Task exception was
    never retrieved'), some while the restore is still failing. A failure is reported in one
    line by the caller: from the first restore on, drop just those reports (nothing else)."""
    if getattr(sys.unraisablehook, "cyclejax_filter", False):
        return
    unraisable, excepthook, thread_hook = sys.unraisablehook, sys.excepthook, threading.excepthook

    def abandoned(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    def filter_unraisable(u):
        if not (inspect.iscoroutine(u.object) or abandoned(u.exc_value)):
            unraisable(u)

    def filter_excepthook(kind, value, tb):
        if not abandoned(value):
            excepthook(kind, value, tb)

    def filter_thread_hook(args):
        if not abandoned(args.exc_value):
            thread_hook(args)

    def abandoned_task(record) -> bool:  # asyncio's "Task exception was never retrieved"
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and "while reading array" in str(exc) and "never retrieved" in str(record.msg))

    filter_unraisable.cyclejax_filter = True
    sys.unraisablehook, sys.excepthook, threading.excepthook = filter_unraisable, filter_excepthook, filter_thread_hook
    std_logging.getLogger("asyncio").addFilter(abandoned_task)


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()).split(" See full TensorStore details")[0]
    return f"{type(error).__name__}: {text[:300]}"


def _set_aside(mngr: ocp.CheckpointManager, damaged: list, restored_step: int) -> None:
    """Warns about each unreadable checkpoint and moves it out of Orbax's sight (so the run can
    save that step again), to <workdir>/damaged_checkpoints/<step>-<time>."""
    aside = mngr.directory.parent / "damaged_checkpoints"
    for step, error in damaged:
        logging.warning("checkpoint %s is damaged and was skipped (%s); resuming from step %d instead. "
                        "It is kept in %s.", mngr.directory / str(step), error, restored_step, aside)
    if jax.process_index() == 0:
        aside.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for step, _ in damaged:
            (mngr.directory / str(step)).rename(aside / f"{step}-{stamp}")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("cyclejax: damaged checkpoints set aside")
    mngr.reload()


def restore_anywhere() -> ocp.args.StandardRestore:
    """Restore arguments for a checkpoint made on any device topology: arrays land on this
    process's first device (the saved shardings name devices this machine may not have)."""
    return ocp.args.StandardRestore(fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


def restore_generators(workdir: storage.PathLike, step: int | None = None,
                       average: bool = True) -> tuple[dict, dict, dict, int]:
    """(config, params, batch_stats, step) of both generators in a workdir's checkpoint, as numpy.

    Restores without a target, so it works on any device topology and never builds the
    discriminators or optimisers; `step` None means the latest. The params are the
    generators' average where the run kept one (`TrainState.ema`) and `average` is True,
    the last weights otherwise.
    """
    ckpt_dir = storage.resolve(workdir) / "checkpoints"
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"{workdir} has no checkpoints folder ({ckpt_dir}); is it a cyclejax --workdir?")
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = mngr.all_steps()
        if not steps:
            raise FileNotFoundError(f"{ckpt_dir} holds no finished checkpoint")
        step = max(steps) if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"{ckpt_dir} has no checkpoint of step {step}; it has {sorted(steps)}")
        _silence_abandoned_reads()
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(state=restore_anywhere(),
                                                                   config=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - truncated or missing files, as in restore_latest
            raise CheckpointsUnreadable(f"the checkpoint {ckpt_dir / str(step)} cannot be read ({_short(e)}); "
                                        f"choose another step (it has {sorted(steps)})") from e
    finally:
        mngr.close()
    state = restored["state"]
    to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)  # noqa: E731
    kept = restored["config"].get("ema_decay", 0.0) > 0
    if kept and not state.get("ema"):
        raise CheckpointsUnreadable(f"the checkpoint {ckpt_dir / str(step)} was made with ema_decay="
                                    f"{restored['config']['ema_decay']} but holds no average of the generators' "
                                    "weights; choose another step")
    source = state["ema"] if average and kept else state["params"]
    params = {k: to_np(source[k]) for k in ("G_A", "G_B")}
    stats = {k: to_np(state["batch_stats"].get(k, {})) for k in ("G_A", "G_B")}
    return restored["config"], params, stats, step
