"""Folder datasets stream: memory does not grow with the dataset, photos of mixed sizes and
kinds train with the quick-start config, and bad files are named."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config=cyclejax/configs/default.py:tiny", "--config.log_every=1"]
# The train command, then this process's peak RSS (MB) as the last line.
PEAK_RSS = """
import resource, runpy, sys
sys.argv = ["cyclejax.train", *sys.argv[1:]]
try:
    runpy.run_module("cyclejax.train", run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code:
        raise
print("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _photo(h: int, w: int, seed: int) -> Image.Image:
    """A smooth picture with some texture, as a photo compresses (~100-200 KB at 2048x1024)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (h + w) * 255], -1)
    img += rng.normal(0, 6, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _large_folder(root: Path, n: int) -> Path:
    variants = []
    for seed in range(5):
        buf = io.BytesIO()
        _photo(1024, 2048, seed).save(buf, format="JPEG", quality=85)
        variants.append(buf.getvalue())
    for split in ("trainA", "trainB"):
        (root / split).mkdir(parents=True)
        for i in range(n):
            (root / split / f"{i:04d}.jpg").write_bytes(variants[i % 5])
    return root


def _train_peak(workdir: Path, dataset: Path, *extra) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, f"--workdir={workdir}", *TINY,
                          f"--config.dataset={dataset}", "--config.max_dataset_size=0", "--config.max_steps=4",
                          "--config.eval_at_end=False", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return float(out.stdout.split("peak_rss_mb")[-1]), out.stdout


@pytest.mark.slow
def test_memory_does_not_grow_with_the_dataset(tmp_path):
    small = _large_folder(tmp_path / "small", 20)
    large = _large_folder(tmp_path / "large", 600)
    rss_small, _ = _train_peak(tmp_path / "w_small", small)
    rss_large, log = _train_peak(tmp_path / "w_large", large)
    # 600 decoded 2048x1024 photos a domain would be 7.5 GB; the paths and sizes are nothing.
    assert rss_large - rss_small <= 300, (rss_small, rss_large)
    assert "data: 600 A and 600 B training images" in log and "step 4/4" in log
    listed = float(log.split("(listed in ")[1].split(" s")[0])
    print(f"peak RSS {rss_small:.0f} MB (20 images) vs {rss_large:.0f} MB (600); listed 1,200 files in {listed:.1f} s")


def _mixed_folder(root: Path) -> Path:
    """Photos as a phone folder holds them: JPEG and PNG of different sizes, EXIF-rotated, 16-bit, CMYK, RGBA."""
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "trainA": [("a.jpg", _photo(120, 160, 0), {}),
                   ("b.jpg", _photo(200, 90, 1), {"exif": exif}),  # stored 90 wide, shown 200x90
                   ("c.png", Image.fromarray(np.asarray(_photo(70, 80, 2).convert("L")).astype(np.uint16) * 257), {}),
                   ("d.jpg", _photo(100, 100, 3).convert("CMYK"), {})],
        "trainB": [("e.png", _photo(90, 130, 4).convert("RGBA"), {}), ("f.jpg", _photo(150, 150, 5), {}),
                   ("g.png", _photo(64, 96, 6).convert("P"), {})],
    }
    for split, items in files.items():
        (root / split).mkdir(parents=True)
        for name, im, kw in items:
            im.save(root / split / name, **kw)
    return root


@pytest.mark.slow
def test_the_readme_example_trains_on_a_folder_of_mixed_photos(tmp_path):
    """`python -m cyclejax.train --workdir=runs/x --config.dataset=/data/my_a2b --config.ngf=32`, shrunk."""
    data = _mixed_folder(tmp_path / "my_a2b")
    cmd = [sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'x'}", f"--config.dataset={data}",
           "--config.ngf=8", "--config.ndf=8", "--config.max_steps=2", "--config.log_every=1",
           "--config.eval_at_end=False"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "data: 4 A and 3 B training images" in out.stdout and "step 2/2" in out.stdout
    grid = Image.open(tmp_path / "x" / "samples" / "step_00000002.png")  # resize_and_crop 72 -> 64 ('auto')
    assert grid.size[1] == 4 * 64

    # preprocess='none' cannot batch them: refused before anything compiles, naming two files.
    refused = subprocess.run(cmd[:3] + [f"--workdir={tmp_path / 'y'}", "--config.preprocess=none"] + cmd[4:],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    error = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "a.jpg is 160x120 but" in error[0] and "b.jpg is 200x90" in error[0], error
    assert "--config.preprocess=resize_and_crop" in error[0] and not (tmp_path / "y" / "checkpoints").exists()


@pytest.mark.slow
def test_a_file_that_breaks_mid_training_is_named(tmp_path):
    data = tmp_path / "d"
    for split in ("trainA", "trainB", "testA", "testB"):  # the sample grids read the test splits
        (data / split).mkdir(parents=True)
        for i in range(3):
            _photo(256, 256, i).save(data / split / f"{i}.jpg")
    # trainA is walked in full every epoch: its cut file is read by the input pipeline in the
    # first three steps.
    whole = (data / "trainA" / "1.jpg").read_bytes()
    (data / "trainA" / "1.jpg").write_bytes(whole[: len(whole) * 2 // 3])  # the header intact, the data cut
    out = subprocess.run([sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'w'}", *TINY,
                          f"--config.dataset={data}", "--config.max_steps=12"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"{data / 'trainA' / '1.jpg'} cannot be decoded" in error[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr


def test_a_decode_error_leaves_no_tf_data_iterator_alive(tmp_path):
    """The error that names a bad file keeps nothing of tf.data alive: an iterator still alive
    at interpreter exit can hang the process (its worker threads call Python), as it once did
    in CI after the error line of the test above."""
    import gc
    import weakref

    from cyclejax import datasets, input_pipeline
    from tests.conftest import tiny_config

    for split in ("trainA", "trainB"):
        (tmp_path / split).mkdir()
        for i in range(3):
            _photo(64, 64, i).save(tmp_path / split / f"{i}.jpg")
    whole = (tmp_path / "trainA" / "1.jpg").read_bytes()
    (tmp_path / "trainA" / "1.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    config = tiny_config(batch_size=1, dataset=str(tmp_path), preprocess="resize_and_crop", load_size=36)
    A, B = (datasets.load_split(str(tmp_path), s) for s in ("trainA", "trainB"))
    gc.disable()  # reference counting alone must free it, as during interpreter finalization
    try:
        batches = input_pipeline.train_batches(A, B, config, 0)
        iterator = weakref.ref(batches._it._iterator)
        with pytest.raises(datasets.DatasetError, match=r"1\.jpg cannot be decoded") as raised:
            for _ in range(6):
                next(batches)
        assert iterator() is None, "the DatasetError keeps tf.data's iterator alive"
        assert "1.jpg" in str(raised.value)
        healthy = input_pipeline.train_batches(B, B, config, 0)
        next(healthy)
        iterator = weakref.ref(healthy._it._iterator)
        healthy.close()
        assert iterator() is None
        with pytest.raises(StopIteration):
            next(healthy)
    finally:
        gc.enable()


def test_a_file_gone_since_the_listing_is_named_with_what_to_do(tmp_path):
    from cyclejax import datasets, input_pipeline
    from tests.conftest import tiny_config

    for split in ("trainA", "trainB"):
        (tmp_path / split).mkdir()
        for i in range(2):
            _photo(40, 40, i).save(tmp_path / split / f"{i}.jpg")
    config = tiny_config(batch_size=1, dataset=str(tmp_path), preprocess="resize_and_crop", load_size=36)
    A, B = (datasets.load_split(str(tmp_path), s) for s in ("trainA", "trainB"))
    (tmp_path / "trainA" / "1.jpg").unlink()  # after the listing, before the read
    with input_pipeline.train_batches(A, B, config, 0) as batches:
        with pytest.raises(datasets.DatasetError, match=r"listed when the run started cannot be opened now .*"
                                                        r"trainA/1.jpg.*restore the file and run the same command"):
            for _ in range(4):
                next(batches)
