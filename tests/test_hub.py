"""cyclejax.hub against a stand-in Hugging Face Hub on loopback (tests/hub_server.py): a bundle pushed
with its model card, pulled back by hf://OWNER/REPO[@REVISION] in the library and the commands with
the same pixels, the official generators from a Hub mirror, and one line for each way it can fail.

Nothing leaves 127.0.0.1: in this process a socket guard refuses any other address, and the
commands run with their proxies set to a closed loopback port (NO_PROXY lets loopback through)."""
import hashlib
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from PIL import Image

from cyclejax import bundle, checkpoints, downloads, embedded_score, evaluation, hub, pretrained, translation
from tests import hub_server
from tests.conftest import tiny_config
from tests.test_bundle import make_bundle
from tests.test_downloads import closed_port
from tests.test_pretrained import GENERATOR

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_cyclejaxTestToken0123456789"
REPORT = {"step": 3, "AtoB": {"model": 0.1234, "identity": 0.4492, "colour_transfer": 0.1450},
          "BtoA": {"model": 0.4397, "identity": 0.4492, "colour_transfer": 0.1659}}
BUNDLE_FILES = ["AtoB.jax_export", "AtoB.msgpack", "BtoA.jax_export", "BtoA.msgpack", "bundle.json"]


@flax.struct.dataclass
class _Generators:
    """The fields of a TrainState that `checkpoints.restore_generators` reads."""
    step: jax.Array
    params: dict
    batch_stats: dict
    ema: dict  # the generators' average (the tiny config keeps one): here their weights


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A workdir as a 3-step run of the tiny config leaves it (its checkpoint with the config,
    eval.json, a sample grid), written without training: make_bundle's generators."""
    path = tmp_path_factory.mktemp("run")
    b = make_bundle()
    generators = {"G_A": b.variables["AtoB"]["params"], "G_B": b.variables["BtoA"]["params"]}
    state = _Generators(step=jnp.asarray(3), batch_stats={}, params=generators, ema=generators)
    mngr = checkpoints.manager(path)
    checkpoints.save(mngr, state, tiny_config(max_steps=3, sample_every=3, eval_at_end=True))
    mngr.wait_until_finished()
    mngr.close()
    (path / "eval.json").write_text(json.dumps(REPORT))
    (path / "samples").mkdir()
    rng = np.random.default_rng(0)
    for step in (2, 3, 4):  # 4: a grid after the exported step, which the card must not show
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), np.uint8)).save(path / "samples" / f"step_{step:08d}.png")
    return path


@pytest.fixture(scope="module")
def hub_state():
    with hub_server.serve(TOKEN) as state:
        yield state


def _env(state_url: str, home: Path, **extra) -> dict:
    """The variables a user of a Hub at `state_url` sets, plus proxies that make any other address fail."""
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {"HF_ENDPOINT": state_url, "HF_HOME": str(home), "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead,
           "NO_PROXY": "127.0.0.1,localhost", "CYCLEJAX_CACHE": str(home / "cyclejax")}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _run(env: dict, *args, ok=True, cwd=ROOT, timeout=600):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and "proxy" not in k.lower()}
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env={**clean, **env, "PYTHONUNBUFFERED": "1"},
                         capture_output=True, text=True, timeout=timeout)
    assert (out.returncode == 0) == ok, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _error_line(out) -> str:
    """The command's one error line, checked to be alone (no traceback) and to exit with code 2."""
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def pushed(workdir, hub_state, tmp_path_factory):
    """`python -m cyclejax.export ... --push_to_hub=test-user/tiny`: the local bundle, the command's output
    and the commit it made. HF_HUB_DISABLE_XET=1: huggingface_hub would upload with xet (see hub_server)."""
    home = tmp_path_factory.mktemp("push")
    n = len(hub_state.requests)
    out = _run(_env(hub_state.url, home, HF_HUB_DISABLE_XET="1"), "cyclejax.export", f"--workdir={workdir}",
               f"--output={home / 'bundle'}", "--push_to_hub=test-user/tiny")
    return home / "bundle", out, hub_state.repos["test-user/tiny"].refs["main"], hub_state.requests[n:]


@pytest.fixture
def in_process(hub_state, tmp_path, monkeypatch):
    """This process as a user of the stand-in: the variables set and huggingface_hub's constants
    (read from them at its import) read again; sockets to anywhere but loopback refused."""
    import huggingface_hub
    import huggingface_hub.constants

    for k, v in _env(hub_state.url, tmp_path / "home", HF_HUB_DISABLE_XET="1").items():
        monkeypatch.setenv(k, v)
    importlib.reload(huggingface_hub.constants)
    huggingface_hub.close_session()  # its HTTP client is made again, with these proxies
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a connection to {address} left loopback")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield tmp_path / "home"
    monkeypatch.undo()
    importlib.reload(huggingface_hub.constants)
    huggingface_hub.close_session()


def _front_matter(card: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, card[:200]
    return yaml.safe_load(m.group(1))


def _assert_same_generators(a: bundle.Bundle, b: bundle.Bundle) -> None:
    """The same generators and config; a pushed bundle's source names its local paths by their last part."""
    public = {**b.config, "source": {k: Path(v).name if k == "workdir" else v for k, v in b.config["source"].items()}}
    assert a.directions == b.directions and a.config in (b.config, public)
    for d in a.directions:
        jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, a.variables[d]),
                               jax.tree_util.tree_map(np.asarray, b.variables[d]))


# --- push

@pytest.mark.slow
def test_export_pushes_the_bundle_its_card_and_the_sample_grid(pushed, hub_state, workdir):
    local, out, commit, requests = pushed
    assert f"pushed to {hub_state.url}/test-user/tiny (commit {commit})" in out.stdout
    files = hub_state.files("test-user/tiny")
    assert sorted(files) == sorted([".gitattributes", *BUNDLE_FILES, "README.md", "samples/step_00000003.png"])
    for name in BUNDLE_FILES:
        if name != "bundle.json":
            assert files[name] == (local / name).read_bytes(), name
    # bundle.json as published: the workdir's local path reduced to its name, the rest as it is.
    published, mine = json.loads(files["bundle.json"]), json.loads((local / "bundle.json").read_text())
    assert Path(mine["source"]["workdir"]).is_absolute() and str(workdir) not in files["bundle.json"].decode()
    assert published["source"].pop("workdir") == Path(mine["source"].pop("workdir")).name
    assert published == mine
    assert files["samples/step_00000003.png"] == (workdir / "samples" / "step_00000003.png").read_bytes()
    # Binary files went through LFS (the CDN, which saw no token), text files inline, as on the Hub.
    head = hub_state.repos["test-user/tiny"].commits[commit]
    assert {p for p, blob in head.items() if blob.lfs} == {*BUNDLE_FILES, "samples/step_00000003.png"} - {"bundle.json"}
    puts = [r for r in requests if r[:2] == ("cdn", "PUT")]
    assert len(puts) == 5 and not any(r[3] for r in puts)
    assert all(r[3] for r in requests if r[0] == "hub")

    card = files["README.md"].decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "cyclejax" and meta["pipeline_tag"] == "image-to-image"
    assert meta["tags"] == ["cyclegan", "image-to-image", "jax", "embedded"]
    assert "python -m cyclejax.translate --model=hf://test-user/tiny --input=photos/ --output=out/" in card
    assert "![samples](samples/step_00000003.png)" in card
    assert embedded_score.format_table(REPORT) in card and "AtoB          0.1234" in card
    config = json.loads(re.search(r"## Training config\n\n```json\n(.*?)\n```", card, re.S).group(1))
    assert config == json.loads(tiny_config(max_steps=3, sample_every=3, eval_at_end=True).to_json())
    assert ("Trained on `embedded` for 3 steps; the generators' weights are their average over the steps "
            "(exponential moving average).") in card


def test_model_card_of_a_converted_bundle_says_only_what_is_known():
    b = make_bundle(directions=("AtoB",))
    b.config["source"] = {"pretrained": "horse2zebra", "url": "http://example/horse2zebra.pth"}
    card = str(hub.model_card(b, "someone/h2z"))
    assert _front_matter(card)["tags"] == ["cyclegan", "image-to-image", "jax"]
    assert "horse → zebra (`AtoB`)." in card and "--direction=AtoB" in card
    for absent in ("## Samples", "## Evaluation", "## Training config", "Trained on"):
        assert absent not in card


def test_run_record_takes_the_exported_step(workdir):
    b = bundle.from_workdir(workdir)
    config, report, grid = hub.run_record(b)
    assert config["max_steps"] == 3 and report == REPORT and grid.name == "step_00000003.png"
    b.config["source"]["step"] = 2  # exported at step 2: eval.json scored step 3, the grid of step 2
    with pytest.raises(FileNotFoundError):
        checkpoints.saved_run_config(workdir, 2)
    config, report, grid = hub.run_record(b)
    assert config is None and report is None and grid.name == "step_00000002.png"


# --- pull

@pytest.mark.slow
def test_load_any_and_translate_give_the_local_bundle_and_its_pixels(pushed, hub_state, in_process, tmp_path,
                                                                    monkeypatch):
    import huggingface_hub.constants
    local, _, commit, _ = pushed
    want = bundle.load(local)
    n = len(hub_state.requests)
    _assert_same_generators(bundle.load_any("hf://test-user/tiny"), want)
    # Downloaded into huggingface_hub's cache under HF_HOME: bundle.json and the parameters only.
    snapshot = in_process / "hub" / "models--test-user--tiny" / "snapshots" / commit
    assert sorted(p.name for p in snapshot.iterdir()) == ["AtoB.msgpack", "BtoA.msgpack", "bundle.json"]
    cdn = [r for r in hub_state.requests[n:] if r[0] == "cdn"]
    assert len(cdn) == 2 and not any(r[3] for r in cdn)  # the LFS files, from the CDN, without the token
    n = len(hub_state.requests)
    bundle.load_any("hf://test-user/tiny")  # the same commit: one request finds it cached
    assert [r[1:3] for r in hub_state.requests[n:]] == [("GET", "/api/models/test-user/tiny/revision/main")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    importlib.reload(huggingface_hub.constants)
    _assert_same_generators(bundle.load_any("hf://test-user/tiny"), want)  # from the cache, no request
    assert len(hub_state.requests) == n + 1
    with pytest.raises(hub.HubError, match=r"^hf://test-user/elsewhere: HF_HUB_OFFLINE is set and huggingface_hub's "
                                           r"cache \(.*\) does not hold it; unset HF_HUB_OFFLINE to download it$"):
        bundle.load_any("hf://test-user/elsewhere")

    photo = tmp_path / "photos" / "horse.png"
    photo.parent.mkdir()
    image = np.random.default_rng(1).integers(0, 256, (37, 50, 3), np.uint8)
    Image.fromarray(image).save(photo)
    # A fresh cache, and xet left on: the server's answers keep huggingface_hub on plain HTTP.
    env = _env(hub_state.url, tmp_path / "cli")
    _run(env, "cyclejax.translate", "--model=hf://test-user/tiny", f"--input={photo.parent}",
         f"--output={tmp_path / 'out'}", "--direction=BtoA")
    expected = translation.ImageTranslator(want, "BtoA")(image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "horse.png")), expected)


def test_a_revision_pins_a_push(pushed, hub_state, in_process, tmp_path):
    """Two pushes to one repository: @<first commit> is the first bundle, the bare name the second; the
    second, of one generator, removed the other generator's files of the first."""
    local = pushed[0]
    first = hub.push(local, "test-user/pinned")
    one = make_bundle(directions=("AtoB",), ngf=8)
    bundle.save(one, tmp_path / "one", with_export=False)
    second = hub.push(tmp_path / "one", "hf://test-user/pinned", commit_message="one generator")
    assert first.oid != second.oid and hub_state.repos["test-user/pinned"].refs["main"] == second.oid
    assert set(hub_state.files("test-user/pinned", second.oid)) == {".gitattributes", "AtoB.msgpack", "README.md",
                                                                    "bundle.json"}
    _assert_same_generators(bundle.load_any(f"hf://test-user/pinned@{first.oid}"), bundle.load(local))
    n = len(hub_state.requests)
    bundle.load_any(f"hf://test-user/pinned@{first.oid}")  # a commit, once cached, needs no request
    assert len(hub_state.requests) == n
    _assert_same_generators(bundle.load_any("hf://test-user/pinned"), bundle.load(tmp_path / "one"))
    folder = hub.download(f"hf://test-user/pinned@{first.oid}", with_export=True)
    assert (folder / "BtoA.jax_export").read_bytes() == (local / "BtoA.jax_export").read_bytes()


@pytest.mark.slow
def test_evaluate_takes_a_hub_model_and_names_its_report_after_it(pushed, hub_state, tmp_path):
    local = pushed[0]
    out = _run(_env(hub_state.url, tmp_path / "home"), "cyclejax.evaluate", "--model=hf://test-user/tiny",
               "--dataset=embedded", cwd=tmp_path)
    report = json.loads((tmp_path / "eval_test-user--tiny_embedded.json").read_text())
    assert report["model"] == "hf://test-user/tiny"
    want = evaluation.embedded_report(bundle.load(local))
    assert {d: report[d] for d in ("AtoB", "BtoA")} == {d: want[d] for d in ("AtoB", "BtoA")}
    assert embedded_score.format_table(want) in out.stdout


# --- what can go wrong

@pytest.mark.parametrize("spec, message", [
    ("hf://tiny", r"^Invalid HF URI 'hf://tiny'\. Repository id must be 'namespace/name', got 'tiny'\. A Hub model is "
                  r"hf://OWNER/REPO or hf://OWNER/REPO@REVISION"),
    ("hf://test-user/tiny@", r"Empty revision after '@'"),
    ("hf://datasets/test-user/tiny", r"^hf://datasets/test-user/tiny is a dataset on the Hub; a cyclejax model is a "
                                     r"model repository"),
    ("hf://test-user/tiny/AtoB.msgpack", r"a bundle is a whole repository; drop '/AtoB\.msgpack'"),
])
def test_malformed_specs_are_named_before_any_request(spec, message, hub_state):
    n = len(hub_state.requests)
    with pytest.raises(hub.HubError, match=message):
        bundle.load_any(spec)
    assert len(hub_state.requests) == n


def test_missing_repo_revision_bundle_and_token_are_one_line_each(pushed, hub_state, in_process, monkeypatch):
    hub_state.add_repo("test-user/notes", {"README.md": b"# not a model\n"})
    url = hub_state.url
    with pytest.raises(hub.HubError, match=f"^hf://test-user/nope: there is no model repository test-user/nope on "
                                           f"{url}, or it is private and the token"):
        bundle.load_any("hf://test-user/nope")
    with pytest.raises(hub.HubError, match=r"^hf://test-user/tiny@v9: test-user/tiny has no revision 'v9'; give a "
                                           r"branch, tag or commit it has$"):
        bundle.load_any("hf://test-user/tiny@v9")
    with pytest.raises(hub.HubError, match=r"^hf://test-user/notes is not a cyclejax generator bundle: test-user/notes "
                                           r"has no bundle.json at main"):
        bundle.load_any("hf://test-user/notes")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")  # read at each call
    with pytest.raises(hub.HubError, match=f"^hf://test-user/tiny: {url} refused the token \\(HTTP 401: Invalid "
                                           f"credentials in Authorization header\\); set HF_TOKEN"):
        bundle.load_any("hf://test-user/tiny")
    with pytest.raises(hub.HubError, match=f"^pushing to test-user/tiny: {url} refused the token"):
        hub.push(pushed[0], "test-user/tiny")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(hub.HubError, match=r"^pushing to test-user/x needs a Hub token with write access"):
        hub.push_target("test-user/x")
    with pytest.raises(hub.HubError, match=r"^test-user/x@v1: a push goes to the repository's main branch"):
        hub.push_target("test-user/x@v1")


@pytest.mark.slow
def test_the_commands_print_one_line_and_an_unanswering_hub_one_within_its_deadline(hub_state, tmp_path):
    photo = tmp_path / "horse.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    args = [f"--input={photo}", f"--output={tmp_path / 'out'}"]
    line = _error_line(_run(_env(hub_state.url, tmp_path / "a"), "cyclejax.translate", "--model=hf://test-user/nope",
                            *args, ok=False))
    assert line.startswith("error: hf://test-user/nope: there is no model repository test-user/nope")
    line = _error_line(_run(_env(hub_state.url, tmp_path / "w", HF_TOKEN="hf_wrong"), "cyclejax.translate",
                            "--model=hf://test-user/tiny", *args, ok=False))
    assert line.startswith(f"error: hf://test-user/tiny: {hub_state.url} refused the token (HTTP 401: Invalid "
                           f"credentials in Authorization header); set HF_TOKEN to a valid token")
    line = _error_line(_run(_env(hub_state.url, tmp_path / "b"), "cyclejax.export", f"--workdir={tmp_path}",
                            f"--output={tmp_path / 'x'}", "--push_to_hub=nobody", ok=False))
    assert line.startswith("error: Invalid HF URI 'hf://nobody'. Repository id must be 'namespace/name'")

    with hub_server.silent_endpoint() as silent:
        env = _env(silent, tmp_path / "c", HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1")
        t = time.time()
        line = _error_line(_run(env, "cyclejax.translate", "--model=hf://test-user/tiny", *args, ok=False, timeout=120))
        seconds = time.time() - t
    assert line == (f"error: hf://test-user/tiny: could not reach {silent} (no answer within 1 s) and "
                    f"huggingface_hub's cache ({tmp_path / 'c' / 'hub'}) does not hold it; check the network and "
                    f"HF_ENDPOINT")
    assert seconds < 30  # the process's start (jax, TensorFlow) and a 1 s deadline; without one it would hang


def test_without_huggingface_hub_cyclejax_imports_and_hf_specs_say_how_to_install_it():
    code = ("import sys; sys.modules['huggingface_hub'] = None\n"
            "from cyclejax import bundle, evaluation, export, hub, pretrained, translation\n"
            "try:\n    bundle.load_any('hf://test-user/tiny')\nexcept hub.HubError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("hf://test-user/tiny needs huggingface_hub (") and \
        out.stdout.strip().endswith('pip install "cyclejax[hub]"')


# --- the official generators from a Hub mirror

def test_pretrained_generators_from_a_hub_repo_are_listed_fetched_and_checked(hub_state, in_process, monkeypatch,
                                                                                tmp_path):
    hub_state.add_repo("test-user/official", {"horse2zebra.pth": GENERATOR, "zebra2horse.pth": b"<html>oops</html>",
                                              "mirror/horse2zebra.pth": GENERATOR}, tag="v1")
    monkeypatch.setenv("CYCLEJAX_PRETRAINED_URL", "hf://test-user/official@v1")
    listing = _run({"CYCLEJAX_PRETRAINED_URL": "hf://test-user/official@v1"}, "cyclejax.pretrained").stdout
    lines = listing.splitlines()
    assert len(lines) == len(pretrained.NAMES)
    assert lines[4] == "horse2zebra" + " " * 13 + "hf://test-user/official@v1/horse2zebra.pth"
    assert [line.split() for line in lines] == [[n, f"hf://test-user/official@v1/{n}.pth"] for n in pretrained.NAMES]

    path = pretrained.generator_file("horse2zebra")
    assert path.read_bytes() == GENERATOR
    assert str(path).startswith(str(in_process / "hub" / "models--test-user--official"))
    assert downloads.recorded_sha256(path) == hashlib.sha256(GENERATOR).hexdigest()  # no record: computed
    with pytest.raises(hub.HubError, match=r"^hf://test-user/official@v1/zebra2horse\.pth is not the expected file "
                                           r"\(not a readable PyTorch state dict\)"):
        pretrained.generator_file("zebra2horse")
    with pytest.raises(hub.HubError, match=r"^hf://test-user/official@v1/apple2orange\.pth: test-user/official has no "
                                           r"file apple2orange\.pth at v1$"):
        pretrained.generator_file("apple2orange")
    monkeypatch.setenv("CYCLEJAX_PRETRAINED_URL", "hf://test-user/official@v1/mirror/")
    assert pretrained.generator_file("horse2zebra").read_bytes() == GENERATOR
