"""Keeps freed host memory in the process, so XLA:CPU's large buffers do not fault in anew.

XLA:CPU allocates a step's temporaries (tens of MB each at 256²) with the C library's
malloc. glibc serves blocks above its mmap threshold with fresh `mmap`s and returns them
with `munmap` on free, so every step faults in and zeroes every page of every large
temporary again: measured on a 2-core AMD EPYC, a third of the 256² step's time was
spent in the kernel, and copying 40 MB ran at 1.4 GB/s. `keep_freed_memory()` asks glibc
to serve every block from its heaps and not to give freed memory back
(`mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, ...)`, what the `MALLOC_MMAP_MAX_`
and `MALLOC_TRIM_THRESHOLD_` variables do at start-up): the same step then ran 1.26x
faster (experiments/bench/README.md). The process keeps its peak footprint instead of
returning it between steps.

Those settings hold for glibc's main heap only. Any other thread allocates from an arena
of its own, which cannot hold a block above 64 MB: glibc maps such a block with `mmap`
whatever `M_MMAP_MAX` says, and unmaps it on free. XLA:CPU allocates each run's
temporaries as one block (549 MB for the 128² train step), and with asynchronous dispatch
one of its worker threads does so, so every step still faulted 140,000 fresh pages in
(0.25 s of kernel time in a 1.5 s step). `keep_freed_memory()` therefore also turns off
JAX's asynchronous dispatch on CPU (`jax_cpu_enable_async_dispatch`): a run then starts on
the calling thread, its block comes from the main heap and is reused, and the step is 6-9
% faster (128² and 256²). Python waits for each CPU step instead of queueing the next; GPU
and TPU dispatch is unchanged. It takes effect only when called before JAX's CPU backend
starts, as the commands do.

It does nothing where the C library is not glibc (macOS, musl), when another allocator
is preloaded (tcmalloc, jemalloc: their `mallopt` ignores these), or when
CYCLEJAX_KEEP_FREED_MEMORY=0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# mallopt takes an int and glibc stores it as a size_t: -1 means no threshold. The largest
# positive int (2 GiB) was not enough: the 256² step's temporaries are one block of more than
# 2 GiB, so freeing it trimmed the heap and every step faulted 530,000 pages in (0.95 s).
_TRIM_THRESHOLD = -1
_done = False


def release_free_pages() -> bool:
    """Returns the free pages inside glibc's heap to the system (`malloc_trim(0)`); called once,
    after the first train step. When a small allocation lands in the first step's freed
    temporaries, the second step's block no longer fits there and goes above it, and the
    old pages stay resident: measured at 256² in bfloat16, peak memory was 3.3 GB in some
    runs and 5.0 GB in others; trimmed after the first step, 3.2-3.3 GB in four of four.
    The next step faults its block in once more. True if glibc did it."""
    if not _done:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim(0)
    return True


def keep_freed_memory() -> bool:
    """Applies the setting once per process; True if glibc accepted it."""
    global _done
    if _done:
        return True
    if os.environ.get("CYCLEJAX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    if _done:
        import jax
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return _done
