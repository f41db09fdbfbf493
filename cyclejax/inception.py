"""pytorch-fid's FID Inception-v3 in Flax: 2048-d pool3 features for FID and KID.

The network is torchvision's Inception-v3 with the changes pytorch-fid makes to match the
TensorFlow graph the FID was defined with (FIDInceptionA/C/E_1 average-pool without
counting padding, FIDInceptionE_2 max-pools). Submodules carry the names of the weight
file's keys: `Mixed_6b.branch7x7_2.conv.weight` is params['Mixed_6b']['branch7x7_2']['conv'].

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF 2015-12-05 graph
ported to PyTorch; `pretrained.inception_file` downloads it once, sha256-checked), read by
`torch_weights.load_pth`, or from an .npz of the same keys (`save_npz`).
Inputs are images in [0, 1] at 299x299, scaled to [-1, 1] inside as pytorch-fid does.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclejax import pretrained, torch_weights
from cyclejax.errors import UserError
from cyclejax.layers import BatchNorm, Conv

SIZE = 299
FEATURES = 2048


class BasicConv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: Sequence[int]
    stride: int = 1
    padding: Sequence[int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        x = Conv(self.features, tuple(self.kernel), self.stride, tuple(self.padding), use_bias=False,
                 kernel_init=nn.initializers.lecun_normal(), name="conv")(x)
        return nn.relu(BatchNorm(init_gain=0.0, eps=1e-3, name="bn")(x, train=False))


def _conv(features, kernel, stride=1, padding=0, name=None):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    return BasicConv(features, kernel, stride, padding, name=name)


def max_pool(x, k=3, s=2, p=0):
    return nn.max_pool(x, (k, k), (s, s), ((p, p), (p, p)))


def avg_pool_excluding_padding(x):
    """3x3 stride-1 average over the in-image pixels only (count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = _conv(64, 1, name="branch1x1")(x)
        b5 = _conv(64, 5, padding=2, name="branch5x5_2")(_conv(48, 1, name="branch5x5_1")(x))
        b3 = _conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = _conv(96, 3, padding=1, name="branch3x3dbl_3")(_conv(96, 3, padding=1, name="branch3x3dbl_2")(b3))
        bp = _conv(self.pool_features, 1, name="branch_pool")(avg_pool_excluding_padding(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = _conv(384, 3, stride=2, name="branch3x3")(x)
        bd = _conv(64, 1, name="branch3x3dbl_1")(x)
        bd = _conv(96, 3, stride=2, name="branch3x3dbl_3")(_conv(96, 3, padding=1, name="branch3x3dbl_2")(bd))
        return jnp.concatenate([b3, bd, max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = _conv(192, 1, name="branch1x1")(x)
        b7 = _conv(c, 1, name="branch7x7_1")(x)
        b7 = _conv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = _conv(c, 1, name="branch7x7dbl_1")(x)
        bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = _conv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = _conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = _conv(192, 1, name="branch_pool")(avg_pool_excluding_padding(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = _conv(320, 3, stride=2, name="branch3x3_2")(_conv(192, 1, name="branch3x3_1")(x))
        b7 = _conv(192, 1, name="branch7x7x3_1")(x)
        b7 = _conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = _conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool without padding, FIDInceptionE_1) and Mixed_7c (max pool, _E_2)."""

    pool: str

    @nn.compact
    def __call__(self, x):
        b1 = _conv(320, 1, name="branch1x1")(x)
        b3 = _conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              _conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = _conv(384, 3, padding=1, name="branch3x3dbl_2")(_conv(448, 1, name="branch3x3dbl_1")(x))
        bd = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              _conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = avg_pool_excluding_padding(x) if self.pool == "avg" else max_pool(x, 3, 1, 1)
        bp = _conv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInception(nn.Module):
    """Images in [0, 1], (N, 299, 299, 3) -> pool3 features (N, 2048)."""

    @nn.compact
    def __call__(self, x, train: bool = False):  # `train` unused: always inference
        del train
        x = 2.0 * x - 1.0
        x = _conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = _conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = max_pool(_conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x))
        x = _conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = max_pool(_conv(192, 3, name="Conv2d_4a_3x3")(x))
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def init_random(seed: int = 0) -> dict:
    """Random weights, for testing the pipeline (the features then mean nothing): each kernel
    drawn from N(0, 1 / fan_in) (the scale of its LeCun initialiser, which keeps activations at
    their scale through the 94 layers), every batch norm the identity.

    Drawn with NumPy from the variables' shapes: `jax.jit(net.init)` compiles for 12-30 s on a
    2-core CPU whatever the input size (one random draw per parameter; 2026-12-07), most of the
    time of an evaluation with random weights.
    """
    shapes = jax.eval_shape(FIDInception().init, jax.random.key(0), jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.standard_normal(leaf.shape, np.float32) / np.float32(np.sqrt(np.prod(leaf.shape[:-1])))
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def torch_key(path: tuple[str, ...], leaf: str) -> str:
    return ".".join(path + (leaf,))


class MissingWeights(UserError):
    """The Inception weight file is not there."""


def load_weights(path: str | Path) -> dict:
    """Variables of `FIDInception` from pytorch-fid's weight file (.pth) or an .npz of it."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(f"the Inception weights {path} do not exist; leave out --inception_weights to "
                             f"download them once (cached, sha256-checked), or pass a copy of "
                             f"{pretrained.OFFICIAL_INCEPTION_URL}")
    if path.suffix == ".npz":
        with np.load(path) as f:
            sd = dict(f)
    else:
        sd = torch_weights.load_pth(path)
    return torch_weights.state_dict_to_variables(sd, FIDInception(), 3, SIZE, str(path), key_fn=torch_key,
                                                 ignore=("fc.",))


def save_npz(path_pth: str | Path, path_npz: str | Path) -> None:
    """The weight file as an .npz of the same keys."""
    np.savez(path_npz, **torch_weights.load_pth(path_pth))


@functools.lru_cache(maxsize=2)
def _apply():
    return jax.jit(FIDInception().apply)


def features(variables: dict, images: np.ndarray, batch: int = 50, pad: bool | None = None) -> np.ndarray:
    """float64 pool3 features (N, 2048) of float images in [0, 1] at 299x299.

    The last batch is padded to `batch` images when `pad` (default: when there is more than
    one batch), so that the network compiles once.
    """
    pad = len(images) > batch if pad is None else pad
    out = []
    apply = _apply()
    for i in range(0, len(images), batch):
        chunk = np.asarray(images[i:i + batch], np.float32)
        n = len(chunk)
        if n < batch and pad:
            chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], np.float32)])
        out.append(np.asarray(apply(variables, chunk), np.float64)[:n])
    return np.concatenate(out) if out else np.zeros((0, FEATURES))
