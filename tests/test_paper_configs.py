"""Every task of experiments/configs/paper.py loads, keeps the paper's settings, and trains a step."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cyclejax import config_check, datasets, input_pipeline, parallel, train_state, train_step, training
from cyclejax import model as model_lib
from cyclejax.configs import default

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "paper.py"
TASKS = {"horse2zebra", "apple2orange", "summer2winter_yosemite", "monet2photo", "cezanne2photo", "ukiyoe2photo",
         "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "cityscapes"}


def _paper_module():
    spec = importlib.util.spec_from_file_location("paper", PAPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_one_config_per_task_with_the_paper_settings():
    paper_configs = _paper_module()
    assert set(paper_configs.TASKS) == TASKS
    text = PAPER.read_text()
    assert "gcloud compute tpus tpu-vm ssh" in text and "--worker=all" in text
    paper = default.get_config("paper")
    for task in TASKS:
        c = paper_configs.get_config(task)
        config_check.validate(c, device_count=1, process_count=1)
        differ = {k for k in paper.keys() if c[k] != paper[k]}
        if task == "cityscapes":
            assert differ == {"dataset", "netG", "load_size", "crop_size"} and c.crop_size == 128
        else:
            assert differ == ({"dataset"} if c.dataset != paper.dataset else set())
            assert c.dataset == f"cycle_gan/{task}" and c.dataset.split("/")[1] in datasets.TFDS_NAMES
    with pytest.raises(ValueError, match="unknown task 'horse2zebr'"):
        paper_configs.get_config("horse2zebr")


def test_configs_are_locked_against_new_keys():
    for c in (default.get_config(), default.get_config("paper"), default.get_config("tiny"),
              _paper_module().get_config("maps,tiny")):
        with pytest.raises(AttributeError, match="ngff"):
            c.ngff = 3
    with pytest.raises(ValueError, match="unknown config variant"):
        default.get_config("papr")


@pytest.mark.slow
def test_every_config_trains_one_step_on_mocked_data(tmp_path):
    """Each task's data (mocked TFDS, or folders for cityscapes), model and state go through one
    compiled step, at the tiny size. Tasks that differ only in their dataset compile to the same
    program, so they share one compiled step function."""
    folder = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB"):
        (folder / split).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(folder / split / f"{i}.png")
    paper_configs = _paper_module()
    mesh = parallel.make_mesh()
    compiled = {}
    for task in sorted(TASKS):
        c = paper_configs.get_config(f"{task},tiny")
        c.update(max_dataset_size=4, pool_size=2, prefetch=1)
        if task == "cityscapes":
            assert c.netG == "resnet_6blocks" and c.crop_size == 32
            c.dataset = str(folder)
        else:
            c.netG = "resnet_9blocks"  # the paper's generator, at the tiny width
        config_check.validate(c, jax.device_count(), 1)
        with tfds.testing.mock_data(num_examples=4):
            train_A, train_B, _, _ = training.load_data(c)
        spe = input_pipeline.steps_per_epoch(len(train_A), len(train_B), c.batch_size)
        model = model_lib.build(c, spe)
        program = (spe, tuple((k, repr(v)) for k, v in sorted(c.items()) if k != "dataset"))
        step = compiled.setdefault(program, train_step.jit_train_step(model, mesh))
        batch = next(input_pipeline.train_batches(train_A, train_B, c, 0, 0, 1))
        state = train_state.create(model, c.seed, batch["A"].shape[1:], batch["B"].shape[1:])
        state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch({"A": batch["A"], "B": batch["B"]}, mesh))
        assert int(state.step) == 1, task
        assert all(np.isfinite(float(v)) for v in metrics.values()), (task, metrics)
    assert len(compiled) == 2  # the ten TFDS tasks, and cityscapes (resnet_6blocks)
