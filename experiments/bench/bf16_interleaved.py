"""bfloat16 against float32, both steps compiled in one process and timed in alternation (resnet_9blocks,
basic D, ngf = ndf = 64, batch 1, conv_impl=auto): `python experiments/bench/bf16_interleaved.py SIZE ROUNDS`."""
import sys, time, statistics, numpy as np, jax
from cyclejax import benchmark, model as model_lib, parallel, train_state, train_step, host_memory
size, rounds = int(sys.argv[1]), int(sys.argv[2])
mesh = parallel.make_mesh(); shape = (size, size, 3)
rng = np.random.default_rng(0)
data = parallel.shard_batch({k: rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for k in "AB"}, mesh)
runs = {}
for dt in ("float32", "bfloat16"):
    config = benchmark._config("resnet_9blocks", "basic", 64, 64, dt, 1, "auto")
    model = model_lib.build(config, steps_per_epoch=1000)
    state = parallel.replicate(train_state.create(model, 0, shape, shape), mesh)
    options = train_step.compiler_options(model, shape, shape, 1)
    step = train_step.jit_train_step(model, mesh, options).lower(state, data).compile()
    state, m = step(state, data); jax.block_until_ready(m)
    runs[dt] = [step, state, []]
host_memory.release_free_pages()
for r in range(rounds):
    for dt, run in runs.items():
        step, state, times = run
        t = time.perf_counter(); state, m = step(state, data); jax.block_until_ready(m); times.append(time.perf_counter() - t)
        run[1] = state
med = {dt: statistics.median(run[2]) for dt, run in runs.items()}
print({dt: [round(t, 3) for t in run[2]] for dt, run in runs.items()})
print("median fp32 %.3f bf16 %.3f ratio %.3f" % (med["float32"], med["bfloat16"], med["bfloat16"] / med["float32"]))
