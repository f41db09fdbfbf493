"""The tests' side of the PyTorch reference: the official networks and iteration
(`cyclejax.torch_reference`), and copying cyclejax parameters into them (`load_flax`)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cyclejax.torch_reference import *  # noqa: F401,F403  (the networks, OfficialIteration)


def _flax_path(key: str) -> tuple[tuple[str, ...], str]:
    """'model.10.conv_block.1.weight' -> (('model_10', 'conv_block_1'), 'weight')."""
    parts = key.split(".")
    leaf = parts.pop()
    path = []
    for p in parts:
        if p.isdigit():
            path[-1] = f"{path[-1]}_{p}"
        else:
            path.append(p)
    return tuple(path), leaf


def flax_to_torch(module: nn.Module, params, batch_stats=None, dtype=np.float32) -> dict[str, np.ndarray]:
    """cyclejax arrays (NHWC layout) for every entry of `module`'s state dict, in torch layout, as `dtype`."""
    out = {}
    for key, value in module.state_dict().items():
        path, leaf = _flax_path(key)
        if leaf == "num_batches_tracked":
            continue
        node = batch_stats if leaf in ("running_mean", "running_var") else params
        for p in path:
            node = node[p]
        if leaf in ("running_mean", "running_var"):
            arr = np.asarray(node["mean" if leaf == "running_mean" else "var"])
        elif "scale" in node:  # a BatchNorm
            arr = np.asarray(node["scale" if leaf == "weight" else "bias"])
        elif leaf == "bias":
            arr = np.asarray(node["bias"])
        else:
            k = np.asarray(node["kernel"])
            is_transposed = isinstance(_module_at(module, key), nn.ConvTranspose2d)
            arr = k.transpose(2, 3, 0, 1) if is_transposed else k.transpose(3, 2, 0, 1)
        assert tuple(arr.shape) == tuple(value.shape), (key, arr.shape, value.shape)
        out[key] = np.ascontiguousarray(arr, dtype=dtype)
    return out


def load_flax(module: nn.Module, params, batch_stats=None) -> nn.Module:
    """Copies cyclejax parameters into a torch module of the official layout (in the module's dtype)."""
    dtype = next(module.parameters()).detach().numpy().dtype
    arrays = flax_to_torch(module, params, batch_stats, dtype)
    sd = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(arrays[k].copy()) if k in arrays else v for k, v in sd.items()})
    return module


def _module_at(module: nn.Module, key: str) -> nn.Module:
    for p in key.split(".")[:-1]:
        module = module[int(p)] if p.isdigit() else getattr(module, p)
    return module


def nchw(x, dtype=np.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype).transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)
