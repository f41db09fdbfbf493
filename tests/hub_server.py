"""A stand-in Hugging Face Hub on loopback: the endpoints huggingface_hub 2.4 calls to download
(`snapshot_download`, `hf_hub_download`) and to push (`create_repo`, `upload_folder`) a model repo.

`serve(token)` (a context manager) starts it on 127.0.0.1 at a free port; HF_ENDPOINT=`hub.url`.
It answers as the real Hub does:

    GET  /api/models/{repo}[/revision/{rev}]      the revision's commit sha and files
    GET  /api/models/{repo}/tree/{rev}[/{path}]   files (and folders), with the sha256 of LFS files
    HEAD|GET /{repo}/resolve/{rev}/{path}         a regular file: 200 with ETag (git blob sha1) and
                                                  X-Repo-Commit; an LFS file: 302 to the CDN with
                                                  X-Linked-Etag (its sha256) and X-Linked-Size
    POST /api/repos/create                        409 if it exists; a new repo has an initial commit
                                                  holding .gitattributes
    POST /api/validate-yaml                       README.md's metadata must be a YAML mapping
    POST /api/models/{repo}/preupload/{rev}       'lfs' for binary files (a NUL byte or no UTF-8 in
                                                  the first 512 bytes), files of 10 MB or more and the
                                                  LFS patterns of .gitattributes; 'regular' otherwise
    POST /{repo}.git/info/lfs/objects/batch       the basic transfer: a signed PUT URL on the CDN, and
                                                  a verify URL; no actions for objects it already has
    POST /{repo}.git/info/lfs/objects/verify
    POST /api/models/{repo}/commit/{rev}          NDJSON: header, file (base64), lfsFile (uploaded and
                                                  verified before), deletedFile

and a CDN (another port, so another origin: huggingface_hub sends it no token) that takes the
signed PUTs and serves LFS objects at signed URLs. Errors carry the real Hub's X-Error-Code
(RepoNotFound, RevisionNotFound, EntryNotFound) and X-Error-Message; a token other than `token`
is refused with 401 "Invalid credentials in Authorization header", even for public repos.

Xet: the real Hub offers xet storage (X-Xet-Hash and a xet-auth link on resolve, xetHash in
listings); this one never does, so huggingface_hub downloads over plain HTTP. For uploads
huggingface_hub 2.4 picks xet on the client alone, whenever hf_xet is installed (it is one of its
dependencies): pushes to this server need HF_HUB_DISABLE_XET=1, which takes the LFS path above.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import hashlib
import hmac
import http.server
import json
import re
import secrets
import socket
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "test-user"
GITATTRIBUTES = b"*.msgpack filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n"
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


def git_oid(data: bytes) -> str:
    """The git blob sha1, which the Hub reports as a file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclasses.dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, len(self.data))

    @property
    def oid(self) -> str:
        return git_oid(self.pointer if self.lfs else self.data)


@dataclasses.dataclass
class Repo:
    private: bool = False
    commits: dict = dataclasses.field(default_factory=dict)  # oid -> {path: Blob}
    refs: dict = dataclasses.field(default_factory=dict)  # branch or tag -> oid

    def resolve(self, rev: str) -> str | None:
        return self.refs.get(rev) or (rev if rev in self.commits else None)

    def commit(self, files: dict, title: str, branch: str = "main") -> str:
        parent = self.refs.get(branch, "")
        listing = "".join(f"{p} {b.oid}\n" for p, b in sorted(files.items()))
        oid = hashlib.sha1(f"{parent}\n{title}\n{time.time_ns()}\n{listing}".encode()).hexdigest()
        self.commits[oid] = dict(files)
        self.refs[branch] = oid
        return oid


class HubState:
    """The repositories and LFS objects, shared by the Hub's and the CDN's handlers; `requests` logs
    (server, method, path, whether a token came) of every request."""

    def __init__(self, token: str):
        self.token = token
        self.secret = secrets.token_bytes(16)
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content, once PUT to the CDN
        self.requests: list[tuple[str, str, str, bool]] = []
        self.lock = threading.Lock()
        self.url = self.cdn_url = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False, tag: str | None = None) -> str:
        """A repository holding `files` in one commit after the initial one (for downloads by hand)."""
        repo = self.repos.setdefault(repo_id, Repo(private=private))
        if not repo.commits:
            repo.commit({".gitattributes": Blob(GITATTRIBUTES, False)}, "initial commit")
        head = dict(repo.commits[repo.refs["main"]])
        head.update({p: Blob(d, self.is_lfs(p, d[:512], len(d), head)) for p, d in files.items()})
        self.lfs.update({b.sha256: b.data for b in head.values() if b.lfs})
        oid = repo.commit(head, "add files")
        if tag:
            repo.refs[tag] = oid
        return oid

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return {p: b.data for p, b in repo.commits[repo.resolve(rev)].items()}

    def sign(self, what: str) -> str:
        return hmac.new(self.secret, what.encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def is_lfs(path: str, sample: bytes, size: int, files: dict) -> bool:
        """The Hub's rule: LFS for a binary sample, a large file, or a path .gitattributes marks."""
        patterns = [line.split()[0] for line in files.get(".gitattributes", Blob(b"", False)).data.decode().splitlines()
                    if "filter=lfs" in line]
        try:
            sample.decode("utf-8")
            binary = b"\0" in sample
        except UnicodeDecodeError as e:
            binary = e.start < len(sample) - 3  # not a character cut at the end of the sample
        return binary or size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(path, p) for p in patterns)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects
    timeout = 10  # idle keep-alive connections close

    def log_message(self, *args):
        pass

    # --- plumbing

    @property
    def state(self) -> HubState:
        return self.server.state

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, content_type="application/json"):
        self._send(status, json.dumps(obj).encode(), headers, content_type)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        h = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json(status, {"error": message}, h)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None

    def _authorized(self) -> bool | None:
        """True for the right token, None for none; a wrong token has been answered with 401 (False)."""
        token = self._token()
        if token is None:
            return None
        if token != self.state.token:
            self._error(401, "Invalid credentials in Authorization header")
            return False
        return True

    def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
        """The repository a request may see (or write), or None once an error is answered."""
        auth = self._authorized()
        if auth is False:
            return None
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not auth):
            # The Hub answers 401 to an anonymous request for a missing or private repo, 404 otherwise.
            self._error(404 if auth else 401, "Repository not found", "RepoNotFound")
            return None
        if write and (not auth or repo_id.split("/")[0] != USER):
            self._error(403 if auth else 401, f"You don't have the rights to write to {repo_id}")
            return None
        return repo

    def _revision(self, repo: Repo, rev: str) -> str | None:
        oid = repo.resolve(unquote(rev))
        if oid is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
        return oid

    def _dispatch(self, routes):
        path = urlsplit(self.path).path
        with self.state.lock:
            self.state.requests.append((self.server.role, self.command, path, self._token() is not None))
        for method, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if m and method == self.command:
                return fn(self, **m.groupdict())
        self._error(404, f"no route for {self.command} {path}")

    def do_GET(self):
        self._dispatch(self.server.routes)

    do_HEAD = do_POST = do_PUT = do_GET


class _Hub(_Handler):
    """The Hub's API and file routes."""

    def repo_info(self, repo, rev="main"):
        r = self._repo(repo)
        oid = r and self._revision(r, rev)
        if oid:
            files = r.commits[oid]
            self._json(200, {"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
                             "author": repo.split("/")[0], "sha": oid, "private": r.private, "disabled": False,
                             "gated": False, "tags": [], "siblings": [{"rfilename": p} for p in sorted(files)]})

    def tree(self, repo, rev, path=None):
        r = self._repo(repo)
        oid = r and self._revision(r, rev)
        if not oid:
            return
        recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() == "true"
        prefix = unquote(path or "").strip("/")
        prefix = prefix + "/" if prefix else ""
        entries, folders = [], set()
        for p, b in sorted(r.commits[oid].items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):].split("/")
            for i in range(1, len(rest) if recursive else min(len(rest), 2)):
                folders.add(prefix + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                entry = {"type": "file", "oid": b.oid, "size": len(b.data), "path": p}
                if b.lfs:
                    entry["lfs"] = {"oid": b.sha256, "size": len(b.data), "pointerSize": len(b.pointer)}
                entries.append(entry)
        entries += [{"type": "directory", "oid": git_oid(f.encode()), "size": 0, "path": f} for f in sorted(folders)]
        self._json(200, entries)

    def resolve(self, repo, rev, path):
        r = self._repo(repo)
        oid = r and self._revision(r, rev)
        if not oid:
            return
        blob = r.commits[oid].get(unquote(path))
        if blob is None:
            return self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        if blob.lfs:
            location = f"{self.state.cdn_url}/lfs/{blob.sha256}?sig={self.state.sign('get ' + blob.sha256)}"
            body = f"Found. Redirecting to {location}".encode()
            return self._send(302, body, {"Location": location, "X-Repo-Commit": oid, "ETag": f'"{blob.oid}"',
                                          "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": len(blob.data)},
                              "text/plain")
        self._send(200, blob.data, {"X-Repo-Commit": oid, "ETag": f'"{blob.oid}"', "Accept-Ranges": "bytes"},
                   "application/octet-stream")

    def create(self):
        auth = self._authorized()
        if auth is False:
            return
        if not auth:
            return self._error(401, "Invalid username or password.")
        req = json.loads(self._body())
        owner = req.get("organization") or USER
        if req.get("type", "model") != "model":
            return self._error(400, "this stand-in serves model repos only")
        if owner != USER:
            return self._error(403, f"You don't have the rights to create a model under the namespace \"{owner}\"")
        repo_id = f"{owner}/{req['name']}"
        url = f"{self.state.url}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url},
                                  {"X-Error-Message": "You already created this model repo"})
            private = req.get("visibility") == "private" or bool(req.get("private"))
            repo = self.state.repos[repo_id] = Repo(private=private)
            repo.commit({".gitattributes": Blob(GITATTRIBUTES, False)}, "initial commit")
        self._json(200, {"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def validate_yaml(self):
        if self._authorized() is False:
            return
        content = json.loads(self._body())["content"]
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        meta = yaml.safe_load(m.group(1)) if m else {}
        if not isinstance(meta, dict):
            return self._json(400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def preupload(self, repo, rev):
        r = self._repo(repo, write=True)
        oid = r and self._revision(r, rev)
        if not oid:
            return
        head = r.commits[oid]
        out = []
        for f in json.loads(self._body())["files"]:
            lfs = self.state.is_lfs(f["path"], base64.b64decode(f["sample"]), f["size"], head)
            old = head.get(f["path"])
            remote = None if old is None else (old.sha256 if old.lfs else old.oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote})
        self._json(200, {"files": out, "commitOid": oid})

    def lfs_batch(self, repo):
        r = self._repo(repo, write=True)
        if r is None:
            return
        req = json.loads(self._body())
        objects = []
        for o in req["objects"]:
            obj = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.state.lfs:
                sig = self.state.sign("put " + o["oid"])
                put = f"{self.state.cdn_url}/upload/{o['oid']}?size={o['size']}&sig={sig}"
                obj["actions"] = {"upload": {"href": put, "expires_in": 900},
                                  "verify": {"href": f"{self.state.url}/{repo}.git/info/lfs/objects/verify"}}
            objects.append(obj)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def lfs_verify(self, repo):
        if self._repo(repo, write=True) is None:
            return
        req = json.loads(self._body())
        data = self.state.lfs.get(req["oid"])
        if data is None or len(data) != req["size"]:
            return self._error(404, f"object {req['oid']} of size {req['size']} was not uploaded")
        self._json(200, {"message": "ok"})

    def commit(self, repo, rev):
        r = self._repo(repo, write=True)
        oid = r and self._revision(r, rev)
        if not oid:
            return
        branch = unquote(rev)
        if branch not in r.refs:
            return self._error(400, f"can only commit to a branch, not {branch}")
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return self._error(400, "the first line must be the header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, oid):
            return self._error(412, f"parent commit {header['parentCommit']} is not the head {oid}")
        files = dict(r.commits[oid])
        for op in lines[1:]:
            key, v = op["key"], op["value"]
            if key == "file":
                data = base64.b64decode(v["content"])
                files[v["path"]] = Blob(data, False)
            elif key == "lfsFile":
                data = self.state.lfs.get(v["oid"])
                if data is None:
                    return self._error(422, f"LFS object {v['oid']} of {v['path']} was never uploaded")
                files[v["path"]] = Blob(data, True)
            elif key == "deletedFile":
                if v["path"] not in files:
                    return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[v["path"]]
            elif key == "deletedFolder":
                files = {p: b for p, b in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
            else:
                return self._error(400, f"unknown operation {key}")
        with self.state.lock:
            new = r.commit(files, header["summary"], branch)
        self._json(200, {"success": True, "commitOid": new, "commitUrl": f"{self.state.url}/{repo}/commit/{new}",
                         "hookOutput": "", "pullRequestUrl": None})


_Hub.routes = [
    ("GET", rf"/api/models/{REPO}", _Hub.repo_info),
    ("GET", rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", _Hub.repo_info),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Hub.tree),
    ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Hub.resolve),
    ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Hub.resolve),
    ("POST", r"/api/repos/create", _Hub.create),
    ("POST", r"/api/validate-yaml", _Hub.validate_yaml),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", _Hub.preupload),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", _Hub.lfs_batch),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", _Hub.lfs_verify),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", _Hub.commit),
]


class _Cdn(_Handler):
    """Signed URLs only: no token is sent here, none is needed."""

    def _signed(self, what: str) -> bool:
        sig = parse_qs(urlsplit(self.path).query).get("sig", [""])[0]
        if not hmac.compare_digest(sig, self.state.sign(what)):
            self._error(403, "Request has expired or the signature does not match")
            return False
        return True

    def get(self, sha):
        if self._signed("get " + sha):
            self._send(200, self.state.lfs[sha], {"ETag": f'"{sha}"'}, "application/octet-stream")

    def put(self, sha):
        if not self._signed("put " + sha):
            return
        data = self._body()
        size = int(parse_qs(urlsplit(self.path).query)["size"][0])
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            return self._error(400, "the body is not the announced object")
        with self.state.lock:
            self.state.lfs[sha] = data
        self._send(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})


_Cdn.routes = [("GET", r"/lfs/(?P<sha>[0-9a-f]{64})", _Cdn.get), ("PUT", r"/upload/(?P<sha>[0-9a-f]{64})", _Cdn.put)]


def _start(handler, state: HubState, role: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.state, server.role, server.routes = state, role, handler.routes
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextlib.contextmanager
def serve(token: str):
    """The stand-in Hub and its CDN on loopback; yields the HubState (`.url` for HF_ENDPOINT)."""
    state = HubState(token)
    hub, cdn = _start(_Hub, state, "hub"), _start(_Cdn, state, "cdn")
    state.url = f"http://127.0.0.1:{hub.server_address[1]}"
    state.cdn_url = f"http://127.0.0.1:{cdn.server_address[1]}"
    try:
        yield state
    finally:
        for server in (hub, cdn):
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def silent_endpoint():
    """A loopback port that takes connections and never answers (a Hub that hangs); yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # the kernel completes the handshakes; nothing reads or writes
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
