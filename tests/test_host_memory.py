"""cyclejax.host_memory: freed host memory stays in the process (glibc), and can be turned off."""
import os
import subprocess
import sys

import pytest

# Allocates and frees 200 MB with numpy (malloc), then prints whether the setting took and
# how much of the freed memory the process still holds.
PROBE = """
import numpy as np
from cyclejax import host_memory
took = host_memory.keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
a = np.ones(200 * 2**20 // 8)
del a
print(took, round(rss_mb() - before))
"""


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    took, kept = out.stdout.split()
    return took == "True", int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_reuse_unless_turned_off():
    took, kept = _probe()
    assert took and kept >= 190, kept  # the 200 MB block came from the heap and stayed
    took, kept = _probe(CYCLEJAX_KEEP_FREED_MEMORY="0")
    assert not took and kept < 20, kept  # glibc's default: mmap'ed, returned on free
