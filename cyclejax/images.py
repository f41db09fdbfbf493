"""The one image reader (training, translate and evaluate): encoded bytes -> uint8 RGB array.

What the official code does (`Image.open(path).convert('RGB')`), except where that is wrong
for real photo folders:
- EXIF orientation is applied (a phone photo taken upright is read upright).
- 16-bit images (PNG 'I;16' and kin) are scaled to 8 bits (value / 257); PIL's convert
  would clip them to 255, reading them as almost white.
- Grayscale, LA, palette, CMYK and YCbCr are converted to RGB; alpha is dropped, the colour
  under it kept as stored (as PIL's convert('RGB') does; nothing is composited).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_ORIENTATION = 0x0112  # the EXIF tag
# Orientations 5-8 rotate by 90 degrees: width and height swap.
_TRANSPOSED = (5, 6, 7, 8)


class UnreadableImage(ValueError):
    """Bytes that are not an image PIL can decode."""


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(im, dtype=np.int64 if im.mode == "I" else None).astype(np.float64)
        return np.repeat(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if im.mode == "F":
        return np.repeat(np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


# What an image that cannot be read raises in PIL; DecompressionBombError (more than twice
# Image.MAX_IMAGE_PIXELS) derives from Exception alone.
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _reason(e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not in a format PIL can read"
    if isinstance(e, Image.DecompressionBombError):
        return (f"more pixels than PIL opens, 2 x PIL.Image.MAX_IMAGE_PIXELS = {2 * Image.MAX_IMAGE_PIXELS}; "
                "split it, or raise that limit in the program that calls cyclejax")
    return f"{type(e).__name__}: {e}"


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8, upright. Raises UnreadableImage naming `name` for bytes PIL cannot decode."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.getexif().get(_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except _UNREADABLE as e:
        raise UnreadableImage(f"{name} cannot be decoded as an image ({_reason(e)})") from e


def size(data_or_file, name: str = "image") -> tuple[int, int]:
    """(height, width) as `decode` will return it, from the header only (nothing decoded)."""
    src = io.BytesIO(data_or_file) if isinstance(data_or_file, (bytes, bytearray)) else data_or_file
    try:
        with Image.open(src) as im:
            w, h = im.size
            orientation = im.getexif().get(_ORIENTATION, 1)
    except _UNREADABLE as e:
        raise UnreadableImage(f"{name} is not an image ({_reason(e)})") from e
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
