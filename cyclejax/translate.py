"""Translates images with a bundle: `python -m cyclejax.translate --model=BUNDLE --input=FILE_OR_DIR --output=DIR`.

Any size and aspect ratio, one image at a time, large ones in tiles (`cyclejax.translation`).
Writes <output>/<name>.png for every input, copies of the inputs under <output>/inputs/ and
an index.html with input and output side by side.
"""
from __future__ import annotations

import sys

from absl import flags

from cyclejax import bundle as bundle_lib
from cyclejax import cli, translation

_MODEL = flags.DEFINE_string("model", None, "a generator bundle (python -m cyclejax.export / cyclejax.convert), a "
                             "training workdir, a pretrained model's name (python -m cyclejax.pretrained), or "
                             "hf://OWNER/REPO[@REVISION] on the Hugging Face Hub",
                             required=True)
_INPUT = flags.DEFINE_string("input", None, "an image file or a folder of images", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "the folder to write translations and index.html into", required=True)
_DIRECTION = flags.DEFINE_enum("direction", "AtoB", list(bundle_lib.DIRECTIONS), "which generator to run")
_TILE = flags.DEFINE_integer("tile", 2048, "images larger than this on a side are translated in tiles of this size")


def main(argv):
    del argv
    rows = translation.translate(_MODEL.value, _INPUT.value, _OUTPUT.value, _DIRECTION.value, _TILE.value,
                                 progress=sys.stderr.isatty())
    print(f"cyclejax: translated {len(rows)} images into {_OUTPUT.value} (open index.html)", flush=True)


if __name__ == "__main__":
    cli.run(main)
