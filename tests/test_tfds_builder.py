"""The real TFDS `cycle_gan` builder, end to end and offline: download, extract, prepare, train.

The mock_data tests (test_datasets.py, test_paper_configs.py) are the fast check of our
TFDS reading; this one runs what `tfds.load("cycle_gan/<name>")` does the first time, on a
machine with no internet:

* A small zip in the official layout (`<name>/trainA/`, `trainB/`, `testA/`, `testB/`, three
  40x40 JPEGs each) is served by `http.server` on 127.0.0.1, in a thread of this test.
* A subprocess prepares it with the installed TFDS's own `cycle_gan` builder into a temporary
  data_dir. One thing is patched: the builder's URL table (`cycle_gan._DL_URLS[name]`, read by
  its `_split_generators`) points at the loopback server instead of efrosgans.eecs.berkeley.edu.
  The rest is TFDS's: the DownloadManager (requests over HTTP), checksum validation, the zip
  extraction, the builder's `_split_generators` / `_generate_examples`, the image encoding and
  the TFRecord writing. Checksums are real too: the served zip's size and sha256 are
  registered for its loopback URL in a temporary checksums dir (`tfds.download.add_checksums_dir`:
  deprecated, it logs, but still TFDS's way to register URLs it does not ship checksums for),
  and the download runs with `force_checksums_validation=True`, so an unregistered or
  mismatching download fails (NonMatchingChecksumError with a wrong sha256, checked by hand).
  This path imports `importlib_resources`, which TFDS does not declare (setup.cfg does).
* The unpatched command line then trains two steps from it through
  `--config.dataset=cycle_gan/<name>` with TFDS_DATA_DIR set to that data_dir.

Nothing may leave the machine, in either subprocess:
* TFDS's GCS lookups (gs://tfds-data, for pre-built data and metadata) are off:
  `gcs_utils._is_gcs_disabled` (already True by default in TFDS 4.9.10; set anyway) and
  `try_download_gcs=False`.
* http_proxy / https_proxy / all_proxy (both cases) point at a trap on loopback, with
  no_proxy=127.0.0.1,localhost: any other HTTP(S), from Python (requests, urllib) or from
  TensorFlow's C++ file systems (libcurl, e.g. gs://), goes there instead of out; the trap
  records the request line and hangs up (a gs:// read sends TensorFlow's
  `GET http://metadata.google.internal/...` token request there, checked by hand).
* A sitecustomize on PYTHONPATH installs an audit hook that, at any name lookup of a host that
  is not loopback, or any socket connection to one or to the trap, records it and ends the
  process at once (exit code 86): TFDS's downloader would otherwise retry a refused download
  ten times with backoff (urllib3's Retry) before failing.
The test asserts that both records are empty, so even an attempt that some code caught and
ignored fails it.
"""
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NAME = "horse2zebra"  # the default config's dataset
SPLITS = ("trainA", "trainB", "testA", "testB")
PER_SPLIT = 3

# In every Python process started with it on PYTHONPATH: at any name lookup or connection that
# is not loopback, or any connection to the proxy trap, record it and end the process at once.
GUARD = r'''
import ipaddress, os, sys

_LOG = os.environ["CYCLEJAX_TEST_NET_LOG"]
_TRAP_PORT = int(os.environ["CYCLEJAX_TEST_TRAP_PORT"])
_LOCAL_NAMES = {None, "", "localhost", b"localhost"}


def _loopback(host):
    if host in _LOCAL_NAMES:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what):
    with open(_LOG, "a") as f:
        f.write(f"pid {os.getpid()}: {what}\n")
    sys.stderr.write(f"network access outside loopback, refused by the test: {what}\n")
    sys.stderr.flush()
    os._exit(86)


def _hook(event, args):
    if event == "socket.getaddrinfo" and not _loopback(args[0]):
        _refuse(f"getaddrinfo {args[0]!r}")
    elif event in ("socket.connect", "socket.sendto") and isinstance(args[1], tuple):
        if not _loopback(args[1][0]):
            _refuse(f"{event} {args[1]!r}")
        if args[1][1] == _TRAP_PORT:
            _refuse(f"{event} to the proxy trap (an HTTP(S) request outside loopback)")


sys.addaudithook(_hook)
'''

# Prepares cycle_gan/<name> with TFDS's own builder, from the loopback URL.
PREPARE = r'''
import json, sys
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import gcs_utils
from tensorflow_datasets.image_classification import cycle_gan

name, url, data_dir, checksums_dir = sys.argv[1:5]
gcs_utils._is_gcs_disabled = True  # no gs://tfds-data (the default in TFDS 4.9.10)
cycle_gan._DL_URLS[name] = url     # the one patch: where the builder downloads from
tfds.download.add_checksums_dir(checksums_dir)  # the served zip's size and sha256, for that URL
builder = tfds.builder(f"cycle_gan/{name}", data_dir=data_dir)
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
    force_checksums_validation=True, try_download_gcs=False))
info = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
read = {}
for split in info:
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    read[split] = [[list(e["image"].shape), int(e["label"])] for e in examples]
print("PREPARED " + json.dumps({"info": info, "read": read, "version": str(builder.version)}))
'''


def _write_zip(path: Path) -> None:
    """The official layout: one top folder named as the dataset, holding the four splits."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for split in SPLITS:
            for i in range(PER_SPLIT):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
                z.writestr(f"{NAME}/{split}/{split}_{i}.jpg", buf.getvalue())


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        self.requests_seen.append(f"{self.command} {self.path}")


@pytest.fixture
def loopback_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www, in a thread; yields (url, requests seen)."""
    www = tmp_path / "www"
    www.mkdir()
    seen = []
    handler = type("Handler", (_Handler,), {"requests_seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def offline_env(tmp_path):
    """The environment of the subprocesses: proxies at a loopback trap, the audit guard.
    Yields (env, guard's record file, the trap's record: request lines)."""
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(16)
    trap.settimeout(0.2)
    trapped, stop = [], threading.Event()

    def serve_trap():
        while not stop.is_set():
            try:
                conn, _ = trap.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(300)
                except OSError:
                    first = b""
                trapped.append(first.split(b"\r\n", 1)[0].decode(errors="replace"))

    thread = threading.Thread(target=serve_trap, daemon=True)
    thread.start()
    port = trap.getsockname()[1]
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", CYCLEJAX_TEST_NET_LOG=str(log), CYCLEJAX_TEST_TRAP_PORT=str(port),
               PYTHONPATH=os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH")) if p))
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        env[var] = env[var.upper()] = f"http://127.0.0.1:{port}"
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    try:
        yield env, log, trapped
    finally:
        stop.set()
        thread.join(timeout=10)
        trap.close()


def test_the_guard_and_the_trap(offline_env):
    """Both work: a lookup of the real download host ends the process and is recorded; a
    request through the proxy variables reaches the trap."""
    env, log, trapped = offline_env
    out = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('efrosgans.eecs.berkeley.edu', 443)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 86 and "refused by the test" in out.stderr, out.stderr[-2000:]
    assert "efrosgans" in log.read_text()
    # curl, as TensorFlow's libcurl would: it honours the same proxy variables.
    if shutil.which("curl") is None:
        return
    subprocess.run(["curl", "-s", "-m", "5", "https://efrosgans.eecs.berkeley.edu/"], env=env, capture_output=True,
                   timeout=30, check=False)
    assert trapped and trapped[0].startswith("CONNECT efrosgans.eecs.berkeley.edu:443"), trapped


@pytest.mark.slow
def test_real_cycle_gan_builder_offline_then_train(tmp_path, loopback_server, offline_env):
    www, base_url, requests_seen = loopback_server
    env, net_log, trapped = offline_env
    zip_path = www / f"{NAME}.zip"
    _write_zip(zip_path)
    url = f"{base_url}/{NAME}.zip"
    checksums = tmp_path / "checksums"
    checksums.mkdir()
    # Not cycle_gan.txt: a file of that name would hide TFDS's own cycle_gan checksums.
    data = zip_path.read_bytes()
    (checksums / "cycle_gan_loopback.txt").write_text(
        f"{url}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{NAME}.zip\n")
    data_dir = tmp_path / "tfds"

    prep = subprocess.run([sys.executable, "-c", PREPARE, NAME, url, str(data_dir), str(checksums)],
                          cwd=tmp_path, env=dict(env, TFDS_DATA_DIR=str(data_dir)),
                          capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-4000:]
    result = json.loads(prep.stdout.split("PREPARED ", 1)[1])
    assert result["info"] == {s: PER_SPLIT for s in SPLITS}
    for split in SPLITS:
        label = 0 if split.endswith("A") else 1  # ClassLabel(names=["A", "B"])
        assert result["read"][split] == [[[40, 40, 3], label]] * PER_SPLIT
    assert requests_seen == [f"GET /{NAME}.zip"]  # downloaded once, over HTTP, from loopback
    assert (data_dir / "cycle_gan" / NAME / result["version"] / "dataset_info.json").is_file()
    assert (data_dir / "downloads" / "extracted").is_dir()  # TFDS's extractor unpacked the zip

    train = subprocess.run([sys.executable, "-m", "cyclejax.train", f"--workdir={tmp_path / 'run'}",
                            "--config=cyclejax/configs/default.py:tiny", f"--config.dataset=cycle_gan/{NAME}",
                            "--config.max_steps=2"],
                           cwd=ROOT, env=dict(env, TFDS_DATA_DIR=str(data_dir)),
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-4000:]
    assert f"data: {PER_SPLIT} A and {PER_SPLIT} B training images" in train.stdout, train.stdout[-2000:]
    assert "step 2/2" in train.stdout, train.stdout[-2000:]
    assert requests_seen == [f"GET /{NAME}.zip"]  # training read the prepared data, downloaded nothing

    # No attempt to leave the machine, from either process (Python or C++).
    assert not net_log.exists(), net_log.read_text()
    assert trapped == []
