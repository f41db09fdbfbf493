"""cyclejax.pretrained: official names, downloads from a loopback mirror, the Inception checksum, the command."""
import hashlib
import os
import subprocess
import sys

import pytest

from cyclejax import pretrained
from cyclejax.downloads import DownloadError
from cyclejax.errors import UserError
from tests.test_downloads import loopback



def _state_dict_bytes() -> bytes:
    """A small PyTorch state dict in torch's legacy format, as the released files are (the
    download reads it before caching it)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"model.1.weight": torch.arange(6.0).reshape(2, 3)}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


GENERATOR = _state_dict_bytes()
INCEPTION = b"not really an Inception network"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback server for a folder with horse2zebra.pth and the Inception file; the cache in tmp_path."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "horse2zebra.pth").write_bytes(GENERATOR)
    (www / pretrained.INCEPTION_FILE).write_bytes(INCEPTION)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("CYCLEJAX_CACHE", str(tmp_path / "cache"))
    with loopback(www) as server:
        monkeypatch.setenv("CYCLEJAX_PRETRAINED_URL", server.url.rstrip("/"))  # no trailing slash: added
        monkeypatch.setenv("CYCLEJAX_INCEPTION_URL", server.url + pretrained.INCEPTION_FILE)
        yield server


def test_names_follow_the_official_script():
    assert len(pretrained.NAMES) == 18 and len(set(pretrained.NAMES)) == 18
    assert pretrained.NAMES[:6] == ("apple2orange", "orange2apple", "summer2winter_yosemite",
                                    "winter2summer_yosemite", "horse2zebra", "zebra2horse")
    assert pretrained.NAMES[-1] == "iphone2dslr_flower"


def test_base_url(monkeypatch):
    monkeypatch.delenv("CYCLEJAX_PRETRAINED_URL", raising=False)
    assert pretrained.base_url() == "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/"
    monkeypatch.setenv("CYCLEJAX_PRETRAINED_URL", "https://mirror.example/cyclegan/")
    assert pretrained.base_url() == "https://mirror.example/cyclegan/"


def test_generator_is_downloaded_once(mirror, tmp_path):
    path = pretrained.generator_file("horse2zebra", progress=False)
    assert path == tmp_path / "cache" / "pretrained" / "horse2zebra.pth"
    assert path.read_bytes() == GENERATOR
    assert pretrained.generator_file("horse2zebra", progress=False) == path
    assert mirror.requests == ["/horse2zebra.pth"]


def test_unknown_name_suggests_the_closest(mirror):
    with pytest.raises(UserError, match=r"no pretrained generator 'horse2zebr'; did you mean 'horse2zebra'\? "
                                        r"the names are: apple2orange, orange2apple, .*iphone2dslr_flower$"):
        pretrained.generator_file("horse2zebr")
    assert mirror.requests == []


def test_inception_file_with_a_wrong_checksum_is_refused(mirror, tmp_path):
    assert not hashlib.sha256(INCEPTION).hexdigest().startswith(pretrained.INCEPTION_SHA256_PREFIX)
    with pytest.raises(DownloadError, match="sha256 should start with 6726825d"):
        pretrained.inception_file(progress=False)
    assert not (tmp_path / "cache" / pretrained.INCEPTION_FILE).exists()


def test_inception_file_with_the_expected_checksum(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "INCEPTION_SHA256_PREFIX", hashlib.sha256(INCEPTION).hexdigest()[:8])
    path = pretrained.inception_file(progress=False)
    assert path == tmp_path / "cache" / pretrained.INCEPTION_FILE and path.read_bytes() == INCEPTION


def test_inception_url(monkeypatch):
    monkeypatch.delenv("CYCLEJAX_INCEPTION_URL", raising=False)
    assert pretrained.inception_url() == ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                                          "pt_inception-2015-12-05-6726825d.pth")


def test_command_lists_the_names_and_where_each_comes_from():
    env = {k: v for k, v in os.environ.items() if k != "CYCLEJAX_PRETRAINED_URL"}
    done = subprocess.run([sys.executable, "-m", "cyclejax.pretrained"], capture_output=True, text=True, check=True,
                          env=env)
    lines = done.stdout.splitlines()
    assert [line.split() for line in lines] == [[n, f"{pretrained.OFFICIAL_URL}{n}.pth"] for n in pretrained.NAMES]
    assert lines[4] == "horse2zebra" + " " * 13 + "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/horse2zebra.pth"
    bad = subprocess.run([sys.executable, "-m", "cyclejax.pretrained", "extra"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: python -m cyclejax.pretrained takes no arguments")
