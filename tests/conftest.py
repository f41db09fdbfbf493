"""Shared test settings.

XLA:CPU compilation is most of the suite's time, and many tests (and the subprocesses they
start, which inherit the environment) compile the same small programs again: a resumed run,
each paper config, each process of the multi-host test. A persistent compilation cache for
the session, in a fresh folder, lets XLA compile each distinct program once. It changes no
result: a cached executable is the one that was compiled.
"""
import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="cyclejax-xla-cache-"))
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
