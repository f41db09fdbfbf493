"""Timing the compiled train step (`benchmark`) and its parts (`breakdown`); `python -m cyclejax.bench`.

`benchmark` returns `s_per_step` (median of the timed steps), `compile_s`, `img_per_s`,
`gflops_per_s` (XLA's count of the step's FLOPs on all devices, divided by the step time) and
`peak_rss_mb`, on random images with the official defaults at the given sizes.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cyclejax import config_check, convolution, host_memory, parallel, train_state, train_step
from cyclejax import model as model_lib
from cyclejax.configs import default
from cyclejax.layers import conv_transpose
from cyclejax.train_step import NetworkApplier, discriminator_loss, generator_loss


def _config(netG: str, netD: str, ngf: int, ndf: int, dtype: str, batch: int, conv_impl: str = "auto"):
    """The official defaults with the benchmark's sizes; refused like a training config if impossible."""
    config = default.get_config("paper")
    config.update(netG=netG, netD=netD, ngf=ngf, ndf=ndf, dtype=dtype, batch_size=batch, conv_impl=conv_impl)
    config_check.validate(config, jax.device_count())
    return config


def cpu_model() -> str:
    """The CPU's model name (what `lscpu` shows), for the record beside every number."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def compiled_flops(compiled) -> float:
    """FLOPs XLA's cost analysis counts in a compiled (or lowered) program."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def model_flops(config, mesh, state, data) -> float:
    """The step's model FLOPs, all devices together: XLA's count of the step written with XLA's
    convolutions, lowered (before partitioning and optimisation; nothing is compiled). The
    compiled program's count would miss what custom calls compute (oneDNN's here, cuDNN's on a
    GPU) and, partitioned, count one device's share."""
    xla = config.copy_and_resolve_references()
    xla.conv_impl = "xla"
    return compiled_flops(train_step.jit_train_step(model_lib.build(xla, steps_per_epoch=1000), mesh).lower(state, data))


def benchmark(netG: str, netD: str, size: int, batch: int, dtype: str, ngf: int, ndf: int,
              steps: int, warmup: int, conv_impl: str = "auto") -> dict:
    config = _config(netG, netD, ngf, ndf, dtype, batch, conv_impl)
    model = model_lib.build(config, steps_per_epoch=1000)
    mesh = parallel.make_mesh()
    shape = (size, size, 3)
    state = parallel.replicate(train_state.create(model, config.seed, shape, shape), mesh)
    rng = np.random.default_rng(0)
    batch_np = {k: rng.uniform(-1, 1, (batch, *shape)).astype(np.float32) for k in "AB"}
    data = parallel.shard_batch(batch_np, mesh)

    options = train_step.compiler_options(model, shape, shape, batch // jax.device_count())
    t0 = time.perf_counter()
    lowered = train_step.jit_train_step(model, mesh, options).lower(state, data)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops = compiled_flops(lowered) if convolution.resolve(conv_impl) == "xla" else model_flops(config, mesh, state, data)
    print(f"compiled in {compile_s:.1f} s; {flops / 1e12:.3f} TFLOP per step (XLA cost analysis)", flush=True)

    for i in range(warmup):
        state, metrics = compiled(state, data)
        if i == 0:
            jax.block_until_ready(metrics)
            host_memory.release_free_pages()  # as training does after its first step
    jax.block_until_ready(state)
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
        "conv_impl": convolution.resolve(conv_impl), "compiler_options": options,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "host": platform.node(), "cpu": cpu_model(),
        "s_per_step": s_per_step, "compile_s": compile_s, "img_per_s": batch / s_per_step,
        "tflop_per_step": flops / 1e12, "gflops_per_s": flops / s_per_step / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_memory_mb": peak_device_memory_mb(),
        "step_times": times,
    }


def peak_device_memory_mb() -> float | None:
    """The first device's peak memory in use (GPU and TPU report it; None on CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def _time(fn, *args, steps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def breakdown(netG: str, netD: str, size: int, batch: int, dtype: str, ngf: int, ndf: int, steps: int,
              conv_impl: str = "auto") -> dict:
    """Median seconds of the parts of one step, each compiled on its own."""
    config = _config(netG, netD, ngf, ndf, dtype, batch, conv_impl)
    model = model_lib.build(config, steps_per_epoch=1000)
    shape = (size, size, 3)
    state = train_state.create(model, config.seed, shape, shape)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, *shape)), jnp.float32)
    key = jax.random.PRNGKey(0)
    g_fwd = jax.jit(lambda p, x: model.G_A.apply({"params": p}, x))
    d_fwd = jax.jit(lambda p, x: model.D_A.apply({"params": p}, x))
    g_loss = jax.jit(jax.value_and_grad(
        lambda g: generator_loss(g, state.d_params, NetworkApplier(model, state.batch_stats, key), x, x)[0]))
    d_loss = jax.jit(jax.value_and_grad(
        lambda d: discriminator_loss(d, NetworkApplier(model, state.batch_stats, key), x, x, x, x, key)[0]))
    up_in = jnp.ones((batch, size // 4, size // 4, 4 * ngf))
    up_k = jnp.ones((3, 3, 4 * ngf, 2 * ngf)) * 0.01
    up_grad = jax.jit(jax.grad(lambda h, k: jnp.sum(conv_transpose(h, k, 2, 1, 1) ** 2), argnums=(0, 1)))
    return {
        "G_forward_s": _time(g_fwd, state.params["G_A"], x, steps=steps),
        "D_forward_s": _time(d_fwd, state.params["D_A"], x, steps=steps),
        "generator_update_grad_s": _time(g_loss, state.g_params, steps=steps),
        "discriminator_update_grad_s": _time(d_loss, state.d_params, steps=steps),
        "first_upsampling_fwd_bwd_s": _time(up_grad, up_in, up_k, steps=steps),
    }


def input_rate(dataset: str, size: int, batch: int, batches: int, warmup: int = 10) -> dict:
    """Images per second of training batches from `dataset` (read, decoded, resize_and_crop to
    `size` from size * 286 / 256, flipped), the input pipeline alone, on this process's CPUs."""
    from cyclejax import datasets, input_pipeline  # TensorFlow only when the input is timed

    config = default.get_config("paper")
    config.update(dataset=dataset, batch_size=batch, crop_size=size, load_size=int(size * 286 / 256 + 0.5),
                  preprocess="resize_and_crop", max_dataset_size=0)
    t0 = time.perf_counter()
    split_A, split_B = (datasets.load_split(dataset, s) for s in ("trainA", "trainB"))
    list_s = time.perf_counter() - t0
    with input_pipeline.train_batches(split_A, split_B, config, 0) as it:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            b = next(it)
        elapsed = time.perf_counter() - t0
    assert b["A"].shape == (batch, size, size, 3)
    return {"input_img_per_s": round(2 * batches * batch / elapsed, 1),  # A and B images both count
            "batches": batches, "batch": batch, "size": size, "load_size": config.load_size,
            "images": [len(split_A), len(split_B)], "list_s": round(list_s, 2),
            "cpus": len(os.sched_getaffinity(0)),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def compare_with_torch(result: dict, **sizes) -> dict:
    """`result` (from `benchmark`) with the PyTorch reference timed in a fresh process (so each
    side's peak RSS is its own) and `ratio` = torch s/step ÷ cyclejax s/step (> 1: cyclejax faster)."""
    code = ("import json, sys; from cyclejax import torch_reference as t; "
            "print(json.dumps(t.time_iterations(**json.loads(sys.argv[1]))))")
    # A fresh interpreter that imports torch and nothing of jax's, so its peak RSS is torch's own.
    out = subprocess.run([sys.executable, "-c", code, json.dumps(sizes)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"the PyTorch reference failed:\n{out.stderr[-3000:]}")
    ref = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, **ref, "ratio": ref["torch_s_per_step"] / result["s_per_step"]}
