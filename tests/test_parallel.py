"""Data parallelism on 8 fake CPU devices equals one device with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cyclejax import onednn

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)

ROOT = Path(__file__).resolve().parents[1]
# 'winograd': Winograd's form for the ResNet blocks (plain XLA ops, which XLA partitions) and
# oneDNN's convolutions for every other layer (custom calls, per device).
IMPLS = [pytest.param("winograd", marks=pytest.mark.skipif(not onednn.available(),
                                                           reason=f"oneDNN: {onednn.unavailable_reason()}")), "xla"]


@pytest.fixture(scope="module")
def results():
    """Each conv_impl's report, from one worker process: one start-up and one float64 truth for all."""
    impls = ["winograd", "xla"] if onednn.available() else ["xla"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "tests.multidevice_worker", *impls], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["conv_impl"]: r for r in reports}


@pytest.mark.slow
@pytest.mark.parametrize("conv_impl", IMPLS)
def test_eight_devices_equal_one_device(results, conv_impl):
    """One step, global batch 8 (pool filling then swapping): parameters, outputs and losses are as
    close to the float64 truth as one device's (a tolerance measured on the machine, not tuned).

    Conv biases before instance norm are left out of the parameter comparison (the worker
    finds them by checking the output does not move when they do): see its docstring.
    'xla' runs XLA's convolutions, which XLA itself partitions (tests/test_multihost.py also trains
    with them, in float64, on 4 devices and in 2 processes; 'matmul' is plain XLA ops as well and
    took 2.5 times as long here); 'winograd' oneDNN's custom calls for all but the ResNet blocks, each device on its own rows of the batch (in `jax.shard_map`:
    XLA cannot split a custom call), kernel gradients summed over the devices.
    """
    result = results[conv_impl]
    assert result["shards"] == [8, 1]
    assert result["steps"] == 1
    # Parameters, outputs and losses of the 8-device run: no further from the float64 truth than
    # 4 times the 1-device run, plus 16 float32 units (tests/multidevice_worker.py).
    assert result["violations"] == [] and result["compared"] > 50, result
    # resnet_6blocks: 3 + 12 + 2 pre-norm convs in each generator; basic D: 3 in each.
    assert result["inert_biases"] == 2 * 17 + 2 * 3, result
    # oneDNN's calls compute one device's row each on 8 devices (batch 8), all 8 rows on one.
    assert result["onednn_call_rows"] == ([[1], [8]] if conv_impl == "winograd" else [[], []]), result

