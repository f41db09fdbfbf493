"""Every paper config in experiments/configs loads, keeps the paper's settings, and trains a step."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import jax

from cyclejax import config_check, datasets, input_pipeline, parallel, train, train_state
from cyclejax import model as model_lib
from cyclejax.configs import default

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.py"))
TASKS = {"horse2zebra", "apple2orange", "summer2winter_yosemite", "monet2photo", "cezanne2photo", "ukiyoe2photo",
         "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "cityscapes"}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_there_is_one_config_per_task_with_the_paper_settings():
    assert {p.stem for p in CONFIGS} == TASKS
    paper = default.paper()
    for path in CONFIGS:
        c = _load(path)
        config_check.validate(c, device_count=1, process_count=1)
        assert "gcloud compute tpus tpu-vm ssh" in path.read_text() and "--worker=all" in path.read_text()
        differ = {k for k in paper.keys() if c[k] != paper[k]}
        if path.stem == "cityscapes":
            assert differ == {"dataset", "netG", "load_size", "crop_size"} and c.crop_size == 128
        else:
            assert differ == ({"dataset"} if c.dataset != paper.dataset else set())
            assert c.dataset == f"cycle_gan/{path.stem}" and c.dataset.split("/")[1] in datasets.TFDS_NAMES


@pytest.mark.slow
def test_every_config_trains_one_step_on_mocked_data(tmp_path):
    """Each config's data (mocked TFDS, or folders for cityscapes), model and state go through one
    compiled step. Configs that differ only in their dataset compile to the same program, so
    they share one compiled step function."""
    folder = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB"):
        (folder / split).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(folder / split / f"{i}.png")
    tiny = dict(ngf=4, ndf=4, load_size=36, crop_size=32, max_dataset_size=4, pool_size=2, shuffle_buffer=4,
                prefetch=1)
    mesh = parallel.make_mesh()
    compiled = {}
    for path in CONFIGS:
        c = _load(path)
        c.update(tiny)
        if path.stem == "cityscapes":
            c.dataset = str(folder)
        config_check.validate(c, jax.device_count(), 1)
        with tfds.testing.mock_data(num_examples=4):
            train_A, train_B, _, _ = train.load_data(c)
        spe = input_pipeline.steps_per_epoch(len(train_A), len(train_B), c.batch_size)
        model = model_lib.build(c, spe)
        program = (spe, tuple((k, repr(v)) for k, v in sorted(c.items()) if k != "dataset"))
        step = compiled.setdefault(program, parallel.compile_train_step(model, mesh))
        batch = next(input_pipeline.train_batches(train_A, train_B, c, 0, 0, 1))
        state = train_state.create(model, c.seed, batch["A"].shape[1:], batch["B"].shape[1:])
        state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch({"A": batch["A"], "B": batch["B"]}, mesh))
        assert int(state.step) == 1, path.stem
        assert all(np.isfinite(float(v)) for v in metrics.values()), (path.stem, metrics)
    assert len(compiled) == 2  # the ten TFDS tasks, and cityscapes (resnet_6blocks)
