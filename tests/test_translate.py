"""Translating image files: any size, one compile per padded size, tiles, index.html, bad inputs."""
import numpy as np
import pytest
from PIL import Image

from cyclejax import translation
from tests.test_bundle import make_bundle


@pytest.fixture(scope="module")
def tiny_bundle():
    # threefry's weights: the tiles test's bound (12 levels of 255) was measured on them.
    return make_bundle(ngf=4, key_impl="threefry2x32")


def test_any_size_is_reflection_padded_translated_and_cropped_back(tiny_bundle):
    t = translation.ImageTranslator(tiny_bundle, "AtoB")
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = t(img)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    x = img.astype(np.float32) / 127.5 - 1
    padded = np.pad(x, ((0, 3), (0, 3), (0, 0)), mode="reflect")  # 40 x 56, multiples of 4
    y = np.asarray(tiny_bundle.jit_apply("AtoB")(padded[None]))[0, :37, :53]
    np.testing.assert_array_equal(out, np.clip(np.round((y + 1) * 127.5), 0, 255).astype(np.uint8))


def test_compiles_once_per_distinct_padded_size(tiny_bundle):
    t = translation.ImageTranslator(tiny_bundle, "BtoA")
    rng = np.random.default_rng(1)
    for h, w in ((37, 53), (38, 54), (40, 56), (37, 53), (20, 20)):
        t(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert t.shapes == [(1, 40, 56, 3), (1, 20, 20, 3)]


def test_large_images_go_through_equal_tiles_blended_without_seams(tiny_bundle):
    t = translation.ImageTranslator(tiny_bundle, "AtoB", tile=160)
    y, x = np.mgrid[0:300, 0:420]
    img = np.stack([(x * 0.5) % 256, (y * 0.7) % 256, np.full_like(x, 90)], -1).astype(np.uint8)
    out = t(img)
    assert out.shape == (300, 420, 3)
    assert t.shapes == [(1, 160, 160, 3)]  # every tile, edge ones included, has one shape
    whole = translation.ImageTranslator(tiny_bundle, "AtoB", tile=4096)(img)
    # Tiles see their own instance-norm statistics: close to the whole-image result, not equal.
    assert np.abs(out.astype(float) - whole).mean() < 12
    for n, inner in ((300, 160), (420, 160)):
        starts = translation.tile_starts(n, inner)
        assert starts[0] == 0 and starts[-1] == n - inner
        assert all(b - a <= inner - translation.OVERLAP for a, b in zip(starts, starts[1:]))


def _write_folder(path, sizes):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"img{i}.jpg")
    return path


def test_folder_gives_pngs_with_input_names_and_an_index_page(tiny_bundle, tmp_path, caplog):
    src = _write_folder(tmp_path / "in", [(30, 41), (64, 64)])
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(src / "img0.png")  # same stem, grayscale
    (src / "notes.txt").write_text("not an image")
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    t = translation.ImageTranslator(tiny_bundle, "AtoB")
    rows = translation.translate_files(t, translation.list_inputs(src), tmp_path / "out", title="horse -> zebra",
                                     progress=False)
    names = sorted(o for _, o in rows)
    assert names == ["img0.png", "img0_png.png", "img1.png"]
    assert Image.open(tmp_path / "out" / "img0.png").size == (41, 30)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "horse -&gt; zebra" in page and "inputs/img1.png" in page and page.count("<tr>") == 4
    assert "notes.txt" in caplog.text and "broken.png" in caplog.text


def test_bad_inputs_are_named(tiny_bundle, tmp_path):
    with pytest.raises(translation.TranslateError, match="nothing does not exist"):
        translation.list_inputs(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(translation.TranslateError, match="holds no image files"):
        translation.list_inputs(tmp_path / "empty")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    t = translation.ImageTranslator(tiny_bundle, "AtoB")
    with pytest.raises(translation.TranslateError, match="bad.jpg cannot be decoded as an image \\(not in a format PIL can read\\)"):
        translation.translate_files(t, [bad], tmp_path / "out", strict=True, progress=False)


def test_outputs_never_overwrite_inputs_and_bad_outputs_are_named(tiny_bundle, tmp_path):
    src = _write_folder(tmp_path / "photos", [(16, 16), (16, 20)])
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    t = translation.ImageTranslator(tiny_bundle, "AtoB")
    for output in (src, tmp_path / "photos" / ".." / "photos"):  # the input folder, by any name
        with pytest.raises(translation.TranslateError, match="holds the input .*img0.jpg: its translations would mix with"):
            translation.translate_files(t, translation.list_inputs(src), output, progress=False)
    with pytest.raises(translation.TranslateError, match="holds the input .*img1.jpg"):  # one file into its folder
        translation.translate_files(t, [src / "img1.jpg"], src, strict=True, progress=False)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    # Into a subfolder of the input folder: allowed, nothing of the input changes.
    translation.translate_files(t, translation.list_inputs(src), src / "translated", progress=False)
    assert {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()} == before
    # An output that is a file: named, no traceback from deep inside.
    (tmp_path / "somefile").write_text("x")
    with pytest.raises(translation.TranslateError, match="--output .*somefile cannot be written"):
        translation.translate_files(t, translation.list_inputs(src), tmp_path / "somefile", progress=False)


def test_a_folder_of_only_unreadable_images_is_an_error(tiny_bundle, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "in" / name).write_bytes(b"not an image")
    t = translation.ImageTranslator(tiny_bundle, "AtoB")
    with pytest.raises(translation.TranslateError, match="none of the 2 images could be read"):
        translation.translate_files(t, translation.list_inputs(tmp_path / "in"), tmp_path / "out", progress=False)
