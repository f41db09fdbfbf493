"""Run in a subprocess with 8 fake CPU devices: the same steps on 8 devices and on 1, and the
float64 truth (one device, x64, from the same float32 start).

    python -m tests.multidevice_worker onednn xla     # a JSON line per conv_impl

Prints, for each conv_impl, one JSON line: how far each run is from the truth, what breaks the
bound (8 devices no further from the truth than 4 times one device, plus 16 float32 units of
the scale), and how the batch was laid out.
"""
import json
import os
import sys

assert "jax" not in sys.modules
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cyclejax import model as model_lib, parallel, train_state, train_step  # noqa: E402
from tests.inert import forward, inert_biases  # noqa: E402
from tests import steps  # noqa: E402
from tests.onednn_calls import onednn_call_rows  # noqa: E402
from tests.test_train_step import tiny_config  # noqa: E402


EPS32 = float(np.finfo(np.float32).eps)


def run(devices, batches, config, start):
    """The steps on `devices` from the state `start` (the same for every conv_impl: the
    initialisation does not depend on how convolutions are computed)."""
    model = model_lib.build(config, steps_per_epoch=10)
    mesh = parallel.make_mesh(devices)
    step = train_step.jit_train_step(model, mesh)
    state = parallel.replicate(start, mesh)
    # The compiled step itself runs the batches: calling `step` would trace and lower it again
    # to find this executable in the compilation cache.
    compiled = step.lower(state, parallel.shard_batch(batches[0], mesh)).compile()
    rows = onednn_call_rows(compiled)
    for b in batches:
        sharded = parallel.shard_batch(b, mesh)
        shards = len(sharded["A"].addressable_shards)
        state, metrics = compiled(state, sharded)
    return jax.device_get(state), jax.device_get(metrics), shards, rows


def truth(batches, config, start32):
    """The same steps in float64 on one device (XLA's convolutions), from the float32 start cast
    exactly: (state, metrics, model)."""
    with jax.enable_x64(True):
        config = config.copy_and_resolve_references()
        config.update(dtype="float64", conv_impl="xla")
        model = model_lib.build(config, steps_per_epoch=10)
        like = train_state.create(model, 0, (32, 32, 3), (32, 32, 3))
        state = jax.tree_util.tree_map(lambda a, b: jnp.asarray(b, a.dtype), like, jax.device_get(start32))
        step = jax.jit(train_step.make_train_step(model), compiler_options=steps.FLOAT64_COMPILER_OPTIONS)
        for b in batches:
            state, metrics = step(state, {k: v.astype(np.float64) for k, v in b.items()})
        return jax.device_get(state), jax.device_get(metrics), model


def within(error8, error1, scale):
    return error8 <= 4 * error1 + 16 * EPS32 * max(scale, 1.0)


def main():
    """argv[1:]: the conv_impls ('onednn' runs its custom calls per device, in shard_map); a JSON
    line for each, against one float64 truth (XLA's convolutions, whatever the conv_impl)."""
    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    batches = [{k: rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32) for k in "AB"} for _ in range(1)]
    start = truth_of = None
    for conv_impl in sys.argv[1:] or ["auto"]:
        config = tiny_config(batch_size=8, pool_size=4, conv_impl=conv_impl)
        if start is None:
            start = jax.device_get(train_state.create(model_lib.build(config, steps_per_epoch=10), 0, (32, 32, 3),
                                                      (32, 32, 3)))
            truth_of = truth(batches, config, start)
        print(json.dumps({"conv_impl": conv_impl, **compare(batches, config, start, *truth_of)}), flush=True)


def compare(batches, config, start, t, mt, model64):
    s8, m8, shards8, rows8 = run(jax.devices(), batches, config, start)
    s1, m1, shards1, rows1 = run(jax.devices()[:1], batches, config, start)
    model = model_lib.build(config, steps_per_epoch=10)
    x = batches[0]["A"]
    errors, violations, n_inert = {}, [], 0
    for name in ("G_A", "G_B", "D_A", "D_B"):
        net = getattr(model, name)
        inert = inert_biases(net, s1.params[name], x)
        n_inert += len(inert)
        truth_leaves = dict(jax.tree_util.tree_leaves_with_path(t.params[name]))
        scale = max(float(np.abs(v).max()) for v in truth_leaves.values())
        for path, a in jax.tree_util.tree_leaves_with_path(s8.params[name]):
            key = f"{name}{jax.tree_util.keystr(path)}"
            if jax.tree_util.keystr(path) in inert:
                continue  # round-off of a zero gradient, turned into +-lr steps by Adam (tests/inert.py)
            b = dict(jax.tree_util.tree_leaves_with_path(s1.params[name]))[path]
            errors[key] = [float(np.abs(np.asarray(v, np.float64) - truth_leaves[path]).max()) for v in (a, b)]
            if not within(*errors[key], scale):
                violations.append(key)
        with jax.enable_x64(True):
            want = np.asarray(forward(getattr(model64, name))(t.params[name], x.astype(np.float64)))
        outs = [np.asarray(forward(net)(s.params[name], x), np.float64) for s in (s8, s1)]
        errors[f"{name} output"] = [float(np.abs(o - want).max()) for o in outs]
        if not within(*errors[f"{name} output"], float(np.abs(want).max())):
            violations.append(f"{name} output")
    for k in m8:
        errors[f"loss {k}"] = [abs(float(m[k]) - float(mt[k])) for m in (m8, m1)]
        if not within(*errors[f"loss {k}"], abs(float(mt[k]))):
            violations.append(f"loss {k}")
    worst = max(errors, key=lambda k: errors[k][0] / max(errors[k][1], 1e-30))
    return {"violations": violations, "compared": len(errors), "worst_ratio": [worst, *errors[worst]],
            "max_param_diff_8_vs_1": max(abs(e[0] - e[1]) for e in errors.values()),
            "inert_biases": n_inert, "shards": [shards8, shards1], "steps": int(s8.step),
            "onednn_call_rows": [rows8, rows1]}


if __name__ == "__main__":
    main()
