"""The Colab notebooks run top to bottom here, with a short setting, and are stored without outputs."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "experiments" / "notebooks"


@pytest.mark.parametrize("name", ["quickstart.ipynb", "pretrained.ipynb"])
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "colab.research.google.com" in nb.cells[0].source


@pytest.mark.slow
@pytest.mark.parametrize("name,env", [
    ("quickstart.ipynb", {"CYCLEJAX_NOTEBOOK_STEPS": "4"}),
    ("pretrained.ipynb", {"CYCLEJAX_NOTEBOOK_OFFLINE": "1"}),
])
def test_notebook_runs_top_to_bottom(name, env, tmp_path, monkeypatch):
    for k, v in {**env, "CYCLEJAX_NOTEBOOK_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    for k in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        monkeypatch.delenv(k, raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= (4 if name == "quickstart.ipynb" else 1)  # curves, grid, input, output
    # Only cyclejax's own lines: no TensorFlow start-up lines, no Orbax INFO lines.
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "oneDNN custom operations" not in text and "cpu_feature_guard" not in text and "checkpoint_manager.py" not in text, text[-3000:]
    made = tmp_path / ("bundle" if name == "quickstart.ipynb" else "cache/bundles")
    assert made.is_dir() and any(made.iterdir())
