"""Shared test settings.

XLA:CPU compilation is most of the suite's time, and many tests (and the subprocesses they
start, which inherit the environment) compile the same small programs again: a resumed run,
each paper config, each process of the multi-host test. A persistent compilation cache for
the session lets XLA compile each distinct program once (`pytest_configure`). It changes no
result: a cached executable is the one that was compiled.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import ml_collections
import pytest

from cyclejax import convolution, onednn
from cyclejax.configs import default


def pytest_configure(config):
    """The session's compilation cache, a fresh folder removed at exit. pytest-xdist's
    controller makes it before it starts its workers, which inherit it, as do the processes the
    tests start: all of them share one cache. Set before any test compiles."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = tempfile.mkdtemp(prefix="cyclejax-xla-cache-")
    atexit.register(shutil.rmtree, path, True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    jax.config.update("jax_compilation_cache_dir", path)


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
