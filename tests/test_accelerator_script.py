"""experiments/bench/accelerator.sh runs end to end with --dry-run (toy sizes, on CPU here), in
an environment like the device machine's: TensorFlow and TFDS cannot be imported there."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _without_tensorflow(folder: Path) -> dict[str, str]:
    """An environment in which `import tensorflow` (and tensorflow_datasets) fails, as on the
    device machine's image, which has neither."""
    for name in ("tensorflow", "tensorflow_datasets"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the device image')\n")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable}


def test_the_benchmark_imports_no_tensorflow(tmp_path):
    """The step benchmark (the accelerator script's) must not need TensorFlow: the device image
    has none. Timing the input pipeline (--input) is what needs it."""
    out = subprocess.run([sys.executable, "-c", "import cyclejax.bench"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=_without_tensorflow(tmp_path / "no_tf"))
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_accelerator_script_dry_run_records_a_failed_run_and_the_others(tmp_path):
    """The whole script at its toy size (one run: each row costs a compilation). One failing
    configuration (out of memory on a GPU, say) leaves a 'failed' row naming its log, the other
    runs' rows and table lines, and a non-zero exit."""
    env = _without_tensorflow(tmp_path / "no_tf")
    # bfloat16 at batch 2 fails: a wrapper interpreter that refuses that one command.
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/bash\nif [[ "$*" == *"--batch=2 --dtype=bfloat16"* ]]; then echo boom >&2; exit 3; fi\n'
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    env["PYTHON"] = str(wrapper)
    out_dir = tmp_path / "out"
    out = subprocess.run(["bash", "experiments/bench/accelerator.sh", "--dry-run", str(out_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["dtype"], r["batch"], "failed" in r) for r in rows] == [
        ("float32", 1, False), ("float32", 2, False), ("bfloat16", 1, False), ("bfloat16", 2, True)]
    assert "boom" in Path(rows[3]["failed"]).read_text()
    assert all(r["size"] == 32 and r["compile_s"] > 0 and r["img_per_s"] > 0 for r in rows[:3])
    assert "ratio" in rows[0] and all("ratio" not in r for r in rows[1:])  # torch once: fp32, batch 1
    table = (out_dir / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and "| MFU |" in table[0]
    assert "n/a (no peak for this device)" in table[2]  # CPU: no accelerator peak to divide by
    assert f"failed: see {rows[3]['failed']}" in table[5]
    assert "jax" in (out_dir / "environment.txt").read_text()
