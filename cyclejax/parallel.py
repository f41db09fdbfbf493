"""Data parallelism: a 1-D device mesh, its shardings, placing batches and state, process start-up.

The batch is split over the mesh's `data` axis and the train state is replicated. Losses
are means over the global batch, so under `jax.jit` XLA averages the gradients across
devices itself (one all-reduce per update): the numbers equal those of one device with
the same global batch. The jitted step that uses these shardings is
`train_step.jit_train_step`.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def traced_on(mesh: Mesh, fn: Callable) -> Callable:
    """`fn` with `mesh` in context while it is traced (`jax.sharding.use_abstract_mesh`), so that
    what must be split by hand splits over its `data` axis: oneDNN's convolutions, custom
    calls XLA cannot partition, run per device in `jax.shard_map` (`cyclejax.onednn`)."""

    @functools.wraps(fn)
    def on_mesh(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return on_mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> global arrays sharded over `data`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array of `tree` (e.g. the train state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def _multi_host_tpu() -> bool:
    """Whether this is one host of a multi-host Cloud TPU slice (JAX's own detection: GCE metadata or
    the GKE environment; TPU_WORKER_HOSTNAMES when set)."""
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    try:  # JAX's cluster detection is not public API: fall back to the variable above
        from jax._src.clusters import cloud_tpu_cluster as tpu
        for cluster in (tpu.GceTpuCluster, tpu.GkeTpuCluster):
            if cluster.is_env_present():
                return cluster.get_process_count() > 1
    except Exception:  # noqa: BLE001
        pass
    return False


def initialize_processes(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> bool:
    """`jax.distributed.initialize` when this run spans several processes; True if it did.

    Explicit arguments (GPU clusters, the loopback test) or a multi-host Cloud TPU slice
    (where JAX finds the coordinator itself). A single process is left alone. CPU
    collectives between processes use gloo.
    """
    if coordinator_address:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if _multi_host_tpu():
        jax.distributed.initialize()
        return True
    return False
