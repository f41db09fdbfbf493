"""Times the compiled train step: `python -m cyclejax.bench --netG=resnet_9blocks --size=256`.

Prints what it measures as it goes and, last, one JSON line with `s_per_step` (median of
the timed steps), `compile_s`, `img_per_s`, `gflops_per_s` (XLA's cost analysis of the
compiled step divided by the step time) and `peak_rss_mb`.
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from cyclejax import model as model_lib
from cyclejax import parallel, train_state
from cyclejax.configs import default

_NETG = flags.DEFINE_string("netG", "resnet_9blocks", "generator architecture")
_NETD = flags.DEFINE_string("netD", "basic", "discriminator architecture")
_SIZE = flags.DEFINE_integer("size", 256, "image height and width")
_BATCH = flags.DEFINE_integer("batch", 1, "global batch size")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(model_lib.DTYPES), "compute dtype of the networks")
_NGF = flags.DEFINE_integer("ngf", 64, "generator width")
_NDF = flags.DEFINE_integer("ndf", 64, "discriminator width")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed steps after compilation")


def compiled_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def benchmark(netG: str, netD: str, size: int, batch: int, dtype: str, ngf: int, ndf: int,
              steps: int, warmup: int) -> dict:
    config = default.paper()
    config.update(netG=netG, netD=netD, ngf=ngf, ndf=ndf, dtype=dtype, batch_size=batch)
    model = model_lib.build(config, steps_per_epoch=1000)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(batch, mesh)
    shape = (size, size, 3)
    state = parallel.replicate(train_state.create(model, config.seed, shape, shape), mesh)
    rng = np.random.default_rng(0)
    batch_np = {k: rng.uniform(-1, 1, (batch, *shape)).astype(np.float32) for k in "AB"}
    data = parallel.shard_batch(batch_np, mesh)

    t0 = time.perf_counter()
    compiled = parallel.compile_train_step(model, mesh).lower(state, data).compile()
    compile_s = time.perf_counter() - t0
    flops = compiled_flops(compiled)
    print(f"compiled in {compile_s:.1f} s; {flops / 1e12:.3f} TFLOP per step (XLA cost analysis)", flush=True)

    for _ in range(warmup):
        state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, metrics = compiled(state, data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
        print(f"step {i + 1}/{steps}: {times[-1]:.3f} s", flush=True)
    s_per_step = statistics.median(times)
    return {
        "netG": netG, "netD": netD, "size": size, "batch": batch, "dtype": dtype, "ngf": ngf, "ndf": ndf,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "host": platform.node(),
        "s_per_step": s_per_step, "compile_s": compile_s, "img_per_s": batch / s_per_step,
        "tflop_per_step": flops / 1e12, "gflops_per_s": flops / s_per_step / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_times": times,
    }


def main(argv):
    del argv
    result = benchmark(_NETG.value, _NETD.value, _SIZE.value, _BATCH.value, _DTYPE.value, _NGF.value,
                       _NDF.value, _STEPS.value, _WARMUP.value)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
