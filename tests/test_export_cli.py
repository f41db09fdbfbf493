"""The evaluation workflow through the real command lines: train -> export -> translate -> evaluate,
and convert -> translate."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from cyclejax import bundle, checkpoints, embedded_score, training
from cyclejax import model as model_lib
from tests import torch_reference as ref
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, ok=True):
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if ok:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _images(folder, sizes, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    result = training.train_and_evaluate(tiny_config(max_steps=3, eval_at_end=True), workdir)
    return workdir, result


@pytest.mark.slow
def test_train_export_translate_evaluate(trained, tmp_path):
    workdir, result = trained
    _run("cyclejax.export", f"--workdir={workdir}", f"--output={tmp_path / 'bundle'}")
    b = bundle.load(tmp_path / "bundle")
    assert b.directions == ("AtoB", "BtoA") and b.config["source"]["step"] == 3 and b.config["ngf"] == 4
    assert (tmp_path / "bundle" / "AtoB.jax_export").stat().st_size > 0
    # The run kept the generators' average (the quick-start's ema_decay): the bundle holds it, not the last weights.
    _, last, _, _ = checkpoints.restore_generators(workdir, average=False)
    state = checkpoints.restore_generators(workdir)[1]
    assert b.config["source"]["weights"] == "average (ema_decay 0.999)"
    for d, g in (("AtoB", "G_A"), ("BtoA", "G_B")):
        got = jax.tree_util.tree_leaves(b.variables[d]["params"])
        assert all(np.array_equal(x, y) for x, y in zip(got, jax.tree_util.tree_leaves(state[g])))
        assert not all(np.array_equal(x, y) for x, y in zip(got, jax.tree_util.tree_leaves(last[g])))

    src = _images(tmp_path / "photos", [(50, 70), (33, 33)], 0)
    (src / "readme.txt").write_text("skip me")
    out = _run("cyclejax.translate", f"--model={tmp_path / 'bundle'}", f"--input={src}",
               f"--output={tmp_path / 'out'}", "--direction=BtoA")
    assert "translated 2 images" in out.stdout and "readme.txt" in out.stderr
    assert Image.open(tmp_path / "out" / "00.png").size == (70, 50)
    assert "inputs/01.png" in (tmp_path / "out" / "index.html").read_text()

    # On the embedded data the report is the train command's eval.json, number for number.
    _run("cyclejax.evaluate", f"--model={tmp_path / 'bundle'}", "--dataset=embedded",
         f"--output={tmp_path / 'embedded.json'}")
    report = json.loads((tmp_path / "embedded.json").read_text())
    for d in ("AtoB", "BtoA"):
        assert report[d] == pytest.approx(result["eval"][d], abs=2e-5)
    # ... and that is the average's score: the last weights score otherwise.
    to_B = model_lib.batch_translator(bundle.load(tmp_path / "bundle").generator("AtoB"), last["G_A"], {})
    to_A = model_lib.batch_translator(bundle.load(tmp_path / "bundle").generator("BtoA"), last["G_B"], {})
    last_report = embedded_score.score(to_B, to_A, step=3)
    assert max(abs(last_report[d]["model"] - result["eval"][d]["model"]) for d in ("AtoB", "BtoA")) > 1e-4

    # FID/KID on a folder dataset, from the workdir directly, with a random extractor.
    data = tmp_path / "data"
    _images(data / "testA", [(40, 40)] * 3, 1)
    _images(data / "testB", [(48, 36)] * 4, 2)
    out = _run("cyclejax.evaluate", f"--model={workdir}", f"--dataset={data}", "--inception_weights=random")
    fid_report = json.loads((workdir / "eval_data.json").read_text())
    assert fid_report["AtoB"]["n_translated"] == 3 and fid_report["AtoB"]["n_real"] == 4
    assert fid_report["BtoA"]["n_translated"] == 4 and fid_report["BtoA"]["n_real"] == 3
    assert np.isfinite(fid_report["AtoB"]["fid"]) and fid_report["AtoB"]["fid"] > 0
    assert "FID" in out.stdout and "bicubic" in out.stdout

    bad = _run("cyclejax.evaluate", f"--model={workdir}", f"--dataset={data}", "--inception_weights=random",
               "--max_images=1", ok=False)
    assert bad.returncode == 2 and "testA gives 1 image(s): FID and KID compare distributions" in bad.stderr
    bad = _run("cyclejax.evaluate", f"--model={workdir}", f"--dataset={data}", "--max_images=-1", ok=False)
    assert bad.returncode == 2 and "--max_images=-1 must be 0 (all) or more" in bad.stderr
    (tmp_path / "afile").write_text("x")
    bad = _run("cyclejax.evaluate", f"--model={workdir}", f"--dataset={data}", "--inception_weights=random",
               f"--output={tmp_path / 'afile' / 'eval.json'}", ok=False)
    assert bad.returncode == 2 and "afile/eval.json cannot be written" in bad.stderr and '"fid"' in bad.stdout
    bad = _run("cyclejax.translate", f"--model={tmp_path / 'bundle'}", f"--input={src}", f"--output={src}", ok=False)
    assert bad.returncode == 2 and "holds the input" in bad.stderr and "Traceback" not in bad.stderr

    bad = _run("cyclejax.evaluate", f"--model={tmp_path / 'photos'}", "--dataset=embedded", ok=False)
    assert bad.returncode == 2 and "neither a bundle" in bad.stderr
    bad = _run("cyclejax.evaluate", f"--model={workdir}", f"--dataset={data}",
               f"--inception_weights={tmp_path / 'none.pth'}", ok=False)
    assert bad.returncode == 2 and "leave out --inception_weights to download them once" in bad.stderr


@pytest.mark.slow
def test_convert_then_translate(tmp_path):
    torch.manual_seed(0)
    g = ref.ResnetGenerator(ngf=8, n_blocks=6)
    torch.save(g.state_dict(), tmp_path / "horse2zebra.pth")
    _run("cyclejax.convert", f"--pretrained={tmp_path / 'horse2zebra.pth'}", "--netG=resnet_6blocks", "--ngf=8",
         f"--output={tmp_path / 'h2z'}")
    b = bundle.load(tmp_path / "h2z")
    assert b.directions == ("AtoB",) and b.config["domains"] == {"A": "horse", "B": "zebra"}
    src = _images(tmp_path / "horses", [(64, 48)], 3)
    _run("cyclejax.translate", f"--model={tmp_path / 'h2z'}", f"--input={src / '00.png'}", f"--output={tmp_path / 'z'}")
    got = np.asarray(Image.open(tmp_path / "z" / "00.png"), np.float32) / 127.5 - 1
    x = np.asarray(Image.open(src / "00.png"), np.float32)[None] / 127.5 - 1
    with torch.no_grad():
        expected = ref.nhwc(g(ref.nchw(x)))[0]
    assert np.abs(got - expected).max() <= 1.0 / 127.5 + 1e-4  # PNG quantisation only
    bad = _run("cyclejax.translate", f"--model={tmp_path / 'h2z'}", f"--input={src}", f"--output={tmp_path / 'z'}",
               "--direction=BtoA", ok=False)
    assert bad.returncode == 2 and "one direction" in bad.stderr
    wrong = _run("cyclejax.convert", f"--pretrained={tmp_path / 'horse2zebra.pth'}", f"--output={tmp_path / 'x'}",
                 ok=False)
    assert wrong.returncode == 2 and "resnet_6blocks" in wrong.stderr and "ngf=8" in wrong.stderr
