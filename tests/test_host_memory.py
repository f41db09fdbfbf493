"""cyclejax.host_memory: freed host memory stays in the process (glibc), and can be turned off."""
import os
import subprocess
import sys

import pytest

# Allocates and frees 200 MB with numpy (malloc), with mode "trim" calls release_free_pages(),
# then prints whether the setting took and how much of the freed memory the process still holds.
PROBE = """
import sys
import numpy as np
from cyclejax import host_memory
took = host_memory.keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
a = np.ones(200 * 2**20 // 8)
del a
if sys.argv[1] == "trim":
    host_memory.release_free_pages()
print(took, round(rss_mb() - before))
"""


def _probe(mode="keep", **env):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    took, kept = out.stdout.split()
    return took == "True", int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_reuse_unless_turned_off():
    took, kept = _probe()
    assert took and kept >= 190, kept  # the 200 MB block came from the heap and stayed
    took, kept = _probe(CYCLEJAX_KEEP_FREED_MEMORY="0")
    assert not took and kept < 20, kept  # glibc's default: mmap'ed, returned on free
    took, kept = _probe("trim")
    assert took and kept < 20, kept  # release_free_pages() gave the kept block's pages back


# Runs a computation with a 128 MB temporary (the middle of two products) twice, and prints
# the minor page faults of the second run. `async` keeps JAX's asynchronous dispatch (the
# state before keep_freed_memory() turned it off).
STEP_PROBE = """
import resource, sys
import jax, jax.numpy as jnp
from cyclejax import host_memory
host_memory.keep_freed_memory()
if sys.argv[1] == "async":
    jax.config.update("jax_cpu_enable_async_dispatch", True)
f = jax.jit(lambda x, w, v: (jnp.tanh(x @ w) @ v).sum())
x, w, v = jnp.ones((4096, 256)), jnp.ones((256, 8192)), jnp.ones((8192, 16))
f(x, w, v).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x, w, v).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_runs_large_temporaries_are_not_faulted_in_again():
    def faults(dispatch):
        out = subprocess.run([sys.executable, "-c", STEP_PROBE, dispatch], capture_output=True, text=True,
                             check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        return int(out.stdout.split()[-1])

    assert faults("default") < 2000  # the 128 MB block (32,768 pages) came from the main heap again
    # With asynchronous dispatch a worker thread allocates it: glibc maps it afresh each run.
    assert faults("async") > 30000
