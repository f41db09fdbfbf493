"""Every backend lowers: the whole train step exported for GPU and TPU from this CPU-only machine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cyclejax import onednn

ROOT = Path(__file__).resolve().parents[1]
# What only a CPU runs: oneDNN's convolutions (our XLA FFI targets) and host callbacks.
CPU_ONLY = ("cyclejax_onednn", "callback", "host")


@pytest.mark.slow
@pytest.mark.parametrize("variants, netG, size", [("", "resnet_6blocks", 64), ("paper", "resnet_9blocks", 256)])
def test_the_train_step_lowers_for_gpu_and_tpu_without_cpu_only_calls(variants, netG, size):
    """The quick-start and paper configs, float32 and bfloat16, on 8 devices: `jax.export` for
    'cuda' and 'tpu' with the convolutions conv_impl='auto' takes there (XLA's) gives programs with
    no custom call at all, every convolution a stablehlo.convolution, and the batch split over the
    `data` axis while the state is replicated. The CPU export of the same step is the control:
    there 'auto' takes oneDNN's custom calls, which the check finds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "tests.backend_worker", variants], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["platform"], r["dtype"]) for r in rows] == [
        (p, d) for d in ("float32", "bfloat16") for p in ("cuda", "tpu", "cpu")]
    for r in rows:
        assert r["netG"] == netG and r["size"] == [size, size] and r["devices"] == 8, r
        assert r["platforms"] == [r["platform"]], r
        cpu_only = [c for c in r["custom_calls"] if any(word in c.lower() for word in CPU_ONLY)]
        if r["platform"] != "cpu":
            assert r["custom_calls"] == [] and r["conv_ops"] > 100, r
            assert r["batch_sharding"] == {k: '#sdy.sharding<@mesh, [{"data"}, {}, {}, {}]>' for k in "AB"}, r
            assert r["param_sharding"] == "#sdy.sharding<@mesh, [{}, {}, {}, {}]>", r
        elif onednn.available():
            assert cpu_only and all(c.startswith("cyclejax_onednn_conv_") for c in cpu_only), r
