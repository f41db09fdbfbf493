"""The one image reader, on the awkward files real folders hold (each written here by PIL)."""
import io

import numpy as np
import pytest
from PIL import Image

from cyclejax import datasets, images, translation


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(h=30, w=40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], -1).astype(np.uint8)


def test_16_bit_grayscale_png_is_scaled_not_clipped():
    eight = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same picture in 16 bits
    data = _bytes(Image.fromarray(sixteen), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = images.decode(data, "g16.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], eight)
    assert abs(out.mean() - eight.mean()) < 0.5  # PIL's convert('RGB') gives ~255 here
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).mean() > 250


def test_exif_orientation_is_applied_and_header_size_agrees():
    upright = _gradient(30, 40)
    stored = np.rot90(upright, k=1)  # what a camera held sideways stores (40 x 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _bytes(Image.fromarray(np.ascontiguousarray(stored)), "PNG", exif=exif)
    out = images.decode(data, "phone.png")
    assert out.shape == (30, 40, 3) and images.size(data) == (30, 40)
    np.testing.assert_array_equal(out, upright)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P_transparent", "RGBA", "CMYK", "I;16"])
def test_every_mode_becomes_rgb(mode):
    rgb = _gradient()
    base = Image.fromarray(rgb)
    if mode == "P_transparent":
        im = base.convert("P")
        im.info["transparency"] = 0
        data = _bytes(im, "PNG", transparency=0)
    elif mode == "CMYK":
        data = _bytes(base.convert("CMYK"), "JPEG", quality=95)
    elif mode == "I;16":
        data = _bytes(Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257), "PNG")
    else:
        data = _bytes(base.convert(mode), "PNG")
    out = images.decode(data, mode)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    want = {"L": np.asarray(base.convert("L"))[..., None].repeat(3, -1),
            "LA": np.asarray(base.convert("L"))[..., None].repeat(3, -1),
            "I;16": np.asarray(base.convert("L"))[..., None].repeat(3, -1),
            "P": np.asarray(base.convert("P").convert("RGB")),
            "P_transparent": np.asarray(base.convert("P").convert("RGB")),
            "RGBA": rgb, "CMYK": rgb}[mode]
    tol = 3 if mode == "CMYK" else 0  # JPEG
    assert np.abs(out.astype(int) - want.astype(int)).max() <= tol


def test_alpha_is_dropped_keeping_the_colour_under_it():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent red
    out = images.decode(_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [200, 0, 0]


def test_undecodable_bytes_name_the_file():
    with pytest.raises(images.UnreadableImage, match="broken.jpg cannot be decoded"):
        images.decode(b"\xff\xd8\xff not really a jpeg", "broken.jpg")
    good = _bytes(Image.fromarray(_gradient(64, 64)), "JPEG")
    with pytest.raises(images.UnreadableImage, match="cut.jpg"):
        images.decode(good[: len(good) // 2], "cut.jpg")


def test_an_image_over_pils_pixel_limit_is_named_with_the_limit(monkeypatch, tmp_path):
    """PIL refuses images over 2 x MAX_IMAGE_PIXELS with an error outside the ones a bad file
    raises; the reader and the folder listing name the file and the limit instead."""
    big = _bytes(Image.fromarray(_gradient(40, 50)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 2000 pixels at most: this one has 2000+
    for read in (images.decode, images.size):
        with pytest.raises(images.UnreadableImage, match="huge.png .*more pixels than PIL opens, 2 x "
                                                         "PIL.Image.MAX_IMAGE_PIXELS = 1000"):
            read(big, "huge.png")
    for split in ("trainA", "trainB"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "small.png").write_bytes(_bytes(Image.fromarray(_gradient(10, 10)), "PNG"))
    (tmp_path / "trainA" / "huge.png").write_bytes(big)
    assert list(datasets.load_split(str(tmp_path), "trainA").names) == [str(tmp_path / "trainA" / "small.png")]


def test_training_translate_and_evaluate_read_the_same_pixels(tmp_path):
    upright = _gradient(30, 40)
    exif = Image.Exif()
    exif[0x0112] = 8
    for split in ("trainA", "testA"):
        (tmp_path / split).mkdir()
        Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=-1))).save(tmp_path / split / "p.png", exif=exif)
    train = datasets.load_split(str(tmp_path), "trainA")
    assert train.sizes == ((30, 40),)
    np.testing.assert_array_equal(train[0], upright)  # training (and evaluation: the same Split)
    np.testing.assert_array_equal(translation.read_image(tmp_path / "testA" / "p.png", 3), upright)
