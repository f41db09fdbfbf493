"""The official CycleGAN networks written in PyTorch with the official module layout.

Used by the tests as the reference that cyclejax must reproduce: the nn.Sequential indices
(and so the state-dict keys) are those of junyanz/pytorch-CycleGAN-and-pix2pix's
models/networks.py, so `load_flax` exercises the same key mapping the converter uses.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def norm_layer(norm: str):
    if norm == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    return lambda c: nn.Identity()


class ResnetBlock(nn.Module):
    def __init__(self, dim, norm, use_dropout, use_bias):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(norm)(dim), nn.ReLU(True)]
        if use_dropout:
            layers += [nn.Dropout(0.5)]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(norm)(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm="instance", use_dropout=False, n_blocks=9):
        super().__init__()
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), nl(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2**i
            model += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=use_bias), nl(ngf * m * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * 4, norm, use_dropout, use_bias)]
        for i in range(2):
            m = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                      nl(ngf * m // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm="instance", use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, nl(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nl(inner_nc), submodule, nn.ReLU(True), upconv, nl(outer_nc)]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm="instance", use_dropout=False):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="instance"):
        super().__init__()
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        seq = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=use_bias), nl(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=use_bias), nl(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


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


def flax_to_torch(module: nn.Module, params, batch_stats=None) -> dict[str, np.ndarray]:
    """cyclejax arrays (NHWC layout) for every entry of `module`'s state dict, in torch layout."""
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
        out[key] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def load_flax(module: nn.Module, params, batch_stats=None) -> nn.Module:
    """Copies cyclejax parameters into a torch module of the official layout."""
    arrays = flax_to_torch(module, params, batch_stats)
    sd = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(arrays[k].copy()) if k in arrays else v for k, v in sd.items()})
    return module


def _module_at(module: nn.Module, key: str) -> nn.Module:
    for p in key.split(".")[:-1]:
        module = module[int(p)] if p.isdigit() else getattr(module, p)
    return module


def nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)
