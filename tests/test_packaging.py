"""Packaging: setup.cfg's accelerator extras name jax extras that the installed jax declares;
the oneDNN extension is built where setup.py builds it."""
import configparser
import platform
import shutil
import subprocess
import sys
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


def test_the_onednn_extension_is_built_and_loads_on_linux_x86_64():
    """`pip install -e .` builds cyclejax/_onednn_conv*.so on Linux x86-64 with a C++ compiler
    (setup.py); the oneDNN tests skip without it, so here its absence fails."""
    from cyclejax import onednn
    if sys.platform != "linux" or platform.machine() != "x86_64" or shutil.which("g++") is None:
        assert onednn.available() or onednn.unavailable_reason()
        return
    assert onednn.available(), onednn.unavailable_reason()
    # The extension resolves libdnnl.so.3 from the onednn-cpu-gomp wheel, the runtime setup.cfg declares.
    assert onednn._runtime_library() is not None and onednn._runtime_library().name.startswith("libdnnl.so")
    linked = subprocess.run(["ldd", str(onednn._extension_path())], capture_output=True, text=True).stdout
    assert "libdnnl.so.3" in linked


def test_without_the_extension_auto_falls_back_and_onednn_names_the_reason(tmp_path):
    """A process where the extension cannot load: 'auto' takes the pure-JAX forms, 'onednn' says why."""
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'cyclejax._onednn_conv' else real(name, *a)\n"
        "from cyclejax import convolution\n"
        "assert convolution.resolve('auto', 'cpu') == 'auto'\n"
        "assert convolution.form('auto', 1, 256, 256, 'cpu') == 'xla'\n"
        "try:\n"
        "    convolution.resolve('onednn', 'cpu')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "conv_impl='onednn' cannot run: the oneDNN extension" in out.stdout and "is not built" in out.stdout
