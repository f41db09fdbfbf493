"""How long one all-reduce takes on CPU devices: in one process, and between 2 local processes
(gloo on loopback), for a given number of devices a process. Why tests/topology_worker.py runs
its 2-process case with 2 devices a process (its batch-norm step has 528 dependent
all-reduces).

    python experiments/bench/allreduce_latency.py 4       # both settings, 4 devices a process

Each measurement is a jitted chain of 50 dependent batch means over a tiny array sharded over
the devices (one all-reduce each), run 3 times after a warm-up: milliseconds per all-reduce.
"""
import os
import subprocess
import sys
import time

CHAIN, REPEATS = 50, 3


def measure(devices: int, process_id: int | None = None, port: int = 0) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    if process_id is not None:
        jax.distributed.initialize(f"localhost:{port}", 2, process_id)
    mesh = Mesh(np.asarray(jax.devices()), ("d",))
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("d")), np.ones((devices, 16), np.float32))

    @jax.jit
    def chain(y):
        for _ in range(CHAIN):
            y = y - jnp.mean(y, axis=0, keepdims=True) * 0.5 + 1.0
        return y

    chain(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(REPEATS):
        chain(x).block_until_ready()
    ms = (time.perf_counter() - start) / (CHAIN * REPEATS) * 1e3
    if not process_id:
        where = "1 process" if process_id is None else "2 processes"
        print(f"{where}, {devices} devices a process: {ms:.3f} ms per all-reduce", flush=True)


def main(devices: int) -> None:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    me = [sys.executable, __file__]
    subprocess.run([*me, str(devices), "--worker"], env=env, check=True, timeout=300)
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([*me, str(devices), "--worker", str(i), str(port)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for i in (0, 1)]
    try:
        for p in procs:  # gloo announces its connections on stdout: only the result line is kept
            out, _ = p.communicate(timeout=300)
            print("".join(line for line in out.splitlines(keepends=True) if "per all-reduce" in line), end="")
    finally:  # a process whose peer failed would wait for it until jax's own timeout
        for p in procs:
            p.kill()


if __name__ == "__main__":
    if "--worker" in sys.argv:
        rest = sys.argv[sys.argv.index("--worker") + 1:]
        measure(int(sys.argv[1]), int(rest[0]) if rest else None, int(rest[1]) if rest else 0)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
