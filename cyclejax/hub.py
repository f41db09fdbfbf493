"""Generator bundles on the Hugging Face Hub: `hf://OWNER/REPO[@REVISION]` wherever a model is taken, and `push`.

    python -m cyclejax.export --workdir=runs/h2z --output=bundles/h2z --push_to_hub=OWNER/h2z
    python -m cyclejax.translate --model=hf://OWNER/h2z --input=photos/ --output=out/
    python -m cyclejax.translate --model=hf://OWNER/h2z@REVISION ...   # a commit sha, tag or branch

Everything goes through huggingface_hub, the optional extra `pip install "cyclejax[hub]"`: its
cache (HF_HOME, HF_HUB_CACHE), its token (HF_TOKEN or `hf auth login`), its endpoint
(HF_ENDPOINT) and its offline mode (HF_HUB_OFFLINE=1: the cache only). `download` fetches a
bundle's files at one revision (`snapshot_download`), `download_file` one file (the official
generators from a Hub mirror: CYCLEJAX_PRETRAINED_URL=hf://...), and `push` creates the
repository if needed and uploads a bundle, its model card (README.md, `model_card`) and the
run's latest sample grid in one commit.

Deadlines: huggingface_hub 2.x gives a file's metadata request HF_HUB_ETAG_TIMEOUT seconds (10)
and each read of a download HF_HUB_DOWNLOAD_TIMEOUT (10), but sends its other requests (the
revision and file listings, repository creation, uploads, commits) with no timeout. While a
function here runs, each of those gets HF_HUB_DOWNLOAD_TIMEOUT too (`_deadline`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from absl import logging
from etils import epath

import cyclejax
from cyclejax import checkpoints, embedded_score, storage
from cyclejax.errors import UserError

if TYPE_CHECKING:
    import huggingface_hub

    from cyclejax.bundle import Bundle

PREFIX = "hf://"
MIN_VERSION = "2.4"  # the API read and tested here (setup.cfg's `hub` extra)
INSTALL = 'pip install "cyclejax[hub]"'
TAGS = ("cyclegan", "image-to-image", "jax")
# Files of an older push that this one replaces or drops (a bundle of one direction after one of two).
REPLACED = ["*.msgpack", "*.jax_export", "samples/*"]


class HubError(UserError):
    """A Hub spec that is malformed, names nothing there, or cannot be fetched or pushed."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """hf://OWNER/REPO[@REVISION][/PATH], parsed."""
    repo_id: str
    revision: str | None = None
    path: str = ""

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}{rev}" + (f"/{self.path}" if self.path else "")


def is_spec(model: Any) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def library(what: str) -> huggingface_hub:
    """huggingface_hub, or a HubError saying how to install it (cyclejax imports without it)."""
    try:
        import huggingface_hub
        from packaging.version import Version
    except ImportError as e:
        raise HubError(f"{what} needs huggingface_hub ({e}): {INSTALL}") from e
    if Version(huggingface_hub.__version__) < Version(MIN_VERSION):
        raise HubError(f"{what} needs huggingface_hub>={MIN_VERSION}, this is {huggingface_hub.__version__}: "
                       f"{INSTALL} --upgrade")
    return huggingface_hub


def parse(spec: str, path: bool = False) -> Spec:
    """`spec` as a Spec, by huggingface_hub's own hf:// grammar; a PATH after the repository only where `path`."""
    hf = library(spec)
    from huggingface_hub.errors import HfUriError
    try:
        uri = hf.parse_hf_uri(spec)
    except HfUriError as e:
        form = "hf://OWNER/REPO[@REVISION]/PATH" if path else "hf://OWNER/REPO or hf://OWNER/REPO@REVISION"
        raise HubError(f"{' '.join(str(e).split())} A Hub model is {form} (REVISION: a branch, tag or commit)") from e
    if uri.type != "model":
        raise HubError(f"{spec} is a {uri.type} on the Hub; a cyclejax model is a model repository: hf://OWNER/REPO")
    if uri.path_in_repo and not path:
        raise HubError(f"{spec}: a bundle is a whole repository; drop '/{uri.path_in_repo}' "
                       f"(hf://OWNER/REPO or hf://OWNER/REPO@REVISION)")
    return Spec(uri.id, uri.revision, uri.path_in_repo)


def push_target(repo_id: str) -> str:
    """'OWNER/REPO' (or hf://OWNER/REPO) to push to, checked before anything is built: its form (no
    revision: pushes go to the main branch) and that there is a token to push with."""
    spec = parse(repo_id if is_spec(repo_id) else PREFIX + repo_id)
    if spec.revision:
        raise HubError(f"{repo_id}: a push goes to the repository's main branch; drop '@{spec.revision}'")
    if library(repo_id).get_token() is None:
        raise HubError(f"pushing to {spec.repo_id} needs a Hub token with write access: set HF_TOKEN or run "
                       f"`hf auth login`")
    return spec.repo_id


class _Deadline:
    """Gives the requests that huggingface_hub sends with no timeout HF_HUB_DOWNLOAD_TIMEOUT seconds
    (to connect, and for each read and write) while a function of this module runs.

    A request hook on huggingface_hub's shared HTTP client, inert outside those calls (the client
    serves every user of huggingface_hub in the process), counted rather than thread-local so that
    the threads huggingface_hub starts for uploads are covered too. If the client is replaced mid-call
    (huggingface_hub does so after a refused connection), the retries go without it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0

    def hook(self, request) -> None:
        timeout = request.extensions.get("timeout", {})
        if self._active and all(v is None for v in timeout.values()):
            from huggingface_hub import constants
            seconds = constants.HF_HUB_DOWNLOAD_TIMEOUT
            request.extensions = {**request.extensions, "timeout": dict.fromkeys(("connect", "read", "write", "pool"),
                                                                                  seconds)}

    @contextlib.contextmanager
    def __call__(self):
        import huggingface_hub
        hooks = huggingface_hub.get_session().event_hooks["request"]
        if self.hook not in hooks:
            hooks.append(self.hook)
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1


_deadline = _Deadline()


def _causes(e: BaseException) -> list[BaseException]:
    """`e` and the exceptions it was raised from."""
    chain = [e]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def _reason(e: BaseException) -> str:
    """Why the Hub could not be reached, in a few words."""
    import httpx2
    from huggingface_hub import constants
    for cause in _causes(e):
        if isinstance(cause, httpx2.TimeoutException):
            return f"no answer within {max(constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT)} s"
    text = " ".join(str(_causes(e)[-1]).split())
    return text[:200] or type(_causes(e)[-1]).__name__


def _refusal(e, repo_id: str) -> str:
    """What an HTTP error from the Hub means, and what to do."""
    from huggingface_hub import constants
    status = e.response.status_code
    said = e.server_message or e.response.headers.get("X-Error-Message") or e.response.reason_phrase
    said = " ".join(str(said).split())
    if status == 401:
        return (f"{constants.ENDPOINT} refused the token (HTTP 401: {said}); set HF_TOKEN to a valid token "
                f"(or run `hf auth login`), or unset it for a public repository")
    if status == 403:
        owner = repo_id.split("/")[0]
        return f"the token may not do this in {repo_id} (HTTP 403: {said}); use a token with write access to {owner}"
    return f"{constants.ENDPOINT} answered HTTP {status} ({said}); try again later"


@contextlib.contextmanager
def _errors(what: str, repo_id: str, revision: str | None = None):
    """huggingface_hub's exceptions while fetching or pushing `what` as one HubError line each."""
    import httpx2
    from huggingface_hub import constants, errors
    try:
        yield
    except errors.RevisionNotFoundError as e:
        raise HubError(f"{what}: {repo_id} has no revision {revision!r}; give a branch, tag or commit it has") from e
    except errors.GatedRepoError as e:
        raise HubError(f"{what}: {repo_id} is gated; accept its conditions on {constants.ENDPOINT}/{repo_id} and use "
                       f"a token of that account (HF_TOKEN or `hf auth login`)") from e
    except errors.RepositoryNotFoundError as e:
        raise HubError(f"{what}: there is no model repository {repo_id} on {constants.ENDPOINT}, or it is private and "
                       f"the token (HF_TOKEN or `hf auth login`) cannot read it; check the name") from e
    except errors.LocalEntryNotFoundError as e:  # no answer, or a refusal, and the cache lacks it
        refused = next((c for c in _causes(e) if isinstance(c, errors.HfHubHTTPError)), None)
        if refused is not None:
            raise HubError(f"{what}: {_refusal(refused, repo_id)}") from e
        if constants.is_offline_mode():
            raise HubError(f"{what}: HF_HUB_OFFLINE is set and huggingface_hub's cache ({constants.HF_HUB_CACHE}) "
                           f"does not hold it; unset HF_HUB_OFFLINE to download it") from e
        raise HubError(f"{what}: could not reach {constants.ENDPOINT} ({_reason(e)}) and huggingface_hub's cache "
                       f"({constants.HF_HUB_CACHE}) does not hold it; check the network and HF_ENDPOINT") from e
    except errors.HfHubHTTPError as e:
        raise HubError(f"{what}: {_refusal(e, repo_id)}") from e
    except errors.OfflineModeIsEnabled as e:
        raise HubError(f"{what}: HF_HUB_OFFLINE is set; unset it to reach {constants.ENDPOINT}") from e
    except httpx2.TransportError as e:
        raise HubError(f"{what}: could not reach {constants.ENDPOINT} ({_reason(e)}); check the network and "
                       f"HF_ENDPOINT") from e


def _snapshot(hf, spec: Spec, patterns: list[str]) -> Path:
    from huggingface_hub import constants
    with _deadline(), _errors(str(spec), spec.repo_id, spec.revision):
        return Path(hf.snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=patterns,
                                         etag_timeout=constants.HF_HUB_ETAG_TIMEOUT, library_name="cyclejax",
                                         library_version=cyclejax.__version__))


def download(spec: str, with_export: bool = False) -> Path:
    """The folder, in huggingface_hub's cache, of the bundle `spec` names (hf://OWNER/REPO[@REVISION]),
    downloaded unless cached: bundle.json and the parameters, which `bundle.load` reads, and with
    `with_export` the `.jax_export` artifacts too."""
    s = parse(spec)
    folder = _snapshot(library(spec), s, ["bundle.json", "*.msgpack"] + (["*.jax_export"] if with_export else []))
    if not (folder / "bundle.json").is_file():
        raise HubError(f"{spec} is not a cyclejax generator bundle: {s.repo_id} has no bundle.json "
                       f"at {s.revision or 'main'} (push one with python -m cyclejax.export --push_to_hub=OWNER/REPO)")
    return folder


def download_file(uri: str, check: Callable[[Path], None] | None = None) -> Path:
    """The local copy (huggingface_hub's cache) of the file hf://OWNER/REPO[@REVISION]/PATH, downloaded
    unless cached. `check(path)` raises if it is not the expected kind of file.

    Through `snapshot_download`, not `hf_hub_download`: its first request, the revision's info,
    fails within the deadline when the Hub does not answer, where `hf_hub_download` tries a failed
    metadata request again with a 60 s timeout, up to six times (huggingface_hub 2.4)."""
    s = parse(uri, path=True)
    if not s.path:
        raise HubError(f"{uri} names a repository, not a file: hf://OWNER/REPO[@REVISION]/PATH")
    path = _snapshot(library(uri), s, [s.path]) / s.path
    if not path.is_file():
        raise HubError(f"{uri}: {s.repo_id} has no file {s.path} at {s.revision or 'main'}")
    if check is not None:
        try:
            check(path)
        except Exception as e:  # noqa: BLE001 - whatever the reader raises, the file is refused
            raise HubError(f"{uri} is not the expected file ({e}); check the repository's contents") from e
    return path


def _dataset_tag(dataset: str) -> str:
    """'cycle_gan/horse2zebra' -> 'horse2zebra'; a folder -> its name (Hub tags hold no '/')."""
    return re.sub(r"[^\w.-]", "-", Path(str(dataset).rstrip("/")).name) or "dataset"


def model_card(b: Bundle, repo_id: str, sample: str | None = None, config: dict | None = None,
               report: dict | None = None) -> huggingface_hub.ModelCard:
    """README.md of a pushed bundle: the Hub's metadata (library, tags, the dataset) and a body saying
    what the generators are and how to use them, with the sample grid at `sample` (a path in the
    repository), the run's training `config` and its embedded-dataset `report` (eval.json) when known."""
    hf = library("a model card")
    source = b.config.get("source", {})
    dataset = source.get("dataset")
    tags = list(TAGS) + ([_dataset_tag(dataset)] if dataset else [])
    data = hf.ModelCardData(library_name="cyclejax", pipeline_tag="image-to-image", tags=tags)
    d = b.config.get("domains", {"A": "A", "B": "B"})
    ways = {"AtoB": f"{d['A']} → {d['B']} (`AtoB`)", "BtoA": f"{d['B']} → {d['A']} (`BtoA`)"}
    lines = [f"# {repo_id.split('/')[-1]}", "",
             f"CycleGAN generators made with cyclejax (JAX/Flax): {b.describe()}; "
             f"{' and '.join(ways[x] for x in b.directions)}."]
    if dataset:
        average = str(source.get("weights", "")).startswith("average")
        lines.append(f"Trained on `{dataset}` for {source.get('step')} steps"
                     + ("; the generators' weights are their average over the steps "
                        "(exponential moving average)." if average else "."))
    lines += ["", "## Use", "", "```bash", INSTALL,
              f"python -m cyclejax.translate --model=hf://{repo_id} --input=photos/ --output=out/ "
              f"--direction={b.directions[0]}", "```", "",
              f'From Python, `cyclejax.bundle.load_any("hf://{repo_id}")` is the bundle and `.jit_apply("AtoB")` '
              f"its generator (NHWC float images in [-1, 1]). `hf://{repo_id}@REVISION` pins a commit, tag or branch. "
              f"The `*.jax_export` files run with jax alone: `jax.export.deserialize(data).call(x)`, with height and "
              f"width multiples of {b.multiple}."]
    if sample:
        lines += ["", "## Samples", "", f"![samples]({sample})", "",
                  "Each row: real A, A → B, A reconstructed, real B, B → A, B reconstructed."]
    if report:
        lines += ["", "## Evaluation", "", "```text", embedded_score.format_table(report), "```"]
    if config:
        lines += ["", "## Training config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```"]
    return hf.ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _step_of(png: epath.Path) -> int | None:
    m = re.fullmatch(r"step_(\d+)\.png", png.name)
    return int(m.group(1)) if m else None


def run_record(b: Bundle) -> tuple[dict | None, dict | None, epath.Path | None]:
    """(training config, eval.json, sample grid) of the run a bundle was exported from, where its workdir
    still holds them: the config saved with the exported step's checkpoint, eval.json when it scored
    that step, and the latest grid of samples/ up to that step."""
    source = b.config.get("source", {})
    if "workdir" not in source or not storage.resolve(source["workdir"]).is_dir():  # converted, or handed over
        return None, None, None
    workdir, step = storage.resolve(source["workdir"]), source["step"]
    try:
        config = checkpoints.saved_run_config(workdir, step)
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; the card is written without it
        logging.warning("the model card has no training config: %s", e)
        config = None
    report = None
    if (workdir / "eval.json").is_file():
        try:
            report = json.loads((workdir / "eval.json").read_text())
        except json.JSONDecodeError as e:
            logging.warning("the model card has no evaluation: %s is not JSON (%s)", workdir / "eval.json", e)
        report = report if report and report.get("step") == step else None
    grids = {_step_of(p): p for p in (workdir / "samples").glob("step_*.png")} if (workdir / "samples").is_dir() else {}
    shown = [s for s in grids if s is not None and s <= step]
    return config, report, grids[max(shown)] if shown else None


def _stage(model, folder: Path) -> Bundle:
    """The bundle's files in `folder` (a saved bundle's copied, as they are), and the bundle."""
    from cyclejax import bundle as bundle_lib  # it imports this module

    if isinstance(model, bundle_lib.Bundle):
        bundle_lib.save(model, folder)
        return model
    path = None if is_spec(str(model)) else storage.resolve(model)
    if path is None or not (path / "bundle.json").is_file():
        b = bundle_lib.load_any(model)  # a workdir, a pretrained name, another hf:// model
        bundle_lib.save(b, folder)
        return b
    b = bundle_lib.load(path)
    for name in ["bundle.json"] + [f"{d}{ext}" for d in b.directions for ext in (".msgpack", ".jax_export")]:
        if (path / name).is_file():
            (folder / name).write_bytes((path / name).read_bytes())
    return b


def _without_local_paths(bundle_json: Path) -> None:
    """bundle.json as it is published: the local paths of its source (the workdir, the converted
    files, a folder dataset) reduced to their last part, which says what they were without
    showing the uploader's file system; gs:// paths and names are kept."""
    def public(value):
        if isinstance(value, dict):
            return {k: public(v) for k, v in value.items()}
        if isinstance(value, str) and Path(value).is_absolute():
            return Path(value).name
        return value

    config = json.loads(bundle_json.read_text())
    config["source"] = public(config.get("source", {}))
    bundle_json.write_text(json.dumps(config, indent=2))


def push(model: Bundle | storage.PathLike, repo_id: str, private: bool | None = None,
         commit_message: str | None = None) -> huggingface_hub.CommitInfo:
    """Uploads a bundle (a `Bundle`, a bundle folder, or anything `bundle.load_any` takes) to the model
    repository `repo_id` ('OWNER/REPO', created if missing, `private` then) in one commit, with a model
    card and the run's sample grid; files of an earlier push it does not have are removed. Returns
    huggingface_hub's CommitInfo (`.oid`, `.commit_url`); `hf://OWNER/REPO@<oid>` is this push."""
    repo_id = push_target(repo_id)
    hf = library(repo_id)
    with tempfile.TemporaryDirectory(prefix="cyclejax-push-") as tmp:
        folder = Path(tmp)
        b = _stage(model, folder)
        config, report, grid = run_record(b)
        _without_local_paths(folder / "bundle.json")
        sample = None
        if grid is not None:
            sample = f"samples/{grid.name}"
            (folder / "samples").mkdir()
            (folder / sample).write_bytes(grid.read_bytes())
        model_card(b, repo_id, sample, config, report).save(folder / "README.md")
        api = hf.HfApi(library_name="cyclejax", library_version=cyclejax.__version__)
        step = b.config.get("source", {}).get("step")
        message = commit_message or f"cyclejax bundle: {b.config['netG']}" + (f", step {step}" if step else "")
        with _deadline(), _errors(f"pushing to {repo_id}", repo_id):
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message,
                                     delete_patterns=REPLACED)
