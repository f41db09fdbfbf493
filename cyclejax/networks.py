"""The official CycleGAN generators and discriminators as Flax Linen modules (NHWC).

Submodules are named after their keys in the official PyTorch state dicts: the layer that
torch calls `model.10.conv_block.1` lives at params['model_10']['conv_block_1'] here, and
`model.model.1.model.1` (a U-Net) at params['model']['model_1']['model_1']. Parameter counts
equal the official ones (tests/test_networks.py).
"""
from __future__ import annotations

import functools
import types
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclejax.layers import (INIT_TYPES, NORMS, Conv, ConvTranspose, Dtype, ModuleDef, conv_bias, full_precision,
                             kernel_init, norm_layer, reflect_pad)

GENERATOR_ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
DISCRIMINATOR_ARCHS = ("basic", "n_layers", "pixel")


def _check_channels(x: jax.Array, expected: int, what: str) -> None:
    if x.ndim != 4 or x.shape[-1] != expected:
        raise ValueError(f"{what} expects NHWC images with {expected} channels, got shape {x.shape}")


# Every network takes its layers as module definitions (`conv`, `conv_transpose`, `norm`), built
# once by `layer_defs` from the official options: the convolutions carry the initialisation,
# the compute dtype and the official bias rule (`use_bias` is their default; layers that the
# official code always gives a bias pass use_bias=True).


class ResnetBlock(nn.Module):
    """[reflect pad 1, conv 3x3, norm, ReLU, (dropout 0.5), reflect pad 1, conv 3x3, norm] + x."""

    dim: int
    conv: ModuleDef
    norm: ModuleDef
    use_dropout: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        h = self.conv(self.dim, 3, name="conv_block_1")(reflect_pad(x, 1))
        h = nn.relu(self.norm(name="conv_block_2")(h, train))
        i = 4
        if self.use_dropout:
            h = nn.Dropout(0.5, deterministic=not train)(h)
            i = 5
        h = self.conv(self.dim, 3, name=f"conv_block_{i + 1}")(reflect_pad(h, 1))
        h = self.norm(name=f"conv_block_{i + 2}")(h, train)
        return x + h


class Generator(nn.Module):
    """What every generator is given: its layers, channels in and out, width, dropout."""

    conv: ModuleDef
    conv_transpose: ModuleDef
    norm: ModuleDef
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    use_dropout: bool = False


class ResnetGenerator(Generator):
    """The official `ResnetGenerator` (Johnson et al.): 2 downsamplings, n residual blocks, 2 upsamplings."""

    n_blocks: int = 9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "ResnetGenerator")
        h = self.conv(self.ngf, 7, name="model_1")(reflect_pad(x, 3))
        h = nn.relu(self.norm(name="model_2")(h, train))
        i = 4
        for d in range(2):
            h = self.conv(self.ngf * 2 ** (d + 1), 3, stride=2, padding=1, name=f"model_{i}")(h)
            h = nn.relu(self.norm(name=f"model_{i + 1}")(h, train))
            i += 3
        for _ in range(self.n_blocks):
            h = ResnetBlock(self.ngf * 4, self.conv, self.norm, self.use_dropout, name=f"model_{i}")(h, train)
            i += 1
        for u in range(2):
            features = self.ngf * 2 ** (1 - u)
            h = self.conv_transpose(features, 3, 2, 1, output_padding=1, name=f"model_{i}")(h)
            h = nn.relu(self.norm(name=f"model_{i + 1}")(h, train))
            i += 3
        h = self.conv(self.output_nc, 7, use_bias=True, name=f"model_{i + 1}")(reflect_pad(h, 3))
        return jnp.tanh(h.astype(full_precision(h.dtype)))


class UnetSkipConnectionBlock(nn.Module):
    """The official `UnetSkipConnectionBlock`: down, submodule, up, and (not outermost) a skip concat."""

    outer_nc: int
    inner_nc: int
    depth_below: int  # how many blocks lie inside this one
    conv: ModuleDef
    conv_transpose: ModuleDef
    norm: ModuleDef
    outermost: bool = False
    use_dropout: bool = False
    ngf: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        down = lambda name: self.conv(self.inner_nc, 4, 2, 1, name=name)  # noqa: E731
        up = lambda name, **kw: self.conv_transpose(self.outer_nc, 4, 2, 1, name=name, **kw)  # noqa: E731
        if self.outermost:
            h = down("model_0")(x)
            h = self._submodule("model_1")(h, train)
            h = up("model_3", use_bias=True)(nn.relu(h))
            return jnp.tanh(h.astype(full_precision(h.dtype)))
        if self.depth_below == 0:  # innermost
            h = down("model_1")(nn.leaky_relu(x, 0.2))
            h = up("model_3")(nn.relu(h))
            h = self.norm(name="model_4")(h, train)
        else:
            h = down("model_1")(nn.leaky_relu(x, 0.2))
            h = self.norm(name="model_2")(h, train)
            h = self._submodule("model_3")(h, train)
            h = up("model_5")(nn.relu(h))
            h = self.norm(name="model_6")(h, train)
            # The official code drops out only in the middle blocks of width 8 * ngf.
            if self.use_dropout and self.outer_nc == self.inner_nc == 8 * self.ngf:
                h = nn.Dropout(0.5, deterministic=not train)(h)
        return jnp.concatenate([x, h.astype(x.dtype)], axis=-1)

    def _submodule(self, name: str) -> "UnetSkipConnectionBlock":
        # Going inwards the official widths double from ngf up to 8 * ngf and stay there.
        return UnetSkipConnectionBlock(self.inner_nc, min(2 * self.inner_nc, 8 * self.ngf), self.depth_below - 1,
                                       self.conv, self.conv_transpose, self.norm, use_dropout=self.use_dropout,
                                       ngf=self.ngf, name=name)


class UnetGenerator(Generator):
    """The official `UnetGenerator`: `num_downs` stride-2 4x4 downsamplings with skips."""

    num_downs: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "UnetGenerator")
        multiple = 2**self.num_downs
        if x.shape[1] % multiple or x.shape[2] % multiple:
            raise ValueError(
                f"a U-Net with {self.num_downs} downsamplings needs height and width divisible by "
                f"{multiple}, got {x.shape[1]}x{x.shape[2]}"
            )
        block = UnetSkipConnectionBlock(self.output_nc, self.ngf, self.num_downs - 1, self.conv, self.conv_transpose,
                                        self.norm, outermost=True, use_dropout=self.use_dropout, ngf=self.ngf,
                                        name="model")
        return block(x, train)


class Discriminator(nn.Module):
    """What every discriminator is given: its layers, channels in, width."""

    conv: ModuleDef
    norm: ModuleDef
    input_nc: int = 3
    ndf: int = 64


class NLayerDiscriminator(Discriminator):
    """The official PatchGAN `NLayerDiscriminator` (n_layers=3 is the 70x70 'basic' one)."""

    n_layers: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "NLayerDiscriminator")
        h = nn.leaky_relu(self.conv(self.ndf, 4, 2, 1, use_bias=True, name="model_0")(x), 0.2)
        i = 2
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            h = self.conv(self.ndf * min(2**n, 8), 4, stride, 1, name=f"model_{i}")(h)
            h = nn.leaky_relu(self.norm(name=f"model_{i + 1}")(h, train), 0.2)
            i += 3
        h = self.conv(1, 4, 1, 1, use_bias=True, name=f"model_{i}")(h)
        return h.astype(full_precision(h.dtype))


class PixelDiscriminator(Discriminator):
    """The official 1x1 PatchGAN `PixelDiscriminator`."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "PixelDiscriminator")
        h = nn.leaky_relu(self.conv(self.ndf, 1, use_bias=True, name="net_0")(x), 0.2)
        h = self.conv(self.ndf * 2, 1, name="net_2")(h)
        h = nn.leaky_relu(self.norm(name="net_3")(h, train), 0.2)
        h = self.conv(1, 1, name="net_5")(h)
        return h.astype(full_precision(h.dtype))


@functools.cache
def layer_defs(norm: str = "instance", init_type: str = "normal", init_gain: float = 0.02,
               dtype: Dtype = jnp.float32, conv_impl: str = "auto") -> Mapping[str, ModuleDef]:
    """{'conv', 'conv_transpose', 'norm'} as the official options define them.

    The same options give the same objects, so networks built from the same options compare
    equal (a module compares its fields, and a fresh initialiser closure is never equal to
    another): `train_state.create` initialises equal networks with one compiled program.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")
    bias = conv_bias(norm)
    return types.MappingProxyType({
        "conv": functools.partial(Conv, use_bias=bias, kernel_init=kernel_init(init_type, init_gain), dtype=dtype,
                                  conv_impl=conv_impl),
        "conv_transpose": functools.partial(ConvTranspose, use_bias=bias, dtype=dtype, conv_impl=conv_impl,
                                            kernel_init=kernel_init(init_type, init_gain, transposed=True)),
        "norm": norm_layer(norm, init_gain),
    })


def define_G(
    netG: str,
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "instance",
    use_dropout: bool = False,
    init_type: str = "normal",
    init_gain: float = 0.02,
    dtype: Dtype = jnp.float32,
    conv_impl: str = "auto",
) -> nn.Module:
    """A generator as the official `networks.define_G` builds it. `dtype` is the compute dtype,
    `conv_impl` how convolutions are computed (`cyclejax.convolution`)."""
    common = dict(input_nc=input_nc, output_nc=output_nc, ngf=ngf, use_dropout=use_dropout,
                  **layer_defs(norm, init_type, init_gain, dtype, conv_impl))
    if netG == "resnet_9blocks":
        return ResnetGenerator(n_blocks=9, **common)
    if netG == "resnet_6blocks":
        return ResnetGenerator(n_blocks=6, **common)
    if netG == "unet_128":
        return UnetGenerator(num_downs=7, **common)
    if netG == "unet_256":
        return UnetGenerator(num_downs=8, **common)
    raise ValueError(f"netG must be one of {GENERATOR_ARCHS}, got {netG!r}")


def define_D(
    netD: str,
    input_nc: int = 3,
    ndf: int = 64,
    n_layers_D: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    dtype: Dtype = jnp.float32,
    conv_impl: str = "auto",
) -> nn.Module:
    """A discriminator as the official `networks.define_D` builds it; `apply` gives patch logits."""
    layers = layer_defs(norm, init_type, init_gain, dtype, conv_impl)
    common = dict(input_nc=input_nc, ndf=ndf, conv=layers["conv"], norm=layers["norm"])
    if netD == "basic":
        return NLayerDiscriminator(n_layers=3, **common)
    if netD == "n_layers":
        return NLayerDiscriminator(n_layers=n_layers_D, **common)
    if netD == "pixel":
        return PixelDiscriminator(**common)
    raise ValueError(f"netD must be one of {DISCRIMINATOR_ARCHS}, got {netD!r}")


def generator_multiple(netG: str) -> int:
    """Height and width of a generator's input must be multiples of this."""
    return {"unet_128": 2**7, "unet_256": 2**8}.get(netG, 4)


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
