"""`python -m cyclejax.bench` end to end at a tiny size: its JSON line, its breakdown, its errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator_forward_flops(batch=2, size=32, ngf=4):
    """One forward pass of resnet_6blocks' convolutions, by hand (2 FLOPs a multiply-add): each
    layer's output pixels x kernel taps x in x out channels; a transposed layer's input pixels
    instead (XLA's count of one also counts its products with inserted zeros). The step runs six:
    each generator on real, cycled and identity images."""
    c, s = ngf, size
    layers = [(s * s, 49 * 3, c), (s * s // 4, 9 * c, 2 * c), (s * s // 16, 18 * c, 4 * c),
              *[(s * s // 16, 36 * c, 4 * c)] * 12, (s * s // 16, 36 * c, 2 * c), (s * s // 4, 18 * c, c),
              (s * s, 49 * c, 3)]
    return 2 * batch * sum(pixels * taps * out for pixels, taps, out in layers)


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "cyclejax.bench", "--netG=resnet_6blocks", "--size=32", "--ngf=4",
                           "--ndf=4", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bench_prints_one_json_line_with_the_step_time_breakdown_and_torch_ratio():
    out = _bench("--steps=2", "--batch=2", "--breakdown", "--warmup=0", "--compare=torch")  # no untimed step: still times two
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["netG"], result["size"], result["batch"], result["dtype"]) == ("resnet_6blocks", 32, 2, "float32")
    assert len(result["step_times"]) == 2
    assert result["s_per_step"] == pytest.approx(sum(result["step_times"]) / 2)  # the median of two
    assert result["img_per_s"] == pytest.approx(2 / result["s_per_step"])
    assert result["compile_s"] > 0 and result["peak_rss_mb"] > 100
    assert result["tflop_per_step"] * 1e12 > 6 * _generator_forward_flops()  # the whole step, whatever the conv_impl
    assert result["compiler_options"] == {}  # a model this small keeps XLA's defaults (train_step.compiler_options)
    assert set(result["breakdown"]) == {"G_forward_s", "D_forward_s", "generator_update_grad_s",
                                        "discriminator_update_grad_s", "first_upsampling_fwd_bwd_s"}
    assert all(v > 0 for v in result["breakdown"].values())
    # The official iteration, timed in its own process at the same size and batch.
    assert result["ratio"] == pytest.approx(result["torch_s_per_step"] / result["s_per_step"])
    assert len(result["torch_step_times"]) == 2 and result["torch_threads"] >= 1
    assert result["torch_version"].startswith("2.") and result["cpu"]
    # Its own process: torch's peak memory is not jax's (a few hundred MB at this size).
    assert 50 < result["torch_peak_rss_mb"] < result["peak_rss_mb"]
    assert f"ratio {result['ratio']:.2f} (> 1: cyclejax faster)" in out.stdout


def test_bench_refuses_an_impossible_setting_in_one_line():
    out = _bench("--batch=0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: config.batch_size=0 must be a positive integer" in out.stderr
    out = _bench("--steps=0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: --steps must be at least 1" in out.stderr


def test_bench_input_times_the_pipeline_alone(tmp_path):
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB"):
        (tmp_path / split).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(tmp_path / split / f"{i}.jpg")
    out = subprocess.run([sys.executable, "-m", "cyclejax.bench", "--input", f"--dataset={tmp_path}", "--size=32",
                          "--batch=2", "--batches=5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["images"] == [4, 4] and (result["size"], result["load_size"], result["batch"]) == (32, 36, 2)
    assert result["input_img_per_s"] > 0 and result["cpus"] >= 1
    missing = subprocess.run([sys.executable, "-m", "cyclejax.bench", "--input"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "error: --input needs --dataset" in missing.stderr


FLOPS = """
import json
import jax
import numpy as np
from cyclejax import benchmark, model as model_lib, onednn, parallel, train_state, train_step

config = benchmark._config("resnet_6blocks", "basic", 4, 4, "float32", 2, "matmul")
state = train_state.create(model_lib.build(config, steps_per_epoch=1000), 0, (32, 32, 3), (32, 32, 3))
batch = {k: np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32) for k in "AB"}
counts = {}
for devices in (1, 2):
    mesh = parallel.make_mesh(jax.devices()[:devices])
    args = parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh)
    counts[f"model {devices}"] = benchmark.model_flops(config, mesh, *args)
    for impl in ("matmul", "onednn") if onednn.available() else ("matmul",):
        own = config.copy_and_resolve_references()  # the program's own count: its convolutions there or not
        own.conv_impl = impl
        model = model_lib.build(own, steps_per_epoch=1000)
        lowered = train_step.jit_train_step(model, mesh).lower(*args)
        counts[f"{impl} {devices}"] = benchmark.compiled_flops(lowered)
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_bench_counts_the_whole_steps_flops_on_any_device_count_and_convolution():
    """tflop_per_step is the step's model FLOPs, all devices together: the same for one device
    or two (a partitioned program's own count is one device's share) and for every conv_impl
    (custom calls hide their FLOPs from XLA's count of the compiled program). One process with
    two devices; the steps lowered, not compiled (where XLA counts)."""
    import os

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", FLOPS], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    one = counts["model 1"]
    assert one > 6 * _generator_forward_flops()
    assert counts["model 2"] == pytest.approx(one, rel=1e-9)
    # Why the count is taken from XLA's convolutions: products are counted, oneDNN's calls not.
    assert counts["matmul 1"] > 6 * _generator_forward_flops()
    if "onednn 1" in counts:
        assert counts["onednn 1"] < _generator_forward_flops()
