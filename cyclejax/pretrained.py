"""The officially released CycleGAN generators, and pytorch-fid's Inception weights, by name.

`generator_file("horse2zebra")` downloads `<name>.pth` once into the cache
(`cyclejax.downloads`: $CYCLEJAX_CACHE or ~/.cache/cyclejax, under pretrained/) and returns
its path. The names and the folder are those of the official
scripts/download_cyclegan_model.sh (junyanz/pytorch-CycleGAN-and-pix2pix); each file holds
one generator (the AtoB one of its name). $CYCLEJAX_PRETRAINED_URL replaces the folder
(e.g. a mirror, or file:///some/folder/), with or without a trailing slash; a folder of a
Hugging Face Hub repository, hf://OWNER/REPO[@REVISION][/FOLDER], is fetched through
huggingface_hub into its cache (`cyclejax.hub`). Either way the file must read as a PyTorch
state dict before it is used.

`inception_file()` does the same for the FID Inception weights, checked against the sha256
prefix in their name. $CYCLEJAX_INCEPTION_URL replaces their URL: it is the full URL of the
file itself (https://..., or file:///path/to/pt_inception-2015-12-05-6726825d.pth).

`python -m cyclejax.pretrained` lists the generator names, each with where it is fetched from.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from cyclejax import cli, downloads, pth
from cyclejax.errors import ConversionError, UserError

NAMES = (
    "apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
    "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh", "sat2map",
    "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
    "iphone2dslr_flower",
)
OFFICIAL_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/"

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub's convention: the name ends in the sha256's first digits
OFFICIAL_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"


def base_url() -> str:
    """The folder holding `<name>.pth`: $CYCLEJAX_PRETRAINED_URL or the official one, ending in '/'."""
    return os.environ.get("CYCLEJAX_PRETRAINED_URL", OFFICIAL_URL).rstrip("/") + "/"


def source(name: str) -> str:
    """Where the generator `name` is fetched from: `<name>.pth` in `base_url()`."""
    return base_url() + f"{name}.pth"


def generator_file(name: str, progress: bool | None = None) -> Path:
    """The cached file of the official generator `name` (downloaded on first use)."""
    if name not in NAMES:
        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"there is no pretrained generator {name!r}; {hint}the names are: {', '.join(NAMES)}")
    url = source(name)
    if url.startswith("hf://"):
        from cyclejax import hub  # brings jax and Orbax: not imported for the listing

        return hub.download_file(url, check=_state_dict)
    return downloads.cached_file(url, f"pretrained/{name}.pth", progress=progress, check=_state_dict)


def _state_dict(path: Path) -> None:
    """Raises unless `path` reads as a PyTorch state dict (the released files have no published
    sha256: this keeps an error page or a cut-off file out of the cache)."""
    try:
        pth.read_state_dict(path)
    except ConversionError as e:
        raise ValueError("not a readable PyTorch state dict") from e


def inception_url() -> str:
    """$CYCLEJAX_INCEPTION_URL (the file's full URL) or pytorch-fid's release."""
    return os.environ.get("CYCLEJAX_INCEPTION_URL", OFFICIAL_INCEPTION_URL)


def inception_file(progress: bool | None = None) -> Path:
    """The cached FID Inception weights (downloaded on first use, sha256 checked)."""
    return downloads.cached_file(inception_url(), INCEPTION_FILE, INCEPTION_SHA256_PREFIX, progress=progress)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"python -m cyclejax.pretrained takes no arguments (got {' '.join(argv[1:])}); "
                        f"it lists the pretrained generator names")
    width = max(map(len, NAMES))
    print("\n".join(f"{name:<{width}}  {source(name)}" for name in NAMES))


if __name__ == "__main__":
    cli.run(main)
