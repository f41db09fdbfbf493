"""Where images come from: the embedded dataset, TFDS `cycle_gan/*`, or a folder of trainA/ trainB/.

A split (trainA, trainB, testA, testB) is a `Split`: a sequence of images that are decoded
only when read, by the one reader (`cyclejax.images`). A folder split holds file paths
(local or gs://, listed through `etils.epath`, each file's header checked once); a TFDS or
embedded split holds encoded bytes (a few percent of the decoded size). Nothing is decoded
before training starts; the input pipeline (`input_pipeline.py`) reads and decodes in parallel
as batches are needed.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Sequence

from etils import epath

from cyclejax import embedded, images, storage
from cyclejax.errors import UserError

TFDS_NAMES = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
              "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
SPLITS = ("trainA", "trainB", "testA", "testB")
HEADER_THREADS = 16  # header checks wait on storage (gs:// round trips), not on the CPU


class DatasetError(UserError):
    """A dataset that cannot be read, with what was asked, what exists and what to do."""


@dataclasses.dataclass(frozen=True)
class Split(Sequence):
    """One split's images, decoded when indexed: `split[i]` is a uint8 (H, W, 3) array."""

    where: str  # the folder, or e.g. 'cycle_gan/horse2zebra:trainA', for messages
    items: tuple  # file paths (str) or encoded images (bytes)
    names: tuple[str, ...]  # what a message calls each image
    sizes: tuple[tuple[int, int], ...]  # (height, width) of each image as decoded

    @property
    def from_files(self) -> bool:
        return bool(self.items) and isinstance(self.items[0], str)

    def __len__(self) -> int:
        return len(self.items)

    def encoded(self, i: int) -> bytes:
        return epath.Path(self.items[i]).read_bytes() if self.from_files else self.items[i]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        try:
            return images.decode(self.encoded(i), self.names[i])
        except images.UnreadableImage as e:
            raise DatasetError(f"{e}; remove or replace the file") from None

    def first(self, n: int) -> "Split":
        """The first n images (all when n is 0)."""
        if not n:
            return self
        return Split(self.where, self.items[:n], self.names[:n], self.sizes[:n])


def kind(dataset: str) -> str:
    if dataset == "embedded":
        return "embedded"
    if dataset.startswith("cycle_gan/"):
        return "tfds"
    return "folder"


def load_split(dataset: str, split: str, max_images: int = 0) -> Split:
    """One split, not decoded (see the module docstring)."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    k = kind(dataset)
    if k == "embedded":
        arrays = embedded.load_split(split, max_images)
        encoded = tuple(images.encode_png(a) for a in arrays)
        out = Split(f"embedded:{split}", encoded, tuple(f"embedded:{split}[{i}]" for i in range(len(arrays))),
                    tuple(a.shape[:2] for a in arrays))
    elif k == "tfds":
        out = _tfds_split(dataset, split)
    else:
        out = _folder_split(dataset, split)
    return out.first(max_images)


def has_split(dataset: str, split: str) -> bool:
    if kind(dataset) == "folder":
        return (storage.resolve(dataset) / split).is_dir()
    return True


def _tfds_split(dataset: str, split: str) -> Split:
    from cyclejax.tf_import import tf  # noqa: F401  (TensorFlow as cyclejax imports it, before TFDS does)
    import tensorflow_datasets as tfds

    name = dataset.split("/", 1)[1]
    if name not in TFDS_NAMES:
        raise DatasetError(f"unknown TFDS dataset {dataset!r}: cycle_gan has {', '.join(TFDS_NAMES)}")
    try:
        ds = tfds.load(dataset, split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; all mean "not available"
        raise DatasetError(
            f"could not load TFDS {dataset!r} split {split!r} ({type(e).__name__}: {str(e)[:300]}). "
            f"Download it once where there is internet (`tfds build {dataset}` or "
            f"tfds.load('{dataset}')) and point TFDS_DATA_DIR at it, or use a folder with trainA/ trainB/."
        ) from e
    encoded = tuple(bytes(example["image"]) for example in tfds.as_numpy(ds))
    names = tuple(f"{dataset}:{split}[{i}]" for i in range(len(encoded)))
    return Split(f"{dataset}:{split}", encoded, names, tuple(images.size(b, n) for b, n in zip(encoded, names)))


def _header(path: epath.Path):
    try:
        with path.open("rb") as f:
            return images.size(f, str(path))
    except (images.UnreadableImage, OSError) as e:
        return e


def _folder_split(dataset: str, split: str) -> Split:
    root = storage.resolve(dataset)
    if not root.is_dir():
        remote = (" (a bucket path that cannot be listed: check its name, and that this machine has "
                  "credentials that may read it, e.g. `gcloud auth application-default login` or "
                  "GOOGLE_APPLICATION_CREDENTIALS)") if storage.is_remote(dataset) else ""
        raise DatasetError(
            f"dataset {dataset!r} is neither 'embedded', a TFDS name (cycle_gan/<name>, one of "
            f"{', '.join(TFDS_NAMES)}) nor an existing folder{remote}"
        )
    folder = root / split
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"{folder} does not exist; a folder dataset needs trainA/ and trainB/ "
                           f"(testA/, testB/ optional); {root} holds {found or 'no folders'}")
    # Subfolders too, in the order of their paths, as the official make_dataset (os.walk) and
    # UnalignedDataset (sorted) list them.
    paths = sorted((where / f for where, _, files in folder.walk() for f in files
                    if epath.Path(f).suffix.lower() in IMAGE_EXTENSIONS), key=str)
    with concurrent.futures.ThreadPoolExecutor(HEADER_THREADS) as pool:
        headers = list(pool.map(_header, paths))
    kept = [(p, h) for p, h in zip(paths, headers) if not isinstance(h, Exception)]
    for p, h in zip(paths, headers):
        if isinstance(h, Exception):
            logging.warning("skipping %s: %s", p, h)
    if not kept:
        raise DatasetError(f"{folder} holds no readable images ({', '.join(IMAGE_EXTENSIONS)})")
    return Split(str(folder), tuple(str(p) for p, _ in kept), tuple(str(p) for p, _ in kept),
                 tuple(h for _, h in kept))


def check_same_size(splits: list[Split], option: str) -> None:
    """Every image of each split the same size, or an error naming two that differ and `option`."""
    for s in splits:
        for i, size in enumerate(s.sizes):
            if size != s.sizes[0]:
                raise DatasetError(
                    f"{s.names[0]} is {s.sizes[0][1]}x{s.sizes[0][0]} but {s.names[i]} is {size[1]}x{size[0]}: "
                    f"images of different sizes cannot be batched without resizing; {option}")
