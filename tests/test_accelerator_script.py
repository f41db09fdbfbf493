"""experiments/bench/accelerator.sh runs end to end with --dry-run (toy sizes, on CPU here)."""
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_accelerator_script_dry_run(tmp_path):
    out = subprocess.run(["bash", "experiments/bench/accelerator.sh", "--dry-run", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["dtype"], r["batch"]) for r in rows] == [("float32", 1), ("float32", 2), ("bfloat16", 1),
                                                        ("bfloat16", 2)]
    assert all(r["size"] == 32 and r["compile_s"] > 0 and r["img_per_s"] > 0 for r in rows)
    assert "ratio" in rows[0] and all("ratio" not in r for r in rows[1:])  # torch once: fp32, batch 1
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and "| MFU |" in table[0]
    assert "n/a (no peak for this device)" in table[2]  # CPU: no accelerator peak to divide by
