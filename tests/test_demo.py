"""The demo page: uploads read and translated as `translate` does them, bad ones named, one compile per
size across requests, samples, and the page itself driven in headless Chromium."""
import re
import shutil
import socket
import struct
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from cyclejax import bundle, demo, embedded, translation
from tests.test_bundle import make_bundle

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A tiny two-direction bundle trained (as far as its config says) on the embedded dataset."""
    b = make_bundle(ngf=4)
    b.config["source"] = {"dataset": "embedded"}
    return bundle.save(b, tmp_path_factory.mktemp("bundle") / "horse2zebra", with_export=False)


@pytest.fixture(scope="module")
def page_work(bundle_dir):
    return demo.Demo(bundle.load(bundle_dir), tile=2048)


def _gradient(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + seed) % 256, (y * 5) % 256, np.full_like(x, 40 * seed % 256)], -1).astype(np.uint8)


def _bomb_png(path, side=20000):
    """A PNG whose header declares side x side pixels, more than twice PIL's MAX_IMAGE_PIXELS."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _valid_kinds(folder):
    """Images the project reads, each of a kind a photo folder holds: name -> path."""
    folder.mkdir()
    rgb = _gradient(30, 44, seed=1)
    Image.fromarray(rgb).save(folder / "plain.png")
    Image.fromarray((np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 136)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 44 wide and 30 high, shown rotated: 30 wide, 44 high
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb[:1, :1]).save(folder / "one_pixel.png")
    return {p.name: p for p in folder.iterdir()}


def test_uploads_of_every_kind_translate_as_the_translate_command_does(bundle_dir, page_work, tmp_path):
    files = _valid_kinds(tmp_path / "in")
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / f"out_{direction}"
        translation.translate(bundle_dir, tmp_path / "in", out, direction, progress=False)
        for name, path in files.items():
            shown, result, png, status = page_work(str(path), direction)
            want = np.asarray(Image.open(out / f"{path.stem}.png"))
            np.testing.assert_array_equal(result, want, err_msg=name)
            np.testing.assert_array_equal(np.asarray(Image.open(png)), want, err_msg=name)
            np.testing.assert_array_equal(shown, np.asarray(Image.open(out / "inputs" / f"{path.stem}.png")))
            assert status.startswith(demo.direction_label(page_work.bundle, direction)), status
    shown = {name: page_work(str(p), "AtoB")[0] for name, p in files.items()}
    assert shown["rotated.jpg"].shape == (44, 30, 3)  # EXIF orientation applied
    assert shown["one_pixel.png"].shape == (1, 1, 3)
    deep = np.round(np.arange(24 * 20).reshape(24, 20) * 136 / 257).astype(np.uint8)
    np.testing.assert_array_equal(shown["deep16.png"][..., 0], deep)  # scaled to 8 bits, not clipped to white
    assert np.abs(shown["cmyk.jpg"].astype(int) - _gradient(30, 44, seed=1)).mean() < 4


def test_bad_uploads_get_a_message_naming_the_file_and_the_next_upload_works(page_work, tmp_path):
    (tmp_path / "notes.jpg").write_text("just some text")
    (tmp_path / "empty.png").write_bytes(b"")
    good = tmp_path / "good.png"
    Image.fromarray(_gradient(16, 24)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    _bomb_png(tmp_path / "huge_scan.png")
    expected = {
        "notes.jpg": "notes.jpg cannot be decoded as an image (not in a format PIL can read)",
        "empty.png": "empty.png cannot be decoded as an image (not in a format PIL can read)",
        "cut.png": "cut.png cannot be decoded as an image",
        "huge_scan.png": f"huge_scan.png cannot be decoded as an image (more pixels than PIL opens, 2 x "
                         f"PIL.Image.MAX_IMAGE_PIXELS = {2 * Image.MAX_IMAGE_PIXELS}",
    }
    for name, message in expected.items():
        shown, result, png, status = page_work(str(tmp_path / name), "AtoB")
        assert (shown, result, png) == (None, None, None)
        assert status.startswith("**error:** ") and "Traceback" not in status and str(tmp_path) not in status
        assert _unescape(status.removeprefix("**error:** ")).startswith(message), status
        _, result, png, _ = page_work(str(good), "AtoB")
        assert result.shape == (16, 24, 3) and png.endswith("good_AtoB.png")
    assert page_work(None, "AtoB")[:3] == (None, None, None)


def _unescape(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def test_same_size_compiles_once_across_requests(page_work, tmp_path):
    for i, (h, w) in enumerate(((37, 53), (39, 55), (40, 56))):  # one padded size: 40 x 56
        Image.fromarray(_gradient(h, w, seed=i + 2)).save(tmp_path / f"{i}.png")
    page_work(str(tmp_path / "0.png"), "AtoB")  # the warm-up of this size
    events = []
    listener = lambda event, duration, **kw: events.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        statuses = [page_work(str(tmp_path / f"{i}.png"), "AtoB")[3] for i in (1, 2, 0)]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not [e for e in events if e.startswith("/jax/core/compile/")], events
    assert page_work.translators["AtoB"].shapes.count((1, 40, 56, 3)) == 1
    assert not any("compiled" in s for s in statuses), statuses


def test_large_images_are_tiled_with_progress_and_equal_translate(bundle_dir, tmp_path):
    work = demo.Demo(bundle.load(bundle_dir), tile=160)
    (tmp_path / "in").mkdir()
    Image.fromarray(_gradient(300, 420, seed=3)).save(tmp_path / "in" / "large.png")
    calls = []
    _, result, _, status = work(str(tmp_path / "in" / "large.png"), "AtoB",
                                lambda value, desc=None, unit="steps": calls.append(value))
    # Tiles start 160 - 64 apart, the last flush with the edge: rows at 0, 96, 140; columns at 0, 96, 192, 260.
    assert calls[0] == 0 and calls[1:] == [(i, 12) for i in range(1, 13)]
    assert "in 12 tiles of 160 pixels" in status
    assert work.translators["AtoB"].shapes == [(1, 160, 160, 3)]
    translation.translate(bundle_dir, tmp_path / "in", tmp_path / "out", tile=160, progress=False)
    np.testing.assert_array_equal(result, np.asarray(Image.open(tmp_path / "out" / "large.png")))


def test_samples_are_the_bundles_examples_or_its_datasets_test_images(bundle_dir, tmp_path):
    b = bundle.load(bundle_dir)
    samples = demo.sample_images(b, bundle_dir, tmp_path)
    assert [(d, label.split(":")[0]) for _, d, label in samples] == \
        [("AtoB", "horse → zebra")] * 4 + [("BtoA", "zebra → horse")] * 4
    wanted = list(embedded.load_split("testA")[:4]) + list(embedded.load_split("testB")[:4])
    for (path, _, _), want in zip(samples, wanted):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), want)
    # A bundle folder's own examples/A/ and examples/B/ come first.
    own = tmp_path / "own"
    shutil.copytree(bundle_dir, own)
    (own / "examples" / "A").mkdir(parents=True)
    Image.fromarray(_gradient(8, 8)).save(own / "examples" / "A" / "horse.jpg")
    (own / "examples" / "A" / "README.txt").write_text("not an image")
    samples = demo.sample_images(b, own, tmp_path)
    assert [(p.rsplit("/", 1)[-1], d) for p, d, _ in samples[:1]] == [("horse.jpg", "AtoB")]
    assert [d for _, d, _ in samples] == ["AtoB"] + ["BtoA"] * 4
    # A folder dataset's testA/ and testB/; nothing for a converted official model.
    data = tmp_path / "data"
    for split in ("testA", "testB"):
        (data / split).mkdir(parents=True)
        Image.fromarray(_gradient(8, 8)).save(data / split / "a.png")
    b.config["source"] = {"dataset": str(data)}
    assert [p for p, _, _ in demo.sample_images(b, bundle_dir, tmp_path)] == [str(data / "testA" / "a.png"),
                                                                            str(data / "testB" / "a.png")]
    b.config["source"] = {"pretrained": "horse2zebra"}
    assert demo.sample_images(b, "horse2zebra", tmp_path) == []


def test_app_offers_the_directions_the_bundle_has(bundle_dir, tmp_path):
    gr = pytest.importorskip("gradio")  # in the test extra; the browser test below fails without it
    one = make_bundle(ngf=4, directions=("AtoB",))
    for model, visible in ((bundle_dir, True), (one, False)):
        page = demo.app(model)
        radios = [c for c in page.blocks.values() if isinstance(c, gr.Radio)]
        assert [(r.visible, [v for _, v in r.choices]) for r in radios] == \
            [(visible, ["AtoB", "BtoA"] if visible else ["AtoB"])]
        assert page.cyclejax_demo.folder.is_dir()


def test_without_gradio_the_message_says_what_to_install(bundle_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(demo.DemoError, match=r"pip install 'cyclejax\[demo\]'"):
        demo.app(bundle_dir)


@pytest.mark.slow
def test_command_with_a_bad_model_prints_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cyclejax.demo", f"--model={tmp_path / 'nothing'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nothing'} is "
                                                                              "neither a bundle"), r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_page_in_a_browser_translates_downloads_names_bad_uploads_and_keeps_serving(bundle_dir, tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(chromium):
        pytest.fail(f"this test drives Debian's Chromium, and {chromium} does not exist: "
                    "apt-get install -y chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright  # the test extra

    (tmp_path / "in").mkdir()
    photo, same_size, later = (tmp_path / "in" / n for n in ("photo.png", "photo2.png", "later.png"))
    Image.fromarray(_gradient(48, 72, seed=1)).save(photo)
    Image.fromarray(_gradient(48, 72, seed=5)).save(same_size)
    Image.fromarray(_gradient(40, 36, seed=2)).save(later)
    for direction in ("AtoB", "BtoA"):
        translation.translate(bundle_dir, tmp_path / "in", tmp_path / direction, direction, progress=False)
    (tmp_path / "notes.jpg").write_text("just some text")

    page_app = demo.app(bundle_dir)
    port = _free_port()
    page_app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    events = []
    listener = lambda event, duration, **kw: events.append(event)  # noqa: E731
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, timeout=TIMEOUT_MS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                elsewhere = []
                page.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/")
                        or r.url.startswith("data:") else elsewhere.append(r.url))
                page.goto(f"http://127.0.0.1:{port}/", timeout=TIMEOUT_MS)
                status = page.locator("#status")

                def upload(path, expect):
                    # Waits for this upload's own status: while Gradio processes it, the status
                    # still holds the last one, which may match `expect`, under an overlay whose text
                    # ("processing", a timer) comes first; this upload's status starts with `expect`.
                    before = status.inner_text(timeout=TIMEOUT_MS)
                    clear = page.locator("#upload").get_by_role("button", name="Clear")
                    if clear.count():
                        clear.click(timeout=TIMEOUT_MS)
                        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=TIMEOUT_MS)
                    page.locator("#upload input[type=file]").set_input_files(str(path), timeout=TIMEOUT_MS)
                    page.wait_for_function("([before, t]) => { const s = document.querySelector('#status').innerText; "
                                           "return s !== before && s.trim().startsWith(t); }",
                                           arg=[before, expect], timeout=TIMEOUT_MS)
                    return status.inner_text(timeout=TIMEOUT_MS)

                def download(name):
                    page.wait_for_selector("#output img", timeout=TIMEOUT_MS)
                    with page.expect_download(timeout=TIMEOUT_MS) as d:
                        page.locator("#download").click(timeout=TIMEOUT_MS)
                    assert d.value.suggested_filename == name
                    d.value.save_as(tmp_path / "downloaded" / name)
                    return np.asarray(Image.open(tmp_path / "downloaded" / name))

                upload(photo, "horse → zebra: 72 × 48")
                np.testing.assert_array_equal(download("photo_AtoB.png"),
                                              np.asarray(Image.open(tmp_path / "AtoB" / "photo.png")))
                page.screenshot(path=tmp_path / "demo.png", full_page=True, timeout=TIMEOUT_MS)

                # The same size again, over HTTP: nothing traced or compiled.
                jax.monitoring.register_event_duration_secs_listener(listener)
                try:
                    text = upload(same_size, "horse → zebra: 72 × 48")
                finally:
                    jax.monitoring.unregister_event_duration_listener(listener)
                assert not [e for e in events if e.startswith("/jax/core/compile/")], events
                assert "compiled" not in text
                np.testing.assert_array_equal(download("photo2_AtoB.png"),
                                              np.asarray(Image.open(tmp_path / "AtoB" / "photo2.png")))

                # Not an image: named in the page, no output, no traceback; the next upload works.
                text = upload(tmp_path / "notes.jpg", "error")
                assert text == "error: notes.jpg cannot be decoded as an image (not in a format PIL can read)", text
                assert page.locator("#output img").count() == 0
                assert "Traceback" not in page.content()
                page.locator("#direction").get_by_text("zebra → horse").click(timeout=TIMEOUT_MS)
                upload(later, "zebra → horse: 36 × 40")
                np.testing.assert_array_equal(download("later_BtoA.png"),
                                              np.asarray(Image.open(tmp_path / "BtoA" / "later.png")))

                # A sample: its direction is chosen with it.
                page.locator("#direction").get_by_text("horse → zebra").click(timeout=TIMEOUT_MS)
                page.get_by_text("zebra → horse: testB_1.png").click(timeout=TIMEOUT_MS)
                page.wait_for_function("t => document.querySelector('#status').innerText.startsWith(t)",
                                       arg="zebra → horse: 64 × 64", timeout=TIMEOUT_MS)
                assert page.locator("#direction input:checked").get_attribute("value", timeout=TIMEOUT_MS) == "BtoA"
                assert elsewhere == []  # the page works without internet: no fonts or scripts from elsewhere
            finally:
                browser.close()
    finally:
        page_app.close()
