"""A run whose --workdir is gs://: trained, killed, resumed to the state an uninterrupted local
run reaches, exported, translated and scored, every file landing in the bucket.

Against the loopback emulator of tests/gcs_emulator.py, every layer real: Orbax's arrays
through TensorStore, Orbax's metadata, samples, eval.json and bundles through etils.epath over
tf.io.gfile, TensorBoard events through tf.io.gfile.
"""
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.gcs_emulator import gcs, gcs_server  # noqa: F401,F811  (fixtures)
from tests.test_tfds_builder import loopback_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY = [f"--config={ROOT / 'cyclejax' / 'configs' / 'default.py'}:tiny", "--config.log_every=2",
        "--config.n_epochs=1000", "--config.checkpoint_every=2", "--config.sample_every=4"]


def _train(workdir, *extra):
    return [sys.executable, "-m", "cyclejax.train", f"--workdir={workdir}", *TINY, *extra]


def _ok(out: subprocess.CompletedProcess, gcs) -> str:
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:] + "\nemulator:\n" + gcs.log()[-2000:]
    return out.stdout


def _committed_steps(gcs, prefix: str) -> list[int]:
    """Checkpoint steps in the bucket that Orbax finished (on GCS it marks them with commit_success.txt)."""
    parts = [n[len(prefix):].split("/") for n in gcs.list(prefix)]
    # <step>/commit_success.txt: the step's own mark (its items, e.g. state/, have their own first)
    return sorted(int(p[0]) for p in parts if len(p) == 2 and p[0].isdigit() and p[1] == "commit_success.txt")


COMPARE = """
import json, sys
import jax, numpy as np
import orbax.checkpoint as ocp
from cyclejax import checkpoints
states = []
for w in sys.argv[1:]:
    mngr = checkpoints.manager(w)
    step = mngr.latest_step()
    states.append((step, mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]))
    mngr.close()
(sa, a), (sb, b) = states
same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
print(json.dumps({"steps": [sa, sb], "leaves": len(jax.tree_util.tree_leaves(same)),
                  "equal": sum(jax.tree_util.tree_leaves(same))}))
"""


@pytest.mark.slow
def test_gs_workdir_killed_resumed_exported(gcs, tmp_path):
    run = gcs.url("run")
    # Run from an empty folder: a gs:// path taken for a local one would appear here as gs:/...
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = gcs.popen(_train(run), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not _committed_steps(gcs, "run/checkpoints/"):
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = _committed_steps(gcs, "run/checkpoints/")
    assert saved and saved[0] >= 2, gcs.list("run/")

    target = saved[-1] + 4
    final = [f"--config.max_steps={target}", "--config.eval_at_end=True"]
    out = _ok(gcs.run(_train(run, *final), cwd=cwd, capture_output=True, text=True, timeout=600), gcs)
    assert f"resumed from step {saved[-1]} in {run}" in out
    assert f"step {target}/{target}" in out and "ratio = model / better baseline" in out

    # The same command, uninterrupted, on local disk.
    local = tmp_path / "local"
    _ok(subprocess.run(_train(local, *final), cwd=cwd, capture_output=True, text=True, timeout=600), gcs)
    compared = json.loads(_ok(gcs.run([sys.executable, "-c", COMPARE, run, str(local)], cwd=cwd,
                                      capture_output=True, text=True, timeout=300), gcs).splitlines()[-1])
    assert compared["steps"] == [target, target]
    assert compared["equal"] == compared["leaves"] > 20, compared

    names = gcs.list("run/")
    assert any(n.startswith("run/events.out.tfevents.") for n in names), names
    assert f"run/samples/step_{target:08d}.png" in names and "run/eval.json" in names
    assert json.loads(gcs.read("run/eval.json"))["step"] == target
    assert json.loads(gcs.read("run/eval.json")) == json.loads((local / "eval.json").read_text())

    # Export from the bucket into the bucket; translate and score from there.
    bundle = gcs.url("bundle")
    _ok(gcs.run([sys.executable, "-m", "cyclejax.export", f"--workdir={run}", f"--output={bundle}"],
                cwd=cwd, capture_output=True, text=True, timeout=300), gcs)
    assert {"bundle/bundle.json", "bundle/AtoB.msgpack", "bundle/BtoA.msgpack"} <= set(gcs.list("bundle/"))
    assert json.loads(gcs.read("bundle/bundle.json"))["source"] == {"workdir": run, "step": target,
                                                                      "dataset": "embedded",
                                                                      "weights": "average (ema_decay 0.999)"}
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(40, 32), (32, 48)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size[::-1], 3), np.uint8)).save(photos / f"p{i}.jpg")
    _ok(gcs.run([sys.executable, "-m", "cyclejax.translate", f"--model={bundle}", f"--input={photos}",
                 f"--output={gcs.url('out')}"], cwd=cwd, capture_output=True, text=True, timeout=300), gcs)
    out_names = set(gcs.list("out/"))
    assert {"out/index.html", "out/p0.png", "out/p1.png", "out/inputs/p0.png", "out/inputs/p1.png"} <= out_names
    assert Image.open(io.BytesIO(gcs.read("out/p1.png"))).size == (32, 48)
    report = _ok(gcs.run([sys.executable, "-m", "cyclejax.evaluate", f"--model={bundle}"], cwd=cwd,
                         capture_output=True, text=True, timeout=300), gcs)
    assert f"report: {bundle}/eval_embedded.json" in report
    assert json.loads(gcs.read("bundle/eval_embedded.json"))["model"] == bundle

    assert list(cwd.iterdir()) == [], list(cwd.iterdir())  # nothing went to local disk


def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path):
    """`pathlib` would turn gs://b/run into the local folder gs:/b/run; the resolver keeps the URL."""
    from cyclejax import storage

    assert str(storage.resolve("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"
    assert storage.resolve("rel/x") == Path.cwd() / "rel" / "x"
    assert str(Path("gs://b/run")) == "gs:/b/run"  # what the file layer saves us from
    del tmp_path


@pytest.mark.slow
def test_gs_folder_dataset_trains_and_translates(gcs, tmp_path):
    """A folder dataset in the bucket: listed, header-checked and streamed through epath/tf.io.gfile."""
    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB"):
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), np.uint8)).save(buf, format="JPEG")
            gcs.write(f"data/{split}/{i}.jpg", buf.getvalue())
    gcs.write("data/trainA/notes.txt", b"not an image")
    data = gcs.url("data")
    out = _ok(gcs.run([sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'run'}",
                       f"--config={ROOT / 'cyclejax' / 'configs' / 'default.py'}:tiny", f"--config.dataset={data}",
                       "--config.max_steps=2", "--config.log_every=1"], cwd=tmp_path, capture_output=True, text=True,
                      timeout=600), gcs)
    assert "data: 3 A and 3 B training images" in out and "step 2/2" in out
    _ok(gcs.run([sys.executable, "-m", "cyclejax.translate", f"--model={tmp_path / 'run'}",
                 f"--input={data}/trainA", f"--output={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True,
                text=True, timeout=300), gcs)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0.png", "1.png", "2.png"]
    assert Image.open(tmp_path / "out" / "2.png").size == (48, 56)
    # A bucket path that cannot be listed: the error says what to check.
    bad = gcs.run([sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'run2'}",
                   f"--config={ROOT / 'cyclejax' / 'configs' / 'default.py'}:tiny",
                   f"--config.dataset={gcs.url('nothing-here')}"], cwd=tmp_path, capture_output=True, text=True,
                  timeout=300)
    assert bad.returncode == 2 and "a bucket path that cannot be listed: check its name, and that this machine has " \
        "credentials" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-2000:]


@pytest.mark.slow
def test_tfds_data_dir_on_gs(gcs, tmp_path, loopback_server):
    """TFDS_DATA_DIR=gs://...: a cycle_gan dataset prepared by the real builder (tests/test_tfds_builder.py's
    loopback zip), copied into the bucket, and trained from there through TFDS's own gfile reads."""
    import hashlib

    from tests.test_tfds_builder import NAME, PER_SPLIT, PREPARE, _write_zip

    www, base_url, _ = loopback_server
    _write_zip(www / f"{NAME}.zip")
    data = (www / f"{NAME}.zip").read_bytes()
    url = f"{base_url}/{NAME}.zip"
    (tmp_path / "checksums").mkdir()
    (tmp_path / "checksums" / "cycle_gan_loopback.txt").write_text(
        f"{url}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{NAME}.zip\n")
    local = tmp_path / "tfds"
    prep = subprocess.run([sys.executable, "-c", PREPARE, NAME, url, str(local), str(tmp_path / "checksums")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr[-3000:]
    for f in (local / "cycle_gan").rglob("*"):
        if f.is_file():
            gcs.write(f"tfds/{f.relative_to(local).as_posix()}", f.read_bytes())
    out = _ok(gcs.run([sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'run'}",
                       f"--config={ROOT / 'cyclejax' / 'configs' / 'default.py'}:tiny",
                       f"--config.dataset=cycle_gan/{NAME}", "--config.max_steps=2"], cwd=tmp_path,
                      env={"TFDS_DATA_DIR": gcs.url("tfds")}, capture_output=True, text=True, timeout=600), gcs)
    assert f"data: {PER_SPLIT} A and {PER_SPLIT} B training images" in out and "step 2/2" in out
