"""The official CycleGAN generators and discriminators as Flax Linen modules (NHWC).

Submodules are named after their keys in the official PyTorch state dicts: the layer that
torch calls `model.10.conv_block.1` lives at params['model_10']['conv_block_1'] here, and
`model.model.1.model.1` (a U-Net) at params['model']['model_1']['model_1']. Parameter counts
equal the official ones (tests/test_networks.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclejax.layers import INIT_TYPES, NORMS, Conv, ConvTranspose, Dtype, Norm, conv_bias, reflect_pad

GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
DISCRIMINATORS = ("basic", "n_layers", "pixel")


def _check_channels(x: jax.Array, expected: int, what: str) -> None:
    if x.ndim != 4 or x.shape[-1] != expected:
        raise ValueError(f"{what} expects NHWC images with {expected} channels, got shape {x.shape}")


class ResnetBlock(nn.Module):
    """[reflect pad 1, conv 3x3, norm, ReLU, (dropout 0.5), reflect pad 1, conv 3x3, norm] + x."""

    dim: int
    norm: str = "instance"
    use_dropout: bool = False
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        kw = dict(use_bias=conv_bias(self.norm), init_type=self.init_type, init_gain=self.init_gain, dtype=self.dtype)
        h = Conv(self.dim, 3, name="conv_block_1", **kw)(reflect_pad(x, 1))
        h = nn.relu(Norm(self.norm, self.init_gain, name="conv_block_2")(h, train))
        i = 4
        if self.use_dropout:
            h = nn.Dropout(0.5, deterministic=not train)(h)
            i = 5
        h = Conv(self.dim, 3, name=f"conv_block_{i + 1}", **kw)(reflect_pad(h, 1))
        h = Norm(self.norm, self.init_gain, name=f"conv_block_{i + 2}")(h, train)
        return x + h


class ResnetGenerator(nn.Module):
    """The official `ResnetGenerator` (Johnson et al.): 2 downsamplings, n residual blocks, 2 upsamplings."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    norm: str = "instance"
    use_dropout: bool = False
    n_blocks: int = 9
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "ResnetGenerator")
        bias = conv_bias(self.norm)
        kw = dict(init_type=self.init_type, init_gain=self.init_gain, dtype=self.dtype)
        x = x.astype(self.dtype)
        h = Conv(self.ngf, 7, use_bias=bias, name="model_1", **kw)(reflect_pad(x, 3))
        h = nn.relu(Norm(self.norm, self.init_gain, name="model_2")(h, train))
        i = 4
        for d in range(2):
            h = Conv(self.ngf * 2 ** (d + 1), 3, stride=2, padding=1, use_bias=bias, name=f"model_{i}", **kw)(h)
            h = nn.relu(Norm(self.norm, self.init_gain, name=f"model_{i + 1}")(h, train))
            i += 3
        for _ in range(self.n_blocks):
            h = ResnetBlock(self.ngf * 4, self.norm, self.use_dropout, name=f"model_{i}", **kw)(h, train)
            i += 1
        for u in range(2):
            features = self.ngf * 2 ** (1 - u)
            h = ConvTranspose(features, 3, 2, 1, output_padding=1, use_bias=bias, name=f"model_{i}", **kw)(h)
            h = nn.relu(Norm(self.norm, self.init_gain, name=f"model_{i + 1}")(h, train))
            i += 3
        h = Conv(self.output_nc, 7, use_bias=True, name=f"model_{i + 1}", **kw)(reflect_pad(h, 3))
        return jnp.tanh(h.astype(jnp.float32))


class UnetSkipConnectionBlock(nn.Module):
    """The official `UnetSkipConnectionBlock`: down, submodule, up, and (not outermost) a skip concat."""

    outer_nc: int
    inner_nc: int
    depth_below: int  # how many blocks lie inside this one
    outermost: bool = False
    norm: str = "instance"
    use_dropout: bool = False
    ngf: int = 64
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        kw = dict(init_type=self.init_type, init_gain=self.init_gain, dtype=self.dtype)
        bias = conv_bias(self.norm)
        innermost = self.depth_below == 0
        down = lambda name: Conv(self.inner_nc, 4, 2, 1, use_bias=bias, name=name, **kw)  # noqa: E731
        up = lambda name, b: ConvTranspose(self.outer_nc, 4, 2, 1, use_bias=b, name=name, **kw)  # noqa: E731
        if self.outermost:
            h = down("model_0")(x)
            h = self._submodule("model_1")(h, train)
            h = up("model_3", True)(nn.relu(h))
            return jnp.tanh(h.astype(jnp.float32))
        if innermost:
            h = down("model_1")(nn.leaky_relu(x, 0.2))
            h = up("model_3", bias)(nn.relu(h))
            h = Norm(self.norm, self.init_gain, name="model_4")(h, train)
        else:
            h = down("model_1")(nn.leaky_relu(x, 0.2))
            h = Norm(self.norm, self.init_gain, name="model_2")(h, train)
            h = self._submodule("model_3")(h, train)
            h = up("model_5", bias)(nn.relu(h))
            h = Norm(self.norm, self.init_gain, name="model_6")(h, train)
            # The official code drops out only in the middle blocks of width 8 * ngf.
            if self.use_dropout and self.outer_nc == self.inner_nc == 8 * self.ngf:
                h = nn.Dropout(0.5, deterministic=not train)(h)
        return jnp.concatenate([x, h.astype(x.dtype)], axis=-1)

    def _submodule(self, name: str) -> "UnetSkipConnectionBlock":
        # Going inwards the official widths double from ngf up to 8 * ngf and stay there.
        return UnetSkipConnectionBlock(
            self.inner_nc,
            min(2 * self.inner_nc, 8 * self.ngf),
            self.depth_below - 1,
            norm=self.norm,
            use_dropout=self.use_dropout,
            ngf=self.ngf,
            init_type=self.init_type,
            init_gain=self.init_gain,
            dtype=self.dtype,
            name=name,
        )


class UnetGenerator(nn.Module):
    """The official `UnetGenerator`: `num_downs` stride-2 4x4 downsamplings with skips."""

    input_nc: int = 3
    output_nc: int = 3
    num_downs: int = 8
    ngf: int = 64
    norm: str = "instance"
    use_dropout: bool = False
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "UnetGenerator")
        multiple = 2**self.num_downs
        if x.shape[1] % multiple or x.shape[2] % multiple:
            raise ValueError(
                f"a U-Net with {self.num_downs} downsamplings needs height and width divisible by "
                f"{multiple}, got {x.shape[1]}x{x.shape[2]}"
            )
        block = UnetSkipConnectionBlock(
            self.output_nc,
            self.ngf,
            self.num_downs - 1,
            outermost=True,
            norm=self.norm,
            use_dropout=self.use_dropout,
            ngf=self.ngf,
            init_type=self.init_type,
            init_gain=self.init_gain,
            dtype=self.dtype,
            name="model",
        )
        return block(x.astype(self.dtype), train)


class NLayerDiscriminator(nn.Module):
    """The official PatchGAN `NLayerDiscriminator` (n_layers=3 is the 70x70 'basic' one)."""

    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "NLayerDiscriminator")
        bias = conv_bias(self.norm)
        kw = dict(init_type=self.init_type, init_gain=self.init_gain, dtype=self.dtype)
        h = nn.leaky_relu(Conv(self.ndf, 4, 2, 1, use_bias=True, name="model_0", **kw)(x.astype(self.dtype)), 0.2)
        i = 2
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            h = Conv(self.ndf * min(2**n, 8), 4, stride, 1, use_bias=bias, name=f"model_{i}", **kw)(h)
            h = nn.leaky_relu(Norm(self.norm, self.init_gain, name=f"model_{i + 1}")(h, train), 0.2)
            i += 3
        h = Conv(1, 4, 1, 1, use_bias=True, name=f"model_{i}", **kw)(h)
        return h.astype(jnp.float32)


class PixelDiscriminator(nn.Module):
    """The official 1x1 PatchGAN `PixelDiscriminator`."""

    input_nc: int = 3
    ndf: int = 64
    norm: str = "instance"
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        _check_channels(x, self.input_nc, "PixelDiscriminator")
        bias = conv_bias(self.norm)
        kw = dict(init_type=self.init_type, init_gain=self.init_gain, dtype=self.dtype)
        h = nn.leaky_relu(Conv(self.ndf, 1, use_bias=True, name="net_0", **kw)(x.astype(self.dtype)), 0.2)
        h = Conv(self.ndf * 2, 1, use_bias=bias, name="net_2", **kw)(h)
        h = nn.leaky_relu(Norm(self.norm, self.init_gain, name="net_3")(h, train), 0.2)
        return Conv(1, 1, use_bias=bias, name="net_5", **kw)(h).astype(jnp.float32)


def _check_common(norm: str, init_type: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")


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
) -> nn.Module:
    """A generator as the official `networks.define_G` builds it. `dtype` is the compute dtype."""
    _check_common(norm, init_type)
    common = dict(input_nc=input_nc, output_nc=output_nc, ngf=ngf, norm=norm, use_dropout=use_dropout,
                  init_type=init_type, init_gain=init_gain, dtype=dtype)
    if netG == "resnet_9blocks":
        return ResnetGenerator(n_blocks=9, **common)
    if netG == "resnet_6blocks":
        return ResnetGenerator(n_blocks=6, **common)
    if netG == "unet_128":
        return UnetGenerator(num_downs=7, **common)
    if netG == "unet_256":
        return UnetGenerator(num_downs=8, **common)
    raise ValueError(f"netG must be one of {GENERATORS}, got {netG!r}")


def define_D(
    netD: str,
    input_nc: int = 3,
    ndf: int = 64,
    n_layers_D: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    dtype: Dtype = jnp.float32,
) -> nn.Module:
    """A discriminator as the official `networks.define_D` builds it; `apply` gives patch logits."""
    _check_common(norm, init_type)
    common = dict(input_nc=input_nc, ndf=ndf, norm=norm, init_type=init_type, init_gain=init_gain, dtype=dtype)
    if netD == "basic":
        return NLayerDiscriminator(n_layers=3, **common)
    if netD == "n_layers":
        return NLayerDiscriminator(n_layers=n_layers_D, **common)
    if netD == "pixel":
        return PixelDiscriminator(**common)
    raise ValueError(f"netD must be one of {DISCRIMINATORS}, got {netD!r}")


def generator_multiple(netG: str) -> int:
    """Height and width of a generator's input must be multiples of this."""
    return {"unet_128": 2**7, "unet_256": 2**8}.get(netG, 4)


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
