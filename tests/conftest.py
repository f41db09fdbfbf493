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

from cyclejax.configs import default


def tiny_train_config(**overrides) -> ml_collections.ConfigDict:
    """The default config shrunk to seconds per run: ngf=ndf=4, 32x32 crops of 20 images a domain."""
    c = default.get_config()
    c.update(ngf=4, ndf=4, load_size=36, crop_size=32, preprocess="resize_and_crop", max_dataset_size=20,
             n_epochs=1, n_epochs_decay=1, log_every=5, sample_every=0, checkpoint_every=0, eval_at_end=False,
             pool_size=5, shuffle_buffer=10, prefetch=2)
    c.update(overrides)
    return c


@pytest.fixture
def tiny_config():
    return tiny_train_config
