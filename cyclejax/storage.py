"""Local or remote (gs://...) paths: every file a run or a command writes goes through `etils.epath`.

`epath.Path` is the file layer Orbax uses; with TensorFlow installed it reaches gs:// through
`tf.io.gfile`, the same layer TensorBoard's event writer uses. `pathlib.Path("gs://b/run")`
would be the local folder `gs:/b/run`.
"""
from __future__ import annotations

import io
import os

import numpy as np
from etils import epath
from PIL import Image

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
    """`path` as an `epath.Path`: local paths absolute (Orbax needs them so), URLs as they are."""
    p = epath.Path(path)
    return p if is_remote(path) else p.absolute()


def write_png(path: epath.Path, image: np.ndarray) -> None:
    """An (H, W, C) or (H, W) uint8 array as a PNG file, local or remote."""
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, format="PNG")
    epath.Path(path).write_bytes(buf.getvalue())
