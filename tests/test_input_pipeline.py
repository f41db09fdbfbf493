"""The input pipeline: official preprocessing shapes, unpaired sampling, exact resume."""
import numpy as np
import pytest
import tensorflow as tf

from cyclejax import datasets, input_pipeline, preprocessing
from tests.conftest import tiny_config


def test_index_stream_resumes_where_it_left_off():
    full = input_pipeline.index_stream(7, 5, 2, seed=3, start_step=0, rows=slice(None))
    first = [next(full) for _ in range(12)]
    resumed = input_pipeline.index_stream(7, 5, 2, seed=3, start_step=5, rows=slice(None))
    for want in first[5:]:
        got = next(resumed)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


def test_an_epoch_walks_every_A_once_and_draws_B_at_random():
    stream = input_pipeline.index_stream(6, 4, 1, seed=0, start_step=0, rows=slice(None))
    epoch = [next(stream) for _ in range(6)]
    assert sorted(int(a[0]) for _, a, _ in epoch) == list(range(6))
    assert all(0 <= int(b[0]) < 4 for _, _, b in epoch)
    assert input_pipeline.steps_per_epoch(6, 4, 1) == 6 and input_pipeline.steps_per_epoch(3, 9, 2) == 4


def test_processes_read_disjoint_rows_of_the_global_batch():
    rows = [input_pipeline.index_stream(8, 8, 4, 0, 0, slice(p * 2, p * 2 + 2)) for p in (0, 1)]
    whole = next(input_pipeline.index_stream(8, 8, 4, 0, 0, slice(None)))
    parts = [next(r) for r in rows]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])


def test_train_batches_are_deterministic_scaled_and_resumable():
    config = tiny_config(batch_size=2)
    A = datasets.load_split("embedded", "trainA", 6)
    B = datasets.load_split("embedded", "trainB", 6)
    it = input_pipeline.train_batches(A, B, config, 0)
    batches = [next(it) for _ in range(5)]
    assert batches[0]["A"].shape == (2, 32, 32, 3) and batches[0]["A"].dtype == np.float32
    assert -1.0 <= batches[0]["A"].min() and batches[0]["B"].max() <= 1.0
    resumed = input_pipeline.train_batches(A, B, config, 3)
    for want in batches[3:]:
        got = next(resumed)
        assert int(got["step"][0]) == int(want["step"][0])
        np.testing.assert_array_equal(got["A"], want["A"])
        np.testing.assert_array_equal(got["B"], want["B"])


@pytest.mark.parametrize("mode, load, crop, shape_in, train, shape_out", [
    ("resize_and_crop", 286, 256, (300, 400), True, (256, 256)),
    ("resize_and_crop", 286, 256, (300, 400), False, (256, 256)),
    ("crop", 286, 64, (100, 120), True, (64, 64)),
    ("crop", 286, 64, (40, 50), True, (64, 64)),  # smaller than the crop: scaled up first
    ("auto", 72, 64, (40, 90), True, (64, 64)),  # a folder dataset: resize_and_crop
    ("scale_width", 80, 64, (50, 100), True, (64, 80)),  # width to load_size, height kept >= crop_size
    ("scale_width", 80, 64, (150, 100), True, (120, 80)),
    ("scale_width", 80, 64, (150, 100), False, (96, 64)),  # testing: load_size = crop_size
    ("scale_width_and_crop", 80, 64, (60, 100), True, (64, 64)),
    ("none", 286, 256, (37, 50), True, (36, 48)),  # the official round(): 50 / 4 = 12.5 -> 12 (halves to even)
    ("none", 286, 256, (43, 58), True, (44, 56)),  # 58 / 4 = 14.5 -> 14
    ("none", 286, 256, (64, 64), True, (64, 64)),
])
def test_preprocess_modes_give_official_shapes(mode, load, crop, shape_in, train, shape_out):
    config = tiny_config(preprocess=mode, load_size=load, crop_size=crop, dataset="/some/folder")
    img = tf.constant(np.random.default_rng(0).integers(0, 256, (*shape_in, 3)), tf.uint8)
    out = input_pipeline.preprocess(img, tf.constant([1, 2], tf.int64), config, train).numpy()
    assert out.shape[:2] == shape_out
    if train:  # the size training sets its state up for, from the image's header size
        assert preprocessing.train_size(config, *shape_in) == shape_out


def test_auto_is_none_on_the_embedded_dataset():
    config = tiny_config(preprocess="auto", load_size=72, crop_size=64, dataset="embedded")
    assert preprocessing.preprocess_mode(config) == "none"
    img = tf.constant(np.zeros((64, 64, 3), np.uint8))
    assert input_pipeline.preprocess(img, tf.constant([1, 2], tf.int64), config, True).shape == (64, 64, 3)


def test_none_keeps_multiple_of_four_images_exactly():
    config = tiny_config(preprocess="none", no_flip=True)
    img = np.random.default_rng(0).integers(0, 256, (8, 12, 3)).astype(np.uint8)
    out = input_pipeline.preprocess(tf.constant(img), tf.constant([1, 2], tf.int64), config, True).numpy()
    np.testing.assert_allclose(out, img / 127.5 - 1.0, atol=1e-6)


def test_flip_depends_on_the_seed_and_no_flip_turns_it_off():
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    config = tiny_config(preprocess="none")
    outs = {input_pipeline.preprocess(tf.constant(img), tf.constant([s, 0], tf.int64), config, True).numpy().tobytes()
            for s in range(20)}
    assert len(outs) == 2
    config.no_flip = True
    outs = {input_pipeline.preprocess(tf.constant(img), tf.constant([s, 0], tf.int64), config, True).numpy().tobytes()
            for s in range(20)}
    assert len(outs) == 1


def _folder(root, sizes_A, sizes_B):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, sizes in (("trainA", sizes_A), ("trainB", sizes_B)):
        (root / split).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
    return str(root)


def test_sizes_that_cannot_train_together_are_refused_before_compiling(tmp_path):
    """preprocess 'none' and 'scale_width' keep the images' own sizes: one size for every
    training image of both domains (batches stack, each pool holds the other domain's
    translations), or a DatasetError naming two files."""
    from cyclejax import datasets, training

    def load(name, mode, sizes_A, sizes_B, **kw):
        config = tiny_config(preprocess=mode, dataset=_folder(tmp_path / name, sizes_A, sizes_B), **kw)
        return training.load_data(config)

    with pytest.raises(datasets.DatasetError, match="0.png is 40x40 but .*1.png is 44x40: images of different"):
        load("within", "none", [(40, 40), (40, 44)], [(40, 40)])
    with pytest.raises(datasets.DatasetError, match=r"with preprocess='none' .*trainA/0.png trains at 40x40 but "
                                                    r".*trainB/0.png at 32x32: every training image of both"):
        load("across", "none", [(40, 40)] * 2, [(32, 32)])
    # scale_width: width to load_size (80); the height follows each image's aspect (at least crop_size, 32).
    with pytest.raises(datasets.DatasetError, match="trains at 80x40 but .*trainA/1.png at 80x48"):
        load("aspects", "scale_width", [(50, 100), (60, 100)], [(50, 100)], load_size=80, crop_size=32)
    train_A, train_B, _, _ = load("same", "scale_width", [(50, 100), (100, 200)], [(25, 50)], load_size=80,
                                  crop_size=32)
    assert len(train_A) == 2 and len(train_B) == 1
    load("cropped", "scale_width_and_crop", [(50, 100), (60, 100)], [(32, 32)], load_size=80, crop_size=32)


def test_tensorflow_loads_without_keras_and_keras_still_imports_after():
    """cyclejax imports TensorFlow without the Keras (and pandas, matplotlib) it would import
    eagerly (cyclejax/tf_import.py: about 1.5 s of every command's start on the 2-core VM)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from cyclejax import training\n"
            "from cyclejax.tf_import import tf\n"
            "print(sorted(m for m in ('keras', 'pandas', 'matplotlib') if m in sys.modules))\n"
            "print(list(tf.data.Dataset.range(3).map(lambda x: 2 * x).as_numpy_iterator()))\n"
            "print([d.device_type for d in tf.config.get_visible_devices()])\n"
            "import keras\n"
            "print(tf.keras.layers.Dense(2)(tf.ones((1, 3))).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["[]", "[np.int64(0), np.int64(2), np.int64(4)]", "['CPU']", "(1, 2)"]
