"""setup.cfg's accelerator extras name jax extras that the installed jax declares."""
import configparser
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_accelerator_extras_are_jax_extras():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    declared = set(metadata.metadata("jax").get_all("Provides-Extra"))
    wanted = {"cuda": "cuda13", "cuda12": "cuda12", "tpu": "tpu"}
    for ours, theirs in wanted.items():
        reqs = [r.strip() for r in extras[ours].splitlines() if r.strip() and not r.strip().startswith("#")]
        assert reqs == [f"jax[{theirs}]"], (ours, reqs)
        assert theirs in declared, (theirs, sorted(declared))
    # The extra pins no jax version of its own: it takes the jax that install_requires resolves.
    assert all(not re.search(r"[<>=]", extras[k]) for k in wanted)
