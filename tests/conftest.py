"""Shared test settings.

XLA:CPU compilation is most of the suite's time, and many tests (and the subprocesses they
start, which inherit the environment) compile the same small programs again: a resumed run,
each paper config, each process of the multi-host test. A persistent compilation cache for
the session, in a fresh folder, lets XLA compile each distinct program once. It changes no
result: a cached executable is the one that was compiled. pytest-xdist's controller loads this
file before it starts its workers, which inherit the folder, as do the processes the tests
start: one cache for the whole run (2026-12-06: one folder, 2,672 programs, about 850 s of
compilation stored), removed when the controller exits.
"""
import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cyclejax-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import ml_collections
import pytest

from cyclejax import convolution, onednn
from cyclejax.configs import default


def impls() -> list:
    """Every conv_impl, as pytest parameters; 'onednn' is skipped, with the reason, where its
    extension is not built (tests/test_packaging.py fails then on Linux x86-64, where
    `pip install` builds it)."""
    skip = pytest.mark.skipif(not onednn.available(), reason=f"oneDNN: {onednn.unavailable_reason()}")
    return [pytest.param(impl, marks=skip) if impl == "onednn" else impl for impl in convolution.IMPLS]


def tiny_config(variants: str = "tiny", **overrides) -> ml_collections.ConfigDict:
    """The one tiny config (`default.get_config("tiny")`: seconds per run) with `overrides`;
    `variants="paper,tiny"` starts from the official defaults instead of the quick-start ones."""
    c = default.get_config(variants)
    c.update(overrides)
    return c


# The files that take minutes (processes started, runs killed and resumed, commands run end to
# end), longest first, as measured on the 2-core VM. pytest-xdist (`--dist loadfile
# --no-loadscope-reorder` in setup.cfg) hands files to workers in collection order; its default
# order (most tests first) left these for last, where one worker ran the longest alone while
# the other had finished.
LONGEST_FIRST = (
    "test_topology.py", "test_multihost.py", "test_gcs_workdir.py", "test_kill_resume.py", "test_train_step.py",
    "test_train_cli.py", "test_export_cli.py", "test_parallel.py", "test_exactness.py", "test_train.py",
    "test_bench.py", "test_accelerator_script.py", "test_streaming.py", "test_notebooks.py", "test_paper_configs.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
