"""The loopback GCS of tests/gcs_emulator.py, one storage layer at a time, each in a subprocess
as the code under test will be: etils.epath, TensorBoard event files through tf.io.gfile, Orbax
checkpoints through TensorStore; then that nothing leaks out and nothing is left running."""
import errno
import os
import struct
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.gcs_emulator import GcsEmulator, gcs, gcs_server  # noqa: F401,F811  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def _python(gcs, code: str, env: dict | None = None) -> str:
    out = gcs.run([sys.executable, "-c", textwrap.dedent(code)], env={"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                  cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:] + "\nemulator log:\n" + gcs.log()
    return out.stdout


@pytest.mark.parametrize("backend", ["tf", "gcsfs"])
def test_epath(gcs, backend):
    root = gcs.url("e")
    out = _python(gcs, f"""
        from etils import epath
        root = epath.Path({root!r})
        print(type(root._backend).__name__)
        assert not root.exists()
        (root / "sub").mkdir(parents=True, exist_ok=True)
        (root / "sub" / "a.txt").write_text("alpha")
        (root / "gone" / "x").mkdir(parents=True)
        (root / "gone" / "x" / "y.txt").write_text("y")
        (root / "config.json").write_text("{{}}")
        assert (root / "sub" / "a.txt").read_text() == "alpha"
        assert (root / "sub").is_dir() and (root / "config.json").is_file()
        assert sorted(p.name for p in root.iterdir()) == ["config.json", "gone", "sub"], list(root.iterdir())
        assert [p.name for p in root.glob("*/*.txt")] == ["a.txt"], list(root.glob("*/*.txt"))
        (root / "gone").rmtree()
        assert not (root / "gone").exists() and not (root / "gone" / "x" / "y.txt").exists()
        assert sorted(p.name for p in root.iterdir()) == ["config.json", "sub"], list(root.iterdir())
        """, env={"EPATH_USE_TF": "true" if backend == "tf" else "false"})
    assert out.split() == [{"tf": "_TfBackend", "gcsfs": "_FileSystemSpecBackend"}[backend]]
    files = [n for n in gcs.list("e/") if not n.endswith("/")]  # TF also writes "folder/" markers
    assert files == ["e/config.json", "e/sub/a.txt"]
    assert gcs.read("e/sub/a.txt") == b"alpha"


def _tfrecords(data: bytes):
    """The records of a TFRecord file (length, its crc, payload, its crc), crcs unchecked."""
    records, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<Q", data, at)
        records.append(data[at + 12: at + 12 + n])
        at += 12 + n + 4
    return records


def test_tensorboard_events(gcs):
    logdir = gcs.url("run/tb")
    out = _python(gcs, f"""
        import tensorflow as tf
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util import tensor_util
        writer = tf.summary.create_file_writer({logdir!r})
        with writer.as_default():
            for step in range(3):
                tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
        writer.flush()
        writer.close()
        acc = EventAccumulator({logdir!r})
        acc.Reload()
        # TF2 writes scalars as tensor summaries (TensorBoard's scalars plugin reads them so).
        print([(e.step, round(float(tensor_util.make_ndarray(e.tensor_proto)), 4)) for e in acc.Tensors("loss")])
        """)
    assert out.strip() == "[(0, 1.0), (1, 0.5), (2, 0.3333)]"
    # Read back here too, from the emulator itself: the object TF wrote is a well-formed event file.
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util
    (name,) = [n for n in gcs.list("run/tb/") if "tfevents" in n]
    events = [event_pb2.Event.FromString(r) for r in _tfrecords(gcs.read(name))]
    scalars = [(e.step, v.tag, float(tensor_util.make_ndarray(v.tensor))) for e in events for v in e.summary.value]
    assert [s[:2] for s in scalars] == [(0, "loss"), (1, "loss"), (2, "loss")]
    assert [s[2] for s in scalars] == pytest.approx([1.0, 0.5, 1 / 3])


def test_orbax_checkpoint_manager(gcs):
    directory = gcs.url("run/checkpoints")
    out = _python(gcs, f"""
        import numpy as np
        import orbax.checkpoint as ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        with ocp.CheckpointManager({directory!r}, options=options) as mngr:
            for step in range(3):
                mngr.save(step, args=ocp.args.StandardSave({{"w": np.arange(4.0) + step}}))
            mngr.wait_until_finished()
            print(mngr.all_steps())
        with ocp.CheckpointManager({directory!r}, options=options) as mngr:  # reopened
            step = mngr.latest_step()
            state = mngr.restore(step, args=ocp.args.StandardRestore({{"w": np.zeros(4)}}))
            print(mngr.all_steps(), step, state["w"].tolist())
        """)
    assert out.splitlines() == ["[1, 2]", "[1, 2] 2 [2.0, 3.0, 4.0, 5.0]"]
    names = gcs.list("run/checkpoints/")
    assert {n.split("/")[2] for n in names if n.count("/") > 2} == {"1", "2"}
    assert "run/checkpoints/2/commit_success.txt" in names  # Orbax's marker, written through epath
    assert any("/ocdbt.process_0/" in n for n in names)  # the arrays, written by TensorStore


def test_in_process_environ(gcs):
    """`environ()` for clients created in this process (here TensorStore, which reads it per open)."""
    import tensorstore as ts
    before = dict(os.environ)
    with gcs.environ():
        kv = ts.KvStore.open({"driver": "gcs", "bucket": gcs.bucket, "path": "kv/"}).result()
        kv.write("a", b"written in process").result()
        assert kv.read("a").result().value == b"written in process"
    assert dict(os.environ) == before
    assert gcs.read("kv/a") == b"written in process"


def test_nothing_leaks_and_nothing_is_left_running():
    """A second emulator from the same helper: every way out fails fast, and after `stop()` (here
    reached through an exception) neither the emulator process nor its ports remain."""
    with pytest.raises(RuntimeError, match="a failing test"):
        with GcsEmulator(bucket="leaks") as gcs:
            pid, port, proxy_port, tmp = gcs.pid, gcs.port, gcs.proxy_port, gcs._tmp
            out = _python(gcs, """
                import socket, time, urllib.error, urllib.request
                import google.auth, google.auth.exceptions
                t = time.monotonic()
                try:  # plain HTTP honours http_proxy: the proxy refuses it
                    urllib.request.urlopen("http://metadata.google.internal/computeMetadata/v1/", timeout=10)
                except urllib.error.HTTPError as e:
                    print("metadata", e.code)
                try:  # no key file, no gcloud credentials, no metadata server
                    google.auth.default()
                except google.auth.exceptions.DefaultCredentialsError:
                    print("credentials none")
                try:
                    socket.create_connection(("192.0.2.1", 80), timeout=3).close()
                    print("direct connected")
                except OSError as e:
                    print("direct", e.errno)
                print("fast", time.monotonic() - t < 10)
                """)
            lines = out.splitlines()
            assert lines[:2] == ["metadata 403", "credentials none"], out
            assert gcs.refused == ["GET http://metadata.google.internal/computeMetadata/v1/"]
            # In the namespace there is no route at all (ENETUNREACH); without it (no CAP_SYS_ADMIN),
            # 192.0.2.1 (TEST-NET-1) is still no host to connect to.
            assert lines[2] == f"direct {errno.ENETUNREACH}" if gcs.isolated else lines[2] != "direct connected", (
                out, gcs.isolation_error)
            assert lines[3] == "fast True", out
            assert os.path.exists(f"/proc/{pid}")
            raise RuntimeError("a failing test")
    assert not os.path.exists(f"/proc/{pid}"), "fake-gcs-server still running (or a zombie) after stop()"
    assert not tmp.exists()
    for p in (port, proxy_port):
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{p}/storage/v1/b", timeout=2)

