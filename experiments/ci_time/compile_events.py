"""Which programs the test suite compiles, traces and reads from its cache, and in which test.

Record (every Python process of a run, the tests' subprocesses included):

    cp experiments/ci_time/compile_events.py "$VIRTUAL_ENV"/lib/python3.11/site-packages/_compile_events.py
    echo "import _compile_events" > "$VIRTUAL_ENV"/lib/python3.11/site-packages/zz_compile_events.pth
    COMPILE_EVENTS=/tmp/events python -m pytest -q      # one JSON line per event, a file per process
    python experiments/ci_time/compile_events.py /tmp/events    # the summary
    rm "$VIRTUAL_ENV"/lib/python3.11/site-packages/{_compile_events.py,zz_compile_events.pth}

Each process registers, when jax's monitoring module is first imported (not before, so a
process that never imports jax is untouched), listeners for jax's own events: tracing,
lowering and XLA compilation of each program, with its name, its seconds, whether the
persistent cache supplied it, and the test running (`PYTEST_CURRENT_TEST`, which the tests'
subprocesses inherit). At exit: the process's wall time and whether it imported TensorFlow
(processes that are killed leave their events but no exit line).
"""
import atexit
import collections
import json
import os
import sys
import threading
import time

_OUT = os.environ.get("COMPILE_EVENTS")
_T0 = time.time()
_local = threading.local()


def _write(record):
    record.update(pid=os.getpid(), test=os.environ.get("PYTEST_CURRENT_TEST", ""))
    with open(os.path.join(_OUT, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def _register(monitoring):
    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            _local.hit = True

    def on_duration(event, duration, **kwargs):
        if not event.startswith("/jax/core/compile/"):
            return
        hit = getattr(_local, "hit", False)
        if event.endswith("backend_compile_duration"):
            _local.hit = False
        if duration >= 0.02:
            _write({"ev": event.rsplit("/", 1)[1], "fun": kwargs.get("fun_name", ""), "s": round(duration, 3),
                    "hit": hit})

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)


class _Finder:
    """Runs `_register` right after `jax._src.monitoring` is imported."""

    def find_spec(self, name, path, target=None):
        if name != "jax._src.monitoring":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _register(module)

        spec.loader.exec_module = exec_and_register
        return spec


def summary(folder):
    records = []
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            records += [json.loads(line) for line in f]
    kind = {"jaxpr_trace_duration": "trace", "jaxpr_to_mlir_module_duration": "lower"}
    totals, programs = collections.Counter(), collections.defaultdict(list)
    for r in records:
        if r["ev"] == "backend_compile_duration":
            totals["read from the cache" if r["hit"] else "compiled"] += r["s"]
            if not r["hit"]:
                programs[r["fun"]].append(r["s"])
        elif r["ev"] in kind:
            totals[kind[r["ev"]]] += r["s"]
    print("seconds:", {k: round(v) for k, v in totals.items()})
    print("compiled, by program name (count, seconds):")
    for fun, times in sorted(programs.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"  {fun:40s} {len(times):5d} {sum(times):8.1f}")
    exits = [r for r in records if r["ev"] == "exit" and r["test"]]
    print(f"processes started by tests (exited normally): {len(exits)}, {sum(r['wall'] for r in exits):.0f} s of "
          f"wall time, {sum(r['tf'] for r in exits)} imported TensorFlow")


if __name__ == "__main__":
    summary(sys.argv[1])
elif _OUT:
    sys.meta_path.insert(0, _Finder())
    atexit.register(lambda: _write({"ev": "exit", "argv": sys.argv[:6], "wall": round(time.time() - _T0, 2),
                                    "tf": "tensorflow" in sys.modules}))
