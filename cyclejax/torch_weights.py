"""PyTorch state dicts <-> Flax variables, by the official key rule.

cyclejax's parameter trees follow the official state-dict keys (`cyclejax.networks`), so a
key maps to a path by turning `name.N` into `name_N`: `model.10.conv_block.1.weight` is
params['model_10']['conv_block_1']['kernel']. Conv weights go from OIHW to HWIO, transposed
conv weights from IOHW to (kh, kw, in, out) (which convolutions are transposed is found by
tracing the network); batch norm's weight/bias/running_mean/running_var become scale/bias
and batch_stats mean/var; the empty running statistics that old checkpoints carry for
instance norm are dropped. Used for the official generators (`bundle.from_official`) and
pytorch-fid's Inception (`inception.load_weights`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclejax import layers, pth
from cyclejax.errors import ConversionError

_STAT_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


def torch_key(path: tuple[str, ...], leaf: str) -> str:
    """(('model_10', 'conv_block_1'), 'weight') -> 'model.10.conv_block.1.weight'."""
    return ".".join([re.sub(r"_(\d+)$", r".\1", p) for p in path] + [leaf])


def transposed_paths(net: nn.Module, shape) -> set[tuple[str, ...]]:
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
                            where: str, key_fn=torch_key, ignore: tuple[str, ...] = (),
                            describe: str | None = None) -> dict:
    """{'params', 'batch_stats'} of `net` from a PyTorch state dict of numpy arrays.

    `key_fn(path, leaf)` names the torch entry of a Flax leaf; keys starting with a prefix
    in `ignore` may be present and are not used. `where` (the file) and `describe` (what
    `net` is, e.g. "ResNet generator with 9 blocks, ngf=64, norm=instance") go into the
    error message when the file does not fit.
    """
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items() if not k.startswith(ignore)}
    shape = (1, multiple, multiple, input_nc)
    like = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(shape), train=False))
    transposed = transposed_paths(net, shape)
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
        raise ConversionError(f"{where} is not an official {describe or net.__class__.__name__} state dict. {_hint(sd)} "
                              f"Differences: {shown}.")
    return variables


def _torch_shape(flax_shape, leaf, transposed):
    if leaf != "kernel":
        return tuple(flax_shape)
    kh, kw, i, o = flax_shape
    return (i, o, kh, kw) if transposed else (o, i, kh, kw)


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
    """A PyTorch state dict file as numpy arrays: float32 for floating tensors, integer and bool
    ones (e.g. batch norm's `num_batches_tracked`) as saved. Needs no torch (`cyclejax.pth`)."""
    return {k: v if v.dtype.kind in "biu" else v.astype(np.float32)
            for k, v in pth.read_state_dict(path).items()}


def variables_to_state_dict(variables: dict, net: nn.Module, input_nc: int, multiple: int) -> dict[str, np.ndarray]:
    """The inverse of `state_dict_to_variables`: an official-layout state dict of numpy arrays
    (for the official PyTorch test script, or to make a test file without torch models)."""
    transposed = transposed_paths(net, (1, multiple, multiple, input_nc))
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
