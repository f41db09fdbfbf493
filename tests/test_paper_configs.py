"""Every paper config in experiments/configs loads, keeps the paper's settings, and trains a step."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cyclejax import config_check, datasets, train
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


@pytest.fixture
def shared_compilation_cache(tmp_path):
    """The ten TFDS configs compile the same tiny program: let XLA compile it once."""
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
           jax.config.jax_persistent_cache_min_entry_size_bytes)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", old[2])


@pytest.mark.slow
def test_every_config_trains_one_step_on_mocked_data(tmp_path, shared_compilation_cache):
    folder = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for split in ("trainA", "trainB"):
        (folder / split).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(folder / split / f"{i}.png")
    tiny = dict(ngf=4, ndf=4, load_size=36, crop_size=32, max_dataset_size=4, pool_size=2, max_steps=1,
                log_every=1, sample_every=0, checkpoint_every=0, eval_at_end=False, shuffle_buffer=4, prefetch=1)
    for path in CONFIGS:
        c = _load(path)
        c.update(tiny)
        if path.stem == "cityscapes":
            c.dataset = str(folder)
        with tfds.testing.mock_data(num_examples=4):
            result = train.train_and_evaluate(c, tmp_path / path.stem)
        assert result["step"] == 1, path.stem
        assert all(np.isfinite(v) for v in result["metrics"].values()), (path.stem, result["metrics"])
