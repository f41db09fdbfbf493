"""Translating images of any size with a generator bundle, one at a time, into a results folder.

Each image is reflection-padded to the generator's multiple (4 for ResNets), translated,
and cropped back, at its own resolution (the official test script resizes to 256x256
unless --preprocess none). Images are read, translated and written one at a time; one
larger than `tile` pixels on a side is translated in overlapping tiles of that size,
blended linearly, so memory stays bounded (instance norm then sees each tile's statistics
rather than the whole image's). A jitted function compiles once per distinct padded size.
`translate` writes <output>/<name>.png for every input, copies of the inputs under
<output>/inputs/ and an index.html with input and output side by side.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Callable, Iterable

import jax
import numpy as np
from absl import logging
from etils import epath
from PIL import Image
from tqdm import tqdm

from cyclejax import bundle as bundle_lib
from cyclejax import datasets, images, storage
from cyclejax.errors import UserError

EXTENSIONS = datasets.IMAGE_EXTENSIONS  # the same files the train command reads
OVERLAP = 64


class TranslateError(UserError):
    """An input that does not exist, holds no images, or cannot be read."""


class ImageTranslator:
    """uint8 (H, W, C) image -> translated uint8 image of the same size, with one compiled
    program per distinct padded (or tile) shape; `shapes` lists the shapes compiled."""

    def __init__(self, bundle: bundle_lib.Bundle, direction: str = "AtoB", tile: int = 2048):
        bundle.check_direction(direction)
        self.multiple = bundle.multiple
        nc = (bundle.config["input_nc"], bundle.config["output_nc"])
        self.channels, self.channels_out = nc if direction == "AtoB" else nc[::-1]
        self.tile = max(tile // self.multiple * self.multiple, 2 * OVERLAP + self.multiple)
        self.shapes: list[tuple[int, ...]] = []
        apply = bundle.apply_fn(direction)

        def traced(x):
            self.shapes.append(tuple(x.shape))  # runs once per trace, i.e. per new shape
            return apply(x)

        self._fn = jax.jit(traced)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(x[None]))[0]

    def __call__(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The translation; `progress(done, total)` is called after each tile of a large image."""
        x = image.astype(np.float32) / 127.5 - 1.0
        h, w = x.shape[:2]
        m = self.multiple
        ph, pw = -h % m, -w % m
        x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        if max(x.shape[:2]) > self.tile:
            y = self._tiled(x, progress)
        else:
            y = self._run(x)
        y = y[:h, :w]
        return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)

    def _tiled(self, x: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        H, W = x.shape[:2]
        th, tw = min(self.tile, H), min(self.tile, W)
        out = np.zeros(x.shape[:2] + (self.channels_out,), np.float32)
        weight = np.zeros(x.shape[:2] + (1,), np.float32)
        tiles = [(top, left) for top in tile_starts(H, th) for left in tile_starts(W, tw)]
        for done, (top, left) in enumerate(tiles, 1):
            y = self._run(x[top:top + th, left:left + tw])
            wgt = _ramp(th, top > 0, top + th < H)[:, None] * _ramp(tw, left > 0, left + tw < W)[None, :]
            out[top:top + th, left:left + tw] += y * wgt[..., None]
            weight[top:top + th, left:left + tw] += wgt[..., None]
            if progress is not None:
                progress(done, len(tiles))
        return out / weight


def tile_starts(size: int, tile: int) -> list[int]:
    """Where the tiles of one side start: `tile` apart less OVERLAP, the last one flush with the end."""
    if size <= tile:
        return [0]
    step = tile - OVERLAP
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(n: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Blend weights of one tile side: linear over OVERLAP pixels where a neighbour overlaps."""
    w = np.ones(n, np.float32)
    r = (np.arange(OVERLAP, dtype=np.float32) + 0.5) / OVERLAP
    if fade_in:
        w[:OVERLAP] = r
    if fade_out:
        w[-OVERLAP:] = r[::-1]
    return w


def list_inputs(path: storage.PathLike) -> list[epath.Path]:
    """The image files to translate: `path` itself, or the image files in the folder `path` (local or gs://)."""
    path = storage.resolve(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TranslateError(f"--input {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in EXTENSIONS]
    for p in files:
        if p not in images:
            logging.warning("skipping %s: not an image file (%s)", p, ", ".join(EXTENSIONS))
    if not images:
        raise TranslateError(f"--input {path} holds no image files ({', '.join(EXTENSIONS)})")
    return images


def read_image(path: epath.Path, channels: int, name: str | None = None) -> np.ndarray:
    """The training reader's RGB (`cyclejax.images`); its luma (ITU-R 601, as PIL's 'L') for 1 channel.
    Errors call the file `name` (default: its path)."""
    name = str(path) if name is None else name
    try:
        rgb = images.decode(epath.Path(path).read_bytes(), name)
    except (images.UnreadableImage, OSError) as e:
        raise TranslateError(str(e) if isinstance(e, images.UnreadableImage) else f"{name} cannot be read ({e})") from e
    if channels == 3:
        return rgb
    return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]


def _output_names(files: Iterable[epath.Path]) -> list[str]:
    """PNG names after the inputs' names; 'a.jpg' and 'a.png' become 'a.png' and 'a_png.png'."""
    names, seen = [], set()
    for f in files:
        name = f.stem if f.stem not in seen else f.name.replace(".", "_")
        seen.add(name)
        names.append(name + ".png")
    return names


def _prepare_output(files: list[epath.Path], output: storage.PathLike) -> epath.Path:
    """`output` (local or gs://) and its inputs/ folder, created; refused where writing there
    would fail, or where an input file lies in either (its translation or copy could
    overwrite it, and a second run would read the translations as inputs)."""
    output = storage.resolve(output)

    def key(path) -> str:  # local paths with links and '..' resolved
        return str(path) if storage.is_remote(str(path)) else os.path.realpath(path)

    written = {key(output), key(output / "inputs")}
    inside = [f for f in files if key(epath.Path(f).parent) in written]
    if inside:
        raise TranslateError(f"--output {output} holds the input {inside[0]}: its translations would mix with "
                             "(and could overwrite) the inputs; choose another folder")
    try:
        (output / "inputs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TranslateError(f"--output {output} cannot be written ({e}); choose a folder you can write") from e
    return output


def translate_files(translator: ImageTranslator, files: list[epath.Path], output: storage.PathLike, title: str = "",
                    strict: bool = False, progress: bool = True) -> list[tuple[str, str]]:
    """Translates `files` into `output`; returns (input copy, output) names, also written to index.html.

    An unreadable file stops the run when `strict` (a single --input file), and is skipped
    with a warning naming it otherwise; when none can be read, that is an error.
    """
    output = _prepare_output(files, output)
    rows = []
    for f, name in tqdm(list(zip(files, _output_names(files))), desc="translate", unit="img", disable=not progress):
        try:
            image = read_image(f, translator.channels)
        except TranslateError as e:
            if strict:
                raise
            logging.warning("skipping %s", e)
            continue
        storage.write_png(output / "inputs" / name, image)
        storage.write_png(output / name, translator(image))
        rows.append((f"inputs/{name}", name))
    if files and not rows:
        raise TranslateError(f"none of the {len(files)} images could be read (see the warnings above)")
    write_index(output / "index.html", rows, title)
    return rows


def write_index(path: epath.Path, rows: list[tuple[str, str]], title: str) -> None:
    """A results page as the official one: one row per image, input beside output."""
    cells = "\n".join(
        f"<tr><td>{html.escape(Path(o).stem)}</td><td><img src='{html.escape(i)}' width=256></td>"
        f"<td><img src='{html.escape(o)}' width=256></td></tr>" for i, o in rows)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>\n"
                    f"<body><h3>{html.escape(title)}</h3>\n<table border=1 cellpadding=4>\n"
                    f"<tr><th>name</th><th>input</th><th>output</th></tr>\n{cells}\n</table></body></html>\n")


def translate(model: storage.PathLike, input: storage.PathLike, output: storage.PathLike, direction: str = "AtoB",
              tile: int = 2048, progress: bool = True) -> list[tuple[str, str]]:
    files = list_inputs(input)
    _prepare_output(files, output)  # before a model is loaded or downloaded
    b = bundle_lib.load_any(model)
    translator = ImageTranslator(b, direction, tile)
    d = b.config.get("domains", {"A": "A", "B": "B"})
    src, dst = (d["A"], d["B"]) if direction == "AtoB" else (d["B"], d["A"])
    return translate_files(translator, files, output, title=f"{epath.Path(model).name}: {src} -> {dst}",
                           strict=storage.resolve(input).is_file(), progress=progress)
