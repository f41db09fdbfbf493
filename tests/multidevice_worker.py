"""Run in a subprocess with 8 fake CPU devices: the same steps on 8 devices and on 1.

Prints one JSON line: the largest parameter difference and how the batch was laid out.
"""
import json
import os
import sys

assert "jax" not in sys.modules
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cyclejax import model as model_lib, parallel, train_state, train_step  # noqa: E402
from tests.inert import inert_biases  # noqa: E402
from tests.onednn_calls import onednn_call_rows  # noqa: E402
from tests.test_train_step import tiny_config  # noqa: E402


def run(devices, batches, config):
    model = model_lib.build(config, steps_per_epoch=10)
    state = train_state.create(model, 0, (32, 32, 3), (32, 32, 3))
    mesh = parallel.make_mesh(devices)
    step = train_step.jit_train_step(model, mesh)
    state = parallel.replicate(state, mesh)
    rows = onednn_call_rows(step.lower(state, parallel.shard_batch(batches[0], mesh)).compile())
    for b in batches:
        sharded = parallel.shard_batch(b, mesh)
        shards = len(sharded["A"].addressable_shards)
        state, metrics = step(state, sharded)
    return jax.device_get(state), jax.device_get(metrics), shards, rows


def main():
    assert len(jax.devices()) == 8, jax.devices()
    # argv[1]: the conv_impl ('onednn' runs its custom calls per device, in shard_map).
    config = tiny_config(batch_size=8, pool_size=4, conv_impl=sys.argv[1] if len(sys.argv) > 1 else "auto")
    rng = np.random.default_rng(0)
    batches = [{k: rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32) for k in "AB"} for _ in range(1)]
    s8, m8, shards8, rows8 = run(jax.devices(), batches, config)
    s1, m1, shards1, rows1 = run(jax.devices()[:1], batches, config)
    model = model_lib.build(config, steps_per_epoch=10)
    x = batches[0]["A"]
    param_diff, output_diff, n_inert = 0.0, 0.0, 0
    for name in ("G_A", "G_B", "D_A", "D_B"):
        net = getattr(model, name)
        inert = inert_biases(net, s1.params[name], x)
        n_inert += len(inert)
        for path, a in jax.tree_util.tree_leaves_with_path(s8.params[name]):
            if jax.tree_util.keystr(path) not in inert:
                b = np.asarray(dict(jax.tree_util.tree_leaves_with_path(s1.params[name]))[path])
                param_diff = max(param_diff, float(np.max(np.abs(np.asarray(a) - b))))
        outs = [np.asarray(net.apply({"params": s.params[name]}, x, train=True)) for s in (s8, s1)]
        output_diff = max(output_diff, float(np.max(np.abs(outs[0] - outs[1]))))
    loss_diff = max(abs(float(m8[k]) - float(m1[k])) for k in m8)
    print(json.dumps({"max_param_diff": param_diff, "max_output_diff": output_diff, "max_loss_diff": loss_diff,
                      "inert_biases": n_inert, "shards": [shards8, shards1], "steps": int(s8.step),
                      "onednn_call_rows": [rows8, rows1]}))


if __name__ == "__main__":
    main()
