"""From nothing to a translation by name: `translate --model=horse2zebra` downloads from a loopback
mirror, converts, caches; later uses need no network; `evaluate` fetches its Inception weights."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from cyclejax import bundle, downloads, embedded, networks, pretrained, torch_weights, translation
from tests.test_downloads import loopback

ROOT = Path(__file__).resolve().parents[1]


def _official_file(path: Path) -> None:
    """An official-layout horse2zebra.pth (ResNet-9, ngf 64) with random weights, in torch's legacy
    format as the released files are."""
    net = networks.define_G("resnet_9blocks")
    like = jax.eval_shape(lambda: net.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32), train=False))
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(lambda a: rng.normal(0, 0.02, a.shape).astype(np.float32), like)
    sd = torch_weights.variables_to_state_dict(variables, net, 3, 4)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path, _use_new_zipfile_serialization=False)


def _run(env, *args, ok=True):
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert (out.returncode == 0) == ok, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_translate_by_name_downloads_once_then_works_offline(tmp_path):
    www, cache = tmp_path / "www", tmp_path / "cache"
    www.mkdir()
    _official_file(www / "horse2zebra.pth")
    photo = tmp_path / "horse.png"
    Image.fromarray(embedded.load_split("testA")[0]).save(photo)
    env = dict(os.environ, CYCLEJAX_CACHE=str(cache), no_proxy="127.0.0.1,localhost")

    with loopback(www) as server:
        env["CYCLEJAX_PRETRAINED_URL"] = server.url
        _run(env, "cyclejax.translate", "--model=horse2zebra", f"--input={photo}", f"--output={tmp_path / 'a'}")
        assert server.requests == ["/horse2zebra.pth"]
    pth = cache / "pretrained" / "horse2zebra.pth"
    assert pth.read_bytes() == (www / "horse2zebra.pth").read_bytes()
    cached = list((cache / "bundles").iterdir())
    assert [p.name for p in cached] == [f"horse2zebra-{downloads.recorded_sha256(pth)[:16]}"]
    assert bundle.load(cached[0]).config["domains"] == {"A": "horse", "B": "zebra"}

    # The same pixels as converting the file by hand and translating in this process.
    by_hand = bundle.from_official({"AtoB": www / "horse2zebra.pth"})
    expected = translation.ImageTranslator(by_hand, "AtoB")(np.asarray(Image.open(photo)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "horse.png")), expected)

    # The server is gone: the cache serves, checked against the recorded sha256.
    _run(env, "cyclejax.translate", "--model=horse2zebra", f"--input={photo}", f"--output={tmp_path / 'b'}")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b" / "horse.png")), expected)

    # A damaged cached file is noticed; with no network that is one clear line.
    data = bytearray(pth.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pth.write_bytes(bytes(data))
    out = _run(env, "cyclejax.translate", "--model=horse2zebra", f"--input={photo}", f"--output={tmp_path / 'c'}",
               ok=False)
    assert out.returncode == 2 and "is damaged" in out.stderr
    assert "error: could not download " + env["CYCLEJAX_PRETRAINED_URL"] + "horse2zebra.pth" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_model_names_the_choices(tmp_path):
    with pytest.raises(bundle.BundleError, match="nor the name of a pretrained model .*horse2zebra"):
        bundle.load_any(tmp_path / "horse2zebr")
    assert "horse2zebra" in pretrained.NAMES


def test_evaluate_fetches_the_inception_weights_and_checks_them(tmp_path, monkeypatch):
    """With no --inception_weights, evaluate downloads pytorch-fid's file and refuses one whose sha256
    does not start with the prefix in its name."""
    from cyclejax import evaluation
    from tests.test_bundle import make_bundle

    www = tmp_path / "www"
    www.mkdir()
    (www / pretrained.INCEPTION_FILE).write_bytes(b"not the Inception weights")
    data = tmp_path / "data"
    for split in ("testA", "testB"):
        (data / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / split / "0.png")
    model = bundle.save(make_bundle(), tmp_path / "bundle", with_export=False)
    monkeypatch.setenv("CYCLEJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with loopback(www) as server:
        monkeypatch.setenv("CYCLEJAX_INCEPTION_URL", server.url + pretrained.INCEPTION_FILE)
        with pytest.raises(downloads.DownloadError, match="sha256 should start with 6726825d"):
            evaluation.evaluate(model, str(data))
        assert server.requests == [f"/{pretrained.INCEPTION_FILE}"]
    assert not (tmp_path / "cache" / pretrained.INCEPTION_FILE).exists()
