"""The same train step on any topology: from the same state and batch, one step in 2 processes (2
devices each) computes what it computes on 1 device, up to float32 round-off, and draws the same
random bits (tests/topology_worker.py does the steps).

Two runs on different topologies drift apart over many steps, the way any two float32 runs with
different reduction orders do; these tests do not chase that. One thing is not round-off: where a
kink's input (ReLU, leaky ReLU, the |.| of L1) lies within round-off of zero, the two topologies
can take different branches, and the gradient of everything before it differs by that one
input's share (about one input in a million per step here, a few percent of a gradient of these
tiny networks). With every kink pinned to the branch one device took, every gradient agrees.
"""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from cyclejax import datasets, input_pipeline
from tests import topology_worker
from tests.conftest import tiny_config
from tests.test_multihost import ROOT, _env, run_processes

# Values, gradients and kink inputs: the largest difference within an array, in float32 eps of the
# array's largest magnitude (an element near zero is measured against its array, as its round-off
# is that of the terms it sums). Measured (AMD EPYC, 2026-11-28): losses, fakes, pooled images and
# batch statistics within 16 eps, kink inputs 44, gradients 78 (from the later state). Round-off
# grows with the depth of what computes a value, a few eps a layer through the ~70 convolutions
# of the cycle's forward and backward passes; 256 eps (3e-5) is three times the worst measured,
# and a real difference (one image flipped, one kink crossed) is 1e4 to 1e7 eps.
STEP_EPS = 256
VALUES = ("losses", "fakes", "pooled", "batch_stats", "new_pools", "kink_inputs", "grads")


def _worker(out, *args, processes=1):
    cmd = [sys.executable, "-m", "tests.topology_worker", str(out), *args]
    if processes == 1:
        done = subprocess.run(cmd, cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    else:
        run_processes(cmd, processes=processes, devices=topology_worker.MULTI_DEVICES)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The worker's reports (the 1-device steps and the control), and the folder with its 1-device results."""
    out = tmp_path_factory.mktemp("topology")
    _worker(out)
    return out, json.loads((out / "single.json").read_text())


def _assert_same_step(r, devices):
    """One report of tests/topology_worker.py: the step on another topology (`devices` in all) vs the
    step on 1 device."""
    where = (r["case"], r["state"], r["topology"])
    for group in VALUES:
        assert r[group] <= STEP_EPS, (where, group, r[group])
    # Kinks crossed: only inputs within round-off of zero (kink_inputs above), a few at most; with
    # none crossed the step's own gradients agree too.
    assert r["crossed_kinks"] <= 10, (where, r["crossed_kinks"])
    if r["crossed_kinks"] == 0:
        assert r["grads_unpinned"] <= STEP_EPS, where
    assert r["inert_grads"] <= 1 and r["updates"] <= 1, (where, r["inert_grads"], r["updates"])
    # The random bits, to the bit.
    assert r["keys_equal"], where
    assert r["dropout_masks"][1] and r["alphas"][1], where
    assert r["pool_draws"][0] == r["pool_draws"][1], where
    # The same step again on the same topology: the same bits.
    assert r["repeats_to_the_bit"], where
    # The batch was split: each device did 1/devices of the work. oneDNN's convolutions
    # (conv_impl=auto on a CPU where the extension is built) are custom calls, which XLA's FLOP
    # count does not see: each computes one device's rows of the batch of 8; XLA's convolutions
    # are in the count.
    if r["onednn_call_rows"] != [[], []]:
        assert r["onednn_call_rows"] == [[8 // devices], [8]], where
    else:
        assert r["flops_per_device"][0] < r["flops_per_device"][1] / (0.75 * devices), where


def _cases(results, topology):
    return {(r["case"], r["state"]): r for r in results if r["topology"] == topology}


@pytest.mark.slow
def test_the_bounds_see_a_real_difference(single):
    """A control: the same step with one image of the batch flipped fails every bound."""
    _, results = single
    control = _cases(results, "control: one image flipped")["dropout_wgangp_batchnorm", "later"]
    for group in ("losses", "fakes", "kink_inputs", "grads"):
        assert control[group] > 100 * STEP_EPS, (group, control[group])
    assert control["crossed_kinks"] > 1000


@pytest.mark.slow
def test_two_processes_compute_the_step_one_device_computes(single):
    """Two processes (2 devices each, gloo on loopback) against one device, from the same states:
    the batch split over devices within a process and across processes. (8 devices of one process
    against 1, the same partitioned step on one more split, took 40 s more of compilation:
    `python -m tests.topology_worker OUT --eight_devices`; the official options' step on 8 devices
    is tests/test_parallel.py's.)"""
    out, _ = single
    _worker(out, processes=2)
    devices = 2 * topology_worker.MULTI_DEVICES
    reports = _cases(json.loads((out / "multi.json").read_text()), f"2 processes, {devices} devices vs 1")
    assert set(reports) == {(c, s) for c in topology_worker.TESTED for s in ("first", "later")}
    for r in reports.values():
        _assert_same_step(r, devices=devices)
        assert r["init"] == r["init_reference"]  # each process initialised the parameters to the bit
    first = reports["dropout_wgangp_batchnorm", "first"]
    # What the case exercises: 36 dropout masks (6 generator calls x 6 blocks) of which about
    # half keep; the penalty's alphas (one draw per discriminator); a pool of 4 that fills and
    # swaps within the first step of 8 images, and batch statistics over the global batch.
    assert first["dropout_masks"][0] == 36 and abs(first["dropout_keep_fraction"] - 0.5) < 0.01
    assert first["alphas"][0] == 2
    assert "s" in first["pool_draws"][1]["A"][0] and first["pool_draws"][1]["A"][2] == 4
    assert first["batch_stats"] > 0  # norm='batch': compared, and round-off apart


@pytest.mark.slow
def test_the_first_state_is_drawn_the_same_on_one_device(single):
    """The parameters' initialisation in this process (one device) equals the worker's, which has 8."""
    if jax.default_backend() != "cpu":
        pytest.skip("compares with the worker's CPU devices")
    _, results = single
    case = topology_worker.TESTED[0]
    _, _, first = topology_worker.first_state(case)
    assert topology_worker.digest(first) == _cases(results, "1 device")[case, "first"]["init"]


def test_flips_and_crops_do_not_depend_on_the_process_count():
    """Each process reads its rows of the global batch, cropped and flipped as one process would."""
    A, B = (datasets.load_split("embedded", split, 12) for split in ("trainA", "trainB"))
    for preprocess in ("none", "resize_and_crop"):  # flips only; crops and flips
        config = tiny_config(batch_size=8, preprocess=preprocess)
        one = input_pipeline.train_batches(A, B, config, 0)
        two = [input_pipeline.train_batches(A, B, config, 0, p, 2) for p in (0, 1)]
        for _ in range(2):
            whole, parts = next(one), [next(t) for t in two]
            for k in ("A", "B", "step"):
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    # The flips themselves: which of the 16 images of A in 2 global batches were mirrored.
    config = tiny_config(batch_size=8, preprocess="none")
    stream = input_pipeline.index_stream(len(A), len(B), 8, config.seed, 0, slice(None))
    one = input_pipeline.train_batches(A, B, config, 0)
    flips = []
    for _ in range(2):
        _, idx_A, _ = next(stream)
        for image, i in zip(next(one)["A"], idx_A):
            src = A[i] / 127.5 - 1.0
            flipped = np.allclose(image, src[:, ::-1], atol=1e-6)
            assert flipped or np.allclose(image, src, atol=1e-6)
            flips.append(flipped)
    assert 0 < sum(flips) < len(flips)  # both happen; and the same in two processes (above)
