"""The AVX2 cap, and whether this CPU has anything above AVX2 for it to remove.

    python -m tests.isa         # "above AVX2: avx512f ..." | "nothing above AVX2" | "unknown: ..."
    python -m tests.isa --cap   # AVX2_CAP as VAR=value words, for `env` (.ci/run)

`AVX2_CAP` makes XLA, oneDNN (cyclejax's and torch's) and torch's own kernels use nothing above
AVX2, as on an AVX2-only CPU (AMD Zen 3): .ci/run's second pass, and the tests that run a
command capped. On a CPU with nothing above AVX2 the cap removes nothing (XLA drops only
avx512*, amx*, avx10.2 and APX features, xla/backends/cpu/codegen/cpu_features.cc; oneDNN's
levels above avx2 need avx_vnni, avx_ne_convert, avx512* or amx*; torch's above avx2 needs
avx512*): the suite run as the machine is has already run at AVX2, so .ci/run does not repeat
it. Any other avx* flag (avx_vnni on Intel's client CPUs) counts as above AVX2, as does a
CPU whose flags cannot be read.
"""
import re
import sys

AVX2_CAP = {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def above_avx2(flags) -> list[str]:
    """The flags of a CPU (`/proc/cpuinfo`'s names) that the cap would take away."""
    return sorted(f for f in flags if re.match(r"(avx|amx|apx)", f) and f not in ("avx", "avx2"))


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str] | None:
    """This CPU's x86 flags, or None where there is no such list (another OS or architecture)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return value.split()
    except OSError:
        pass
    return None


def describe(flags) -> str:
    if flags is None:
        return "unknown: no x86 flags in /proc/cpuinfo"
    above = above_avx2(flags)
    return f"above AVX2: {' '.join(above)}" if above else "nothing above AVX2"


if __name__ == "__main__":
    if sys.argv[1:] == ["--cap"]:
        print(" ".join(f"{k}={v}" for k, v in AVX2_CAP.items()))
    else:
        print(describe(cpu_flags(*sys.argv[1:])))
