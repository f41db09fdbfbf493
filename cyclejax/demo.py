"""A web page that translates your images: `python -m cyclejax.demo --model=NAME|BUNDLE|hf://OWNER/REPO[@REV]`.

Upload an image (or pick a sample), choose the direction, see input and translation side by
side and download the translation as PNG. Uploads are read and translated exactly as
`python -m cyclejax.translate` reads and translates files (`cyclejax.translation`): EXIF
rotation, 16-bit and CMYK images, any size, large ones in tiles with a progress bar. Each
distinct padded (or tile) size compiles once and is reused by every later request.
An upload that is not an image (or has more pixels than PIL opens) gets a one-line message in
the page naming the file; the server goes on.

In a notebook, `cyclejax.demo.app(model).launch()` shows the page inline. Gradio is an
optional dependency: `pip install 'cyclejax[demo]'`.
"""
from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
from absl import flags

from cyclejax import bundle as bundle_lib
from cyclejax import cli, datasets, embedded, storage, translation
from cyclejax.errors import UserError

SAMPLES = 4  # sample images offered per direction
# Of a bundle folder: images in examples/A/ (examples/B/) are offered as samples of domain A (B).
EXAMPLES_DIR = "examples"
KEEP_SECONDS = 600  # how long the demo keeps a translation's PNG (Gradio serves its own copy)
_DOMAIN_SPLITS = {"AtoB": ("A", "testA"), "BtoA": ("B", "testB")}


# The image as read, its translation, the translation's PNG file, the status line (Markdown).
Result = tuple[np.ndarray | None, np.ndarray | None, str | None, str]


class DemoError(UserError):
    """The demo cannot start: Gradio is missing."""


def model_name(model) -> str:
    """What the page calls the model: a folder's or repository's last part, a pretrained name."""
    if isinstance(model, bundle_lib.Bundle):
        return "bundle"
    return str(model).rstrip("/").rsplit("/", 1)[-1] or str(model)


def direction_label(b: bundle_lib.Bundle, direction: str) -> str:
    d = b.config.get("domains", {"A": "A", "B": "B"})
    src, dst = (d["A"], d["B"]) if direction == "AtoB" else (d["B"], d["A"])
    return f"{src} → {dst}"


def sample_images(b: bundle_lib.Bundle, model, folder: Path, n: int = SAMPLES) -> list[tuple[str, str, str]]:
    """(image file, direction, label) of a few images to offer, for each direction the bundle holds:
    the bundle folder's examples/A/ and examples/B/ when it has them, otherwise the test
    images of the dataset the bundle was trained on where they are at hand (the embedded
    dataset's, or a local folder dataset's testA/ and testB/); none for TFDS datasets or
    official pretrained models. Embedded images are written as PNGs into `folder`."""
    source = b.config.get("source") or {}
    dataset = str(source.get("dataset", ""))
    local = None if isinstance(model, bundle_lib.Bundle) or "://" in str(model) else Path(str(model))
    out = []
    for direction in b.directions:
        domain, split = _DOMAIN_SPLITS[direction]
        files: list[str] = []
        if local is not None and (local / EXAMPLES_DIR / domain).is_dir():
            files = [str(p) for p in sorted((local / EXAMPLES_DIR / domain).iterdir())
                     if p.suffix.lower() in translation.EXTENSIONS][:n]
        elif dataset == "embedded":
            for i, image in enumerate(embedded.load_split(split)[:n]):
                path = folder / f"{split}_{i}.png"
                storage.write_png(path, image)
                files.append(str(path))
        elif dataset and datasets.kind(dataset) == "folder" and not storage.is_remote(dataset) \
                and (Path(dataset) / split).is_dir():
            files = [str(p) for p in sorted((Path(dataset) / split).iterdir())
                     if p.suffix.lower() in translation.EXTENSIONS][:n]
        out += [(f, direction, f"{direction_label(b, direction)}: {Path(f).name}") for f in files]
    return out


class Demo:
    """The page's work, without Gradio: an uploaded file and a direction -> the image as read, its
    translation, the translation's PNG file and a status line. One `ImageTranslator` per
    direction, so each size compiles once per direction for the life of the page."""

    def __init__(self, b: bundle_lib.Bundle, tile: int = 2048, folder: Path | None = None):
        self.bundle = b
        self.translators = {d: translation.ImageTranslator(b, d, tile) for d in b.directions}
        self.folder = Path(folder or tempfile.mkdtemp(prefix="cyclejax-demo-"))
        self._count = itertools.count()

    def __call__(self, path: str | None, direction: str, progress: Callable[..., Any] | None = None) -> Result:
        if not path:
            return None, None, None, "Upload an image, or pick a sample below."
        name = Path(path).name
        translator = self.translators.get(direction)
        if translator is None:  # only an API call can ask for a direction the page does not offer
            return None, None, None, _error(f"this model translates {', '.join(self.translators)}, not {direction!r}")
        try:
            image = translation.read_image(path, translator.channels, name=name)
        except translation.TranslateError as e:
            return None, None, None, _error(str(e))
        h, w = image.shape[:2]
        compiled = len(translator.shapes)
        tiles = []

        def on_tile(done: int, total: int) -> None:
            tiles.append(total)
            if progress is not None:
                progress((done, total), desc="translating", unit="tiles")

        start = time.perf_counter()
        if progress is not None:
            progress(0, desc="translating")
        out = translator(image, on_tile)
        seconds = time.perf_counter() - start
        png = self._write(out, f"{Path(name).stem}_{direction}.png")
        status = f"{direction_label(self.bundle, direction)}: {w} × {h} pixels in {seconds:.1f} s"
        if tiles:
            status += f", in {tiles[0]} tiles of {translator.tile} pixels"
        if len(translator.shapes) > compiled:
            status += " (compiled for this size; later images of the same size reuse it)"
        return _display(image), _display(out), png, status

    def _write(self, image: np.ndarray, name: str) -> str:
        """The PNG, in a folder of its own. Files of requests older than KEEP_SECONDS are removed:
        Gradio copied each into its own cache when its request returned."""
        now = time.time()
        for old in self.folder.glob("out-*"):
            if now - old.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        path = self.folder / f"out-{next(self._count)}" / name
        path.parent.mkdir(parents=True)
        storage.write_png(path, image)
        return str(path)


def _error(message: str) -> str:
    """A status line in Markdown, the message's own characters kept as they are (file names with _ or *)."""
    return "**error:** " + re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", message)


def _display(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


def _gradio():
    try:
        import gradio
    except ImportError as e:
        raise DemoError(f"the demo needs Gradio ({e}): pip install 'cyclejax[demo]'") from e
    return gradio


def app(model: storage.PathLike | bundle_lib.Bundle, tile: int = 2048):
    """The page as a `gradio.Blocks` (call `.launch()` on it) for a bundle, a bundle folder, a training
    workdir, a pretrained model's name or hf://OWNER/REPO[@REV] (`bundle.load_any`)."""
    gr = _gradio()
    b = model if isinstance(model, bundle_lib.Bundle) else bundle_lib.load_any(model)
    demo = Demo(b, tile)
    samples = sample_images(b, model, demo.folder)
    choices = [(direction_label(b, d), d) for d in b.directions]
    described = b.describe()
    with gr.Blocks(title=f"cyclejax: {model_name(model)}", analytics_enabled=False,
                   delete_cache=(3600, 86400)) as blocks:  # Gradio's copies of uploads and results: a day
        gr.Markdown(f"## cyclejax: {model_name(model)}\n{described}. Upload an image of any size; images larger "
                    f"than {demo.translators[b.directions[0]].tile} pixels on a side are translated in tiles.")
        with gr.Row():
            # Any file, as `translate --input=FILE` takes any: the project's reader decides what is an image.
            upload = gr.File(label="Image", elem_id="upload")
            with gr.Column():
                direction = gr.Radio(choices, value=b.directions[0], label="Direction",
                                     visible=len(choices) > 1, elem_id="direction")
                status = gr.Markdown("Upload an image, or pick a sample below.", elem_id="status")
                download = gr.DownloadButton("Download the translation (PNG)", elem_id="download",
                                             interactive=False)
        # Small images (the embedded dataset's are 64 x 64) fill the frame rather than sit in its middle.
        gr.HTML("<style>#input img, #output img { object-fit: contain !important; }</style>", visible="hidden")
        with gr.Row():
            shown_in = gr.Image(label="Input", format="png", interactive=False, height=320, elem_id="input")
            shown_out = gr.Image(label="Translation", format="png", interactive=False, height=320, elem_id="output")

        def run(path, direction, progress=gr.Progress()):
            image, out, png, text = demo(path, direction, progress)
            return image, out, gr.DownloadButton(value=png, interactive=png is not None), text

        outputs = [shown_in, shown_out, download, status]
        upload.upload(run, [upload, direction], outputs, concurrency_limit=1, concurrency_id="translate")
        direction.input(run, [upload, direction], outputs, concurrency_limit=1, concurrency_id="translate")
        upload.clear(lambda: run(None, None), None, outputs)
        if samples:
            gr.Examples([[f, d] for f, d, _ in samples], [upload, direction], outputs, fn=run,
                        run_on_click=True, cache_examples=False, example_labels=[label for _, _, label in samples],
                        label="Samples")
    blocks.cyclejax_demo = demo  # the tests look at what compiled
    weakref.finalize(blocks, shutil.rmtree, demo.folder, True)
    return blocks


_MODEL = flags.DEFINE_string("model", None, "a generator bundle (python -m cyclejax.export / cyclejax.convert), a "
                             "training workdir, a pretrained model's name (python -m cyclejax.pretrained), or "
                             "hf://OWNER/REPO[@REVISION] on the Hugging Face Hub", required=True)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "the address to serve on (0.0.0.0: every interface)")
_PORT = flags.DEFINE_integer("port", None, "the port to serve on (default: 7860, or the next free one)")
_SHARE = flags.DEFINE_boolean("share", False, "also serve on a public *.gradio.live link (Gradio's share)")
_TILE = flags.DEFINE_integer("tile", 2048, "images larger than this on a side are translated in tiles of this size")


def main(argv):
    del argv
    page = app(_MODEL.value, _TILE.value)
    page.launch(server_name=_HOST.value, server_port=_PORT.value, share=_SHARE.value)


if __name__ == "__main__":
    cli.run(main)
