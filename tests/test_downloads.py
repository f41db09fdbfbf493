"""cyclejax.downloads against a web server on 127.0.0.1 started by the test (nothing else is reached)."""
import contextlib
import hashlib
import http.server
import logging
import socket
import threading
from functools import partial
from pathlib import Path

import pytest

from cyclejax import downloads
from cyclejax.downloads import DownloadError

BODY = bytes(range(256)) * 300  # 76.8 kB: several reads, not one


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves its folder; `/broken/<name>` promises more bytes than it sends, then hangs up."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/broken/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def loopback(folder: Path):
    """A web server for `folder` on 127.0.0.1 (a free port), in a thread; yields it with .url and .requests."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "weights.bin").write_bytes(BODY)
    with loopback(tmp_path / "www") as server:
        yield server


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_downloads_once_then_uses_the_cache(served, tmp_path):
    cache = tmp_path / "cache"
    path = downloads.cached_file(served.url + "weights.bin", "sub/w.bin", cache_dir=cache, progress=False)
    assert path == cache / "sub" / "w.bin" and path.read_bytes() == BODY
    digest = hashlib.sha256(BODY).hexdigest()
    assert (cache / "sub" / "w.bin.sha256").read_text().strip() == digest
    assert leftovers(cache) == ["sub", "w.bin", "w.bin.sha256"]
    served.shutdown()
    served.server_close()  # no network from here on
    again = downloads.cached_file(served.url + "weights.bin", "sub/w.bin", digest[:8], cache_dir=cache)
    assert again == path and again.read_bytes() == BODY
    assert served.requests == ["/weights.bin"]


def test_cache_folder_from_environment(served, tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEJAX_CACHE", str(tmp_path / "env-cache"))
    path = downloads.cached_file(served.url + "weights.bin", "w.bin", progress=True)
    assert path == tmp_path / "env-cache" / "w.bin" and path.read_bytes() == BODY


def test_damaged_file_is_fetched_again(served, tmp_path, caplog):
    cache = tmp_path / "cache"
    path = downloads.cached_file(served.url + "weights.bin", "w.bin", cache_dir=cache, progress=False)
    damaged = bytearray(BODY)
    damaged[5000] ^= 1
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        again = downloads.cached_file(served.url + "weights.bin", "w.bin", cache_dir=cache, progress=False)
    assert again.read_bytes() == BODY
    assert "w.bin is damaged" in caplog.text
    assert served.requests == ["/weights.bin"] * 2


def test_file_put_there_by_hand_is_used_and_recorded(served, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "w.bin").write_bytes(b"by hand")
    path = downloads.cached_file(served.url + "weights.bin", "w.bin", cache_dir=cache, progress=False)
    assert path.read_bytes() == b"by hand" and served.requests == []
    assert (cache / "w.bin.sha256").read_text().strip() == hashlib.sha256(b"by hand").hexdigest()


def test_wrong_sha256_prefix_leaves_nothing(served, tmp_path):
    cache = tmp_path / "cache"
    digest = hashlib.sha256(BODY).hexdigest()
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    with pytest.raises(DownloadError, match=f"should start with {wrong}, it is {digest}"):
        downloads.cached_file(served.url + "weights.bin", "w.bin", wrong, cache_dir=cache, progress=False)
    assert leftovers(cache) == []


def test_interrupted_download_leaves_nothing(served, tmp_path):
    cache = tmp_path / "cache"
    url = served.url + "broken/w.bin"
    with pytest.raises(DownloadError, match=rf"could not download {url} \(the connection closed after 1000 of "
                                            rf"{len(BODY)} bytes\).*by hand into {cache / 'w.bin'}"):
        downloads.cached_file(url, "w.bin", cache_dir=cache, progress=False)
    assert leftovers(cache) == []


def test_missing_file_on_the_server(served, tmp_path):
    url = served.url + "nothing.bin"
    with pytest.raises(DownloadError, match=rf"could not download {url} \(HTTP 404 "):
        downloads.cached_file(url, "w.bin", cache_dir=tmp_path / "cache", progress=False)
    assert leftovers(tmp_path / "cache") == []


def test_no_server_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    url = f"http://127.0.0.1:{closed_port()}/weights.bin"
    with pytest.raises(DownloadError, match=rf"could not download {url} \(.*refused.*\)\. Check the network"):
        downloads.cached_file(url, "w.bin", cache_dir=tmp_path / "cache", progress=False)
    assert leftovers(tmp_path / "cache") == []


def test_keyboard_interrupt_removes_the_temporary_file(served, tmp_path, monkeypatch):
    def interrupted(url, out, dest, progress):
        out.write(b"partial")
        assert leftovers(tmp_path / "cache") == [Path(out.name).name]  # the temporary file, until cleaned up
        raise KeyboardInterrupt

    monkeypatch.setattr(downloads, "_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        downloads.cached_file(served.url + "weights.bin", "w.bin", cache_dir=tmp_path / "cache", progress=False)
    assert leftovers(tmp_path / "cache") == []


def test_a_check_keeps_what_is_not_the_file_out_of_the_cache(served, tmp_path):
    """A server answering 200 with an error page where no sha256 is known: the content check
    refuses it and nothing is cached, so the next try downloads again."""
    cache = tmp_path / "cache"

    def needs_weights(path):
        if not path.read_bytes().startswith(BODY[:16]):
            raise ValueError("not the weights")

    (tmp_path / "www" / "page.bin").write_bytes(b"<html>captive portal</html>")
    with pytest.raises(DownloadError, match=r"page.bin is not the expected one \(not the weights\); nothing was "
                                            r"cached"):
        downloads.cached_file(served.url + "page.bin", "w.bin", cache_dir=cache, progress=False, check=needs_weights)
    assert leftovers(cache) == []
    path = downloads.cached_file(served.url + "weights.bin", "w.bin", cache_dir=cache, progress=False,
                                 check=needs_weights)
    assert path.read_bytes() == BODY


def test_pretrained_generators_are_read_before_they_are_cached(served, tmp_path, monkeypatch):
    from cyclejax import pretrained

    monkeypatch.setenv("CYCLEJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CYCLEJAX_PRETRAINED_URL", served.url)
    (tmp_path / "www" / "horse2zebra.pth").write_bytes(b"<html>not found, but 200</html>")
    with pytest.raises(DownloadError, match="horse2zebra.pth is not the expected one \\(not a readable PyTorch "
                                            "state dict\\); nothing was cached"):
        pretrained.generator_file("horse2zebra", progress=False)
    assert leftovers(tmp_path / "cache") == ["pretrained"]
