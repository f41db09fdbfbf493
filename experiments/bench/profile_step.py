"""Where the bench step's time goes, from a profiler trace: `python experiments/bench/profile_step.py OUT [SIZE]`.

Compiles the bench's step (resnet_9blocks + basic D, ngf = ndf = 64, batch 1, float32, the
conv_impl `auto` picks), runs 3 steps under `jax.profiler.trace(create_perfetto_trace=True)`
and prints, per step: the time of each kind of XLA thunk (oneDNN's custom calls are
`ffi_call.N`, by convolution direction), and how much of the step the oneDNN calls and XLA's
own operations cover (the union of their intervals) and overlap. A oneDNN call that waits for
the lock on large convolutions (cyclejax/csrc/onednn_conv.cc) counts its wait, so sums of
call times exceed the step; the unions do not. Run it with and without the AVX2 cap
(`XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`) to see what the cap costs.
"""
import collections
import glob
import gzip
import json
import re
import sys
import time

import jax
import numpy as np

from cyclejax import benchmark, parallel, train_state, train_step
from cyclejax import model as model_lib

STEPS = 3


def union(intervals):
    total, cur = 0.0, None
    for s, e in sorted(intervals):
        if cur is None or s > cur[1]:
            total += cur[1] - cur[0] if cur else 0.0
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    return total + (cur[1] - cur[0] if cur else 0.0)


def main(out: str, size: int) -> None:
    config = benchmark._config("resnet_9blocks", "basic", 64, 64, "float32", 1)
    model = model_lib.build(config, steps_per_epoch=1000)
    mesh = parallel.make_mesh()
    shape = (size, size, 3)
    state = parallel.replicate(train_state.create(model, 0, shape, shape), mesh)
    rng = np.random.default_rng(0)
    data = parallel.shard_batch({k: rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for k in "AB"}, mesh)
    options = train_step.compiler_options(model, shape, shape, 1)
    compiled = train_step.jit_train_step(model, mesh, options).lower(state, data).compile()
    targets = {m.group(1): m.group(2).replace("cyclejax_onednn_conv_", "")
               for m in re.finditer(r"%?(ffi_call[.\d]*) = .*?custom_call_target=\"([^\"]+)\"", compiled.as_text())}
    for _ in range(3):
        state, _ = compiled(state, data)
    jax.block_until_ready(state)
    t = time.perf_counter()
    with jax.profiler.trace(out, create_perfetto_trace=True):
        for _ in range(STEPS):
            state, _ = compiled(state, data)
        jax.block_until_ready(state)
    print(f"{(time.perf_counter() - t) / STEPS:.3f} s/step while tracing")
    trace = json.load(gzip.open(glob.glob(f"{out}/**/*.json.gz", recursive=True)[0]))
    events = [e for e in (trace["traceEvents"] if isinstance(trace, dict) else trace)
              if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "PjitFunction"))]
    per_kind = collections.Counter()
    for e in events:
        name = e["name"]
        kind = f"oneDNN {targets.get(name, '?')}" if name.startswith("ffi_call") else re.sub(r"[._]\d+$", "", name)
        per_kind[kind] += e["dur"] / 1e3 / STEPS
    for kind, ms in per_kind.most_common(20):
        print(f"{ms:8.1f} ms  {kind}")
    onednn = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["name"].startswith("ffi_call")]
    xla = [(e["ts"], e["ts"] + e["dur"]) for e in events if not e["name"].startswith("ffi_call")]
    u_onednn, u_xla, u_all = (union(v) / 1e3 / STEPS for v in (onednn, xla, onednn + xla))
    print(f"covered per step: oneDNN calls {u_onednn:.0f} ms, XLA's operations {u_xla:.0f} ms, "
          f"both at once {u_onednn + u_xla - u_all:.0f} ms, either {u_all:.0f} ms")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 128)
