"""Where images come from: the embedded dataset, TFDS `cycle_gan/*`, or a folder of trainA/ trainB/.

Each source gives, for a split (trainA, trainB, testA, testB), a list of uint8 RGB arrays.
The input pipeline (`input_pipeline.py`) does the rest, the same way for all three.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cyclejax import embedded
from cyclejax.errors import UserError

TFDS_NAMES = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
              "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
SPLITS = ("trainA", "trainB", "testA", "testB")


class DatasetError(UserError):
    """A dataset that cannot be read, with what was asked, what exists and what to do."""


def kind(dataset: str) -> str:
    if dataset == "embedded":
        return "embedded"
    if dataset.startswith("cycle_gan/"):
        return "tfds"
    return "folder"


def load_images(dataset: str, split: str, max_images: int = 0) -> list[np.ndarray]:
    """The images of one split as uint8 (H, W, 3) arrays."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    k = kind(dataset)
    if k == "embedded":
        images = list(embedded.load_split(split))
    elif k == "tfds":
        images = _load_tfds(dataset, split)
    else:
        images = _load_folder(Path(dataset), split)
    return images[:max_images] if max_images else images


def has_split(dataset: str, split: str) -> bool:
    if kind(dataset) == "folder":
        return (Path(dataset) / split).is_dir()
    return True


def _load_tfds(dataset: str, split: str) -> list[np.ndarray]:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    name = dataset.split("/", 1)[1]
    if name not in TFDS_NAMES:
        raise DatasetError(f"unknown TFDS dataset {dataset!r}: cycle_gan has {', '.join(TFDS_NAMES)}")
    try:
        ds = tfds.load(dataset, split=split, shuffle_files=False)
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; all mean "not available"
        raise DatasetError(
            f"could not load TFDS {dataset!r} split {split!r} ({type(e).__name__}: {str(e)[:300]}). "
            f"Download it once where there is internet (`tfds build {dataset}` or "
            f"tfds.load('{dataset}')) and point TFDS_DATA_DIR at it, or use a folder with trainA/ trainB/."
        ) from e
    images = []
    for example in tfds.as_numpy(ds):
        images.append(_to_rgb(np.asarray(example["image"])))
    return images


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.shape[-1] == 4:
        img = img[..., :3]
    return img.astype(np.uint8)


def _load_folder(root: Path, split: str) -> list[np.ndarray]:
    from PIL import Image

    if not root.is_dir():
        raise DatasetError(
            f"dataset {str(root)!r} is neither 'embedded', a TFDS name (cycle_gan/<name>, one of "
            f"{', '.join(TFDS_NAMES)}) nor an existing folder"
        )
    folder = root / split
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"{folder} does not exist; a folder dataset needs trainA/ and trainB/ "
                           f"(testA/, testB/ optional); {root} holds {found or 'no folders'}")
    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            with Image.open(path) as im:
                if im.mode in ("RGBA", "LA", "P") or "transparency" in im.info:
                    im = im.convert("RGBA").convert("RGB")
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except Exception as e:  # noqa: BLE001 - PIL raises several kinds for bad files
            logging.warning("skipping %s: cannot decode it as an image (%s)", path, e)
    if not images:
        raise DatasetError(f"{folder} holds no readable images ({', '.join(IMAGE_EXTENSIONS)})")
    return images

