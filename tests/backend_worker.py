"""Run in a subprocess with 8 fake CPU devices: the whole train step exported with `jax.export`
for GPU and TPU (lowering needs no device), as `conv_impl='auto'` builds it there.

argv: config variants ('' for the quick-start config, 'paper' for the official defaults).
Prints one JSON line per (platform, dtype), CPU included as the control: the custom-call targets in the program, the
sharding of each batch argument and of a parameter, and the devices the program is for.
"""
import json
import os
import re
import sys

assert "jax" not in sys.modules
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cyclejax import model as model_lib, parallel, preprocessing, train_state, train_step  # noqa: E402
from cyclejax.configs import default  # noqa: E402


def argument_shardings(text: str) -> dict[str, str]:
    """{argument name: its sdy sharding} from the exported module's main function (argument
    locations are written as aliases, `#locN = loc("batch['A']")`)."""
    names = dict(re.findall(r'^(#loc\d+) = loc\("([^"]+)"\)', text, re.M))
    main = text[text.index("func.func public @main("):]
    main = main[:main.index(") -> (")]
    out = {}
    for arg in main.split("%arg")[1:]:
        sharding = re.search(r"sdy\.sharding = (#sdy\.sharding<@mesh, \[[^>]*\]>)", arg)
        loc = re.search(r'loc\((#loc\d+|"[^"]+")\)', arg)
        if sharding and loc:
            out[names.get(loc.group(1), loc.group(1).strip('"'))] = sharding.group(1)
    return out


def main():
    variants = sys.argv[1] if len(sys.argv) > 1 else ""
    for dtype in ("float32", "bfloat16"):
        config = default.get_config(variants)
        config.unlock()
        config.update(dtype=dtype, batch_size=8)
        # cpu: the control, where 'auto' takes oneDNN's custom calls (where the extension is built).
        for platform in ("cuda", "tpu", "cpu"):
            model = model_lib.build(config, steps_per_epoch=100, backend=platform)
            size = preprocessing.train_size(config, config.crop_size, config.crop_size)
            shape = (*size, 3)
            mesh = parallel.make_mesh()
            state = jax.eval_shape(lambda: train_state.create(model, config.seed, shape, shape))
            state = jax.tree_util.tree_map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh)), state)
            batch = {k: jax.ShapeDtypeStruct((config.batch_size, *shape), jnp.float32,
                                             sharding=parallel.batch_sharding(mesh)) for k in "AB"}
            step = train_step.jit_train_step(model, mesh)
            if platform == "cpu":  # jax.export refuses our custom calls (no compatibility guarantee)
                text, platforms, devices = step.lower(state, batch).as_text(), [platform], len(mesh.devices)
            else:
                exported = jax.export.export(step, platforms=(platform,))(state, batch)
                text, platforms, devices = exported.mlir_module(), list(exported.platforms), exported.nr_devices
            shardings = argument_shardings(text)
            print(json.dumps({
                "platform": platform, "dtype": dtype, "netG": config.netG, "size": list(size),
                "platforms": platforms, "devices": devices,
                "custom_calls": sorted(set(re.findall(r'custom_call @(\w+)', text))
                                       | set(re.findall(r'call_target_name = "([^"]+)"', text))),
                "batch_sharding": {k: shardings.get(f"batch['{k}']") for k in "AB"},
                "param_sharding": shardings.get("state.params['G_A']['model_1']['kernel']"),
                "conv_ops": text.count("stablehlo.convolution"),
            }), flush=True)


if __name__ == "__main__":
    main()
