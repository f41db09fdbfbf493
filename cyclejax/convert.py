"""Official PyTorch generators -> a cyclejax bundle: `python -m cyclejax.convert`.

    # a pair trained with the official train.py (checkpoints/<name>/latest_net_G_A.pth, _G_B.pth)
    python -m cyclejax.convert --G_A=latest_net_G_A.pth --G_B=latest_net_G_B.pth --output=OUT
    # a released pretrained model (one direction, e.g. horse2zebra.pth): it becomes 'AtoB'
    python -m cyclejax.convert --pretrained=horse2zebra.pth --output=OUT

with --netG, --ngf and --norm as the model was trained (defaults: resnet_9blocks, 64,
instance). Needs torch to read the files (`pip install "cyclejax[torch]"`).

cyclejax's parameter tree follows the official state-dict keys (`cyclejax.networks`), so a
key maps to a path by turning `name.N` into `name_N`: `model.10.conv_block.1.weight` is
params['model_10']['conv_block_1']['kernel']. Conv weights go from OIHW to HWIO, transposed
conv weights from IOHW to (kh, kw, in, out); batch norm's weight/bias/running_mean/
running_var become scale/bias and batch_stats mean/var; the empty running statistics that
old checkpoints carry for instance norm are dropped.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cyclejax import bundle as bundle_lib
from cyclejax import layers, networks


_STAT_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


class ConversionError(ValueError):
    pass


def torch_key(path: tuple[str, ...], leaf: str) -> str:
    """(('model_10', 'conv_block_1'), 'weight') -> 'model.10.conv_block.1.weight'."""
    return ".".join([re.sub(r"_(\d+)$", r".\1", p) for p in path] + [leaf])


def _transposed_paths(net: nn.Module, shape) -> set[tuple[str, ...]]:
    """Paths of the `ConvTranspose` modules of `net`, found by tracing its init."""
    found = set()

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.ConvTranspose):
            found.add(tuple(context.module.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return found


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], net: nn.Module, input_nc: int, multiple: int,
                            where: str, key_fn=torch_key, ignore: tuple[str, ...] = ()) -> dict:
    """{'params', 'batch_stats'} of `net` from a PyTorch state dict of numpy arrays.

    `key_fn(path, leaf)` names the torch entry of a Flax leaf; keys starting with a prefix
    in `ignore` may be present and are not used.
    """
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items() if not k.startswith(ignore)}
    shape = (1, multiple, multiple, input_nc)
    like = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(shape), train=False))
    transposed = _transposed_paths(net, shape)
    used, problems = set(), []

    def take(path, leaf, flax_leaf, want_shape):
        key = key_fn(path, leaf)
        if key not in sd:
            problems.append(f"missing {key}")
            return np.zeros(want_shape, np.float32)
        used.add(key)
        arr = sd[key].astype(np.float32)
        if flax_leaf == "kernel":
            arr = arr.transpose(2, 3, 0, 1) if path in transposed else arr.transpose(2, 3, 1, 0)
        if arr.shape != tuple(want_shape):
            problems.append(f"{key} has shape {tuple(sd[key].shape)}, the {net.__class__.__name__} needs "
                            f"{_torch_shape(want_shape, flax_leaf, path in transposed)}")
        return arr

    def convert(tree, prefix, collection):
        out = {}
        for name, sub in tree.items():
            if isinstance(sub, Mapping):
                out[name] = convert(sub, prefix + (name,), collection)
                continue
            if collection == "batch_stats":
                leaf = {"mean": "running_mean", "var": "running_var"}[name]
            else:
                leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[name]
            out[name] = take(prefix, leaf, name, sub.shape)
        return out

    variables = {c: convert(like[c], (), c) for c in like}
    # Instance norm keeps no statistics; old checkpoints still list empty ones. Drop them.
    extra = [k for k in sd if k not in used and not k.endswith(_STAT_LEAVES)]
    leftover_stats = [k for k in sd if k not in used and k.endswith(_STAT_LEAVES[:2])]
    if "batch_stats" not in like:
        leftover_stats = []
    problems += [f"unexpected {k}" for k in extra + leftover_stats]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ConversionError(f"{where} is not an official {_describe(net)} state dict. {_hint(sd)} "
                              f"Differences: {shown}.")
    return variables


def _torch_shape(flax_shape, leaf, transposed):
    if leaf != "kernel":
        return tuple(flax_shape)
    kh, kw, i, o = flax_shape
    return (i, o, kh, kw) if transposed else (o, i, kh, kw)


def _describe(net: nn.Module) -> str:
    if isinstance(net, networks.UnetGenerator):
        return f"U-Net generator with ngf={net.ngf}, norm={net.norm}"
    if isinstance(net, networks.ResnetGenerator):
        return f"ResNet generator with {net.n_blocks} blocks, ngf={net.ngf}, norm={net.norm}"
    return net.__class__.__name__


def _hint(sd: Mapping[str, np.ndarray]) -> str:
    """What the file looks like, so that the user can pick --netG/--ngf/--norm."""
    first = sd.get("model.1.weight")
    if first is not None and first.ndim == 4:
        blocks = len({k.split(".")[1] for k in sd if ".conv_block." in k})
        norm = "batch" if any(k.endswith("running_mean") for k in sd) and "model.1.bias" not in sd else "instance"
        return (f"It looks like a ResNet generator with {blocks} blocks, ngf {first.shape[0]} and {norm} norm: "
                f"try --netG=resnet_{blocks}blocks --ngf={first.shape[0]} --norm={norm}.")
    if "model.model.0.weight" in sd:
        return (f"It looks like a U-Net generator with ngf {sd['model.model.0.weight'].shape[0]}: "
                f"try --netG=unet_256 or unet_128 with --ngf={sd['model.model.0.weight'].shape[0]}.")
    return "Check --netG, --ngf and --norm against the options the model was trained with."


def load_pth(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict file as numpy arrays (needs torch)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist")
    try:
        import torch
    except ImportError as e:
        raise ConversionError("reading .pth files needs torch: pip install 'cyclejax[torch]'") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or truncated files
        raise ConversionError(f"{path} is not a readable PyTorch state dict ({type(e).__name__}: {e})") from e
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping) or not all(hasattr(v, "shape") for v in sd.values()):
        raise ConversionError(f"{path} does not hold a state dict of tensors")
    return {k: v.detach().cpu().float().numpy() for k, v in sd.items()}


def convert(files: Mapping[str, str | Path], netG: str = "resnet_9blocks", ngf: int = 64, norm: str = "instance",
            no_dropout: bool = True, input_nc: int = 3, output_nc: int = 3,
            domains: dict[str, str] | None = None) -> bundle_lib.Bundle:
    """A bundle from official generator files: {'AtoB': G_A.pth, 'BtoA': G_B.pth} or just {'AtoB': ...}."""
    config = {"netG": netG, "ngf": ngf, "norm": norm, "no_dropout": no_dropout, "input_nc": input_nc,
              "output_nc": output_nc, "dtype": "float32"}
    if domains is None:
        domains = bundle_lib.domain_names(Path(next(iter(files.values()))).stem)
    config["domains"] = domains
    config["source"] = {"converted_from": {d: str(Path(f).absolute()) for d, f in files.items()}}
    skeleton = bundle_lib.Bundle(config=config, variables={d: {} for d in files})
    variables = {}
    for direction, f in files.items():
        net = skeleton.generator(direction)
        nc = input_nc if direction == "AtoB" else output_nc
        variables[direction] = state_dict_to_variables(load_pth(f), net, nc, skeleton.multiple, str(f))
        variables[direction].setdefault("batch_stats", {})
    return bundle_lib.Bundle(config=config, variables=variables)


def define_flags() -> None:
    """The command's flags (defined only when it runs, so the modules import together)."""
    flags.DEFINE_string("G_A", None, "official latest_net_G_A.pth (A -> B)")
    flags.DEFINE_string("G_B", None, "official latest_net_G_B.pth (B -> A)")
    flags.DEFINE_string("pretrained", None, "a released one-direction model such as horse2zebra.pth")
    flags.DEFINE_string("output", None, "the bundle folder to write", required=True)
    flags.DEFINE_enum("netG", "resnet_9blocks", list(networks.GENERATORS), "the official --netG")
    flags.DEFINE_integer("ngf", 64, "the official --ngf")
    flags.DEFINE_enum("norm", "instance", list(layers.NORMS), "the official --norm")
    flags.DEFINE_bool("no_dropout", True, "the official --no_dropout (CycleGAN's default)")
    flags.DEFINE_string("domains", None, "names of A and B, e.g. horse,zebra (default: from the file name)")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.pretrained and (FLAGS.G_A or FLAGS.G_B):
        sys.exit("error: give either --pretrained or --G_A/--G_B, not both")
    files = {"AtoB": FLAGS.pretrained} if FLAGS.pretrained else {
        d: f for d, f in (("AtoB", FLAGS.G_A), ("BtoA", FLAGS.G_B)) if f}
    if not files:
        sys.exit("error: give --pretrained=<name>.pth, or --G_A and/or --G_B")
    domains = None
    if FLAGS.domains:
        a, _, b = FLAGS.domains.partition(",")
        domains = {"A": a, "B": b or "B"}
    try:
        b = convert(files, FLAGS.netG, FLAGS.ngf, FLAGS.norm, FLAGS.no_dropout, domains=domains)
        out = bundle_lib.save(b, FLAGS.output)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"cyclejax: wrote {out} ({', '.join(b.directions)}; {b.config['netG']}, ngf {b.config['ngf']})", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)


def variables_to_state_dict(variables: dict, net: nn.Module, input_nc: int, multiple: int) -> dict[str, np.ndarray]:
    """The inverse of `state_dict_to_variables`: an official-layout state dict of numpy arrays
    (for the official PyTorch test script, or to make a test file without torch models)."""
    transposed = _transposed_paths(net, (1, multiple, multiple, input_nc))
    out = {}
    for collection, tree in variables.items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            names = tuple(p.key for p in path)
            prefix, name = names[:-1], names[-1]
            arr = np.asarray(leaf, np.float32)
            if collection == "batch_stats":
                key = torch_key(prefix, {"mean": "running_mean", "var": "running_var"}[name])
            elif name == "kernel":
                key = torch_key(prefix, "weight")
                arr = arr.transpose(2, 3, 0, 1) if prefix in transposed else arr.transpose(3, 2, 0, 1)
            else:
                key = torch_key(prefix, "weight" if name == "scale" else name)
            out[key] = np.ascontiguousarray(arr)
    return out
