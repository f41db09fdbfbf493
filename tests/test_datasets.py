"""Image sources: folders (formats, modes, bad files), TFDS (mocked), the embedded set, and their errors."""
import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cyclejax import datasets


def _folder(root, split, images):
    d = root / split
    d.mkdir(parents=True)
    for name, img in images.items():
        img.save(d / name)
    return d


def test_folder_reads_formats_and_converts_modes_to_rgb(tmp_path, caplog):
    rgb = Image.fromarray(np.full((10, 12, 3), 200, np.uint8))
    _folder(tmp_path, "trainA", {
        "a.png": rgb, "b.jpg": rgb, "c.bmp": rgb, "d.webp": rgb,
        "e.png": Image.fromarray(np.full((10, 12), 50, np.uint8)),  # grayscale
        "f.png": rgb.convert("P"),  # palette
        "g.png": Image.fromarray(np.full((10, 12, 4), 90, np.uint8), "RGBA"),
    })
    (tmp_path / "trainA" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "trainA" / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        images = list(datasets.load_split(str(tmp_path), "trainA"))
    assert len(images) == 7
    assert all(i.shape == (10, 12, 3) and i.dtype == np.uint8 for i in images)
    assert images[4][0, 0].tolist() == [50, 50, 50]
    assert "broken.png" in caplog.text


def test_subfolders_are_read_in_path_order_as_the_official_make_dataset(tmp_path):
    shades = {"b.png": 10, "a/z.png": 20, "a/b/c.png": 30, "c.png": 40, "a/y.jpg": 50}
    for name, v in shades.items():
        (tmp_path / "trainA" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), v, np.uint8)).save(tmp_path / "trainA" / name)
    split = datasets.load_split(str(tmp_path), "trainA")
    order = ["a/b/c.png", "a/y.jpg", "a/z.png", "b.png", "c.png"]  # sorted paths, as sorted(make_dataset(...))
    assert list(split.names) == [str(tmp_path / "trainA" / n) for n in order]
    assert [int(split[i][0, 0, 0]) for i in range(5)] == [shades[n] for n in order]


def test_empty_domain_and_missing_folders_are_named(tmp_path):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "x.png").write_bytes(b"junk")
    with pytest.raises(datasets.DatasetError, match="trainA holds no readable images"):
        datasets.load_split(str(tmp_path), "trainA")
    with pytest.raises(datasets.DatasetError, match="trainB does not exist.*holds \\['trainA'\\]"):
        datasets.load_split(str(tmp_path), "trainB")
    with pytest.raises(datasets.DatasetError, match="neither 'embedded', a TFDS name"):
        datasets.load_split(str(tmp_path / "nowhere"), "trainA")


def test_unknown_tfds_name_lists_the_known_ones():
    with pytest.raises(datasets.DatasetError, match="horse2zebra"):
        datasets.load_split("cycle_gan/cats2dogs", "trainA")


def test_tfds_not_downloaded_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(datasets.DatasetError, match="tfds build cycle_gan/horse2zebra"):
        datasets.load_split("cycle_gan/horse2zebra", "trainA")


def test_tfds_path_reads_mocked_cycle_gan():
    with tfds.testing.mock_data(num_examples=5):
        images = list(datasets.load_split("cycle_gan/horse2zebra", "trainB"))
    assert len(images) == 5
    assert all(i.ndim == 3 and i.shape[-1] == 3 and i.dtype == np.uint8 for i in images)


def test_embedded_source_and_max_images():
    assert len(datasets.load_split("embedded", "testA", max_images=7)) == 7
    assert datasets.kind("embedded") == "embedded" and datasets.kind("cycle_gan/maps") == "tfds"
