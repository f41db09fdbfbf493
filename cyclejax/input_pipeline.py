"""The tf.data input pipeline: official preprocessing, unpaired sampling, deterministic resume.

An epoch is max(|A|, |B|) images: A walked in a shuffled order, B drawn at random, as the
official `UnalignedDataset`. Which images make step s, and every random crop and flip,
depend only on (seed, s), so a resumed run reads exactly what an uninterrupted one would.
Each process reads only its own rows of the global batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from cyclejax import datasets, images
from cyclejax.preprocessing import preprocess_mode
from cyclejax.tf_import import tf


def steps_per_epoch(n_A: int, n_B: int, global_batch: int) -> int:
    return max(1, max(n_A, n_B) // global_batch)


def index_stream(n_A: int, n_B: int, global_batch: int, seed: int, start_step: int,
                 rows: slice) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(step, indices into A, indices into B) for each step from `start_step`, this process's rows."""
    spe = steps_per_epoch(n_A, n_B, global_batch)
    step = start_step
    while True:
        epoch = step // spe
        rng = np.random.default_rng([seed, epoch])
        need = spe * global_batch
        order_A = np.concatenate([rng.permutation(n_A) for _ in range(-(-need // n_A))])[:need]
        draw_B = rng.integers(0, n_B, need)
        for s in range(step % spe, spe):
            sl = slice(s * global_batch, (s + 1) * global_batch)
            yield epoch * spe + s, order_A[sl][rows], draw_B[sl][rows]
        step = (epoch + 1) * spe


def _scale_width(img: tf.Tensor, target_width: int, crop_size: int) -> tf.Tensor:
    h = tf.cast(tf.shape(img)[0], tf.float32)
    w = tf.cast(tf.shape(img)[1], tf.float32)
    new_h = tf.maximum(tf.cast(target_width * h / w, tf.int32), crop_size)
    return tf.image.resize(img, (new_h, target_width), method="bicubic")


def _at_least(img: tf.Tensor, size: int) -> tf.Tensor:
    """Scaled up (bicubic, aspect kept) until both sides are at least `size`; larger images unchanged.

    The official 'crop' mode would return an image smaller than the crop uncropped, and the
    batch could not be stacked; we resize it up instead.
    """
    h = tf.cast(tf.shape(img)[0], tf.float32)
    w = tf.cast(tf.shape(img)[1], tf.float32)
    scale = tf.maximum(size / tf.minimum(h, w), 1.0)
    new = (tf.cast(tf.math.ceil(h * scale), tf.int32), tf.cast(tf.math.ceil(w * scale), tf.int32))
    return tf.cond(scale > 1.0, lambda: tf.image.resize(img, new, method="bicubic"), lambda: img)


def preprocess(img: tf.Tensor, seed: tf.Tensor, config, train: bool) -> tf.Tensor:
    """The official `get_transform`: uint8 HWC -> float32 in [-1, 1]."""
    img = tf.cast(img, tf.float32)
    load, crop, mode = config.load_size, config.crop_size, preprocess_mode(config)
    if not train:
        load = crop
    if mode == "resize_and_crop":
        img = tf.image.resize(img, (load, load), method="bicubic")
    elif mode in ("scale_width", "scale_width_and_crop"):
        img = _scale_width(img, load, crop)
    if mode == "crop":
        img = _at_least(img, crop)
    if mode in ("resize_and_crop", "crop", "scale_width_and_crop"):
        if train:
            img = tf.image.stateless_random_crop(img, (crop, crop, 3), seed=seed)
        else:
            img = tf.image.resize_with_crop_or_pad(img, crop, crop)
    if mode == "none":
        # Sizes rounded to a multiple of 4, as the official __make_power_2(base=4): Python's
        # round, halves to even, as tf.round (preprocessing.train_size).
        h, w = tf.shape(img)[0], tf.shape(img)[1]
        new_h, new_w = (tf.maximum(4, tf.cast(tf.round(tf.cast(n, tf.float64) / 4), tf.int32) * 4) for n in (h, w))
        img = tf.cond(tf.logical_and(new_h == h, new_w == w), lambda: img,
                      lambda: tf.image.resize(img, (new_h, new_w), method="bicubic"))
    if train and not config.no_flip:
        img = tf.image.stateless_random_flip_left_right(img, seed=seed + 7)
    img = tf.clip_by_value(tf.round(img), 0.0, 255.0)  # the official path goes through uint8 PIL images
    return img / 127.5 - 1.0


UNREADABLE = "cyclejax-unreadable: "  # marks our reader's error in tf.data's message


def _decode(data: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
    """The one reader (`cyclejax.images`) inside tf.data: encoded bytes -> uint8 (H, W, 3)."""
    def read(d, n):
        try:
            return images.decode(d, n.decode())
        except images.UnreadableImage as e:
            raise ValueError(f"{UNREADABLE}{e}") from None  # tf.data carries only the message
    img = tf.numpy_function(read, [data, name], tf.uint8, stateful=False)
    img.set_shape([None, None, 3])
    return img


def train_batches(split_A: datasets.Split, split_B: datasets.Split, config, start_step: int,
                  process_index: int = 0, process_count: int = 1) -> Batches:
    """This process's part of each global batch, from `start_step` on: {'A', 'B', 'step'}.

    Only indices and file names (or encoded bytes) pass through Python; files are read and
    decoded in parallel tf.data workers, a bounded number of images in flight.
    """
    global_batch = config.batch_size
    local = global_batch // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    stream = index_stream(len(split_A), len(split_B), global_batch, config.seed, start_step, rows)

    def examples():
        for step, idx_A, idx_B in stream:
            for row, (a, b) in enumerate(zip(idx_A, idx_B)):
                sample = step * global_batch + rows.start + row
                yield (split_A.items[a], split_A.names[a], split_B.items[b], split_B.names[b],
                       np.array([config.seed, sample], np.int64), np.int64(step))

    text = tf.TensorSpec((), tf.string)
    sig = (text, text, text, text, tf.TensorSpec((2,), tf.int64), tf.TensorSpec((), tf.int64))
    ds = tf.data.Dataset.from_generator(examples, output_signature=sig)

    def load(item, name, from_files):
        return _decode(tf.io.read_file(item) if from_files else item, name)

    def prep(a, name_a, b, name_b, seed, step):
        img_A = load(a, name_a, split_A.from_files)
        img_B = load(b, name_b, split_B.from_files)
        return {"A": preprocess(img_A, seed * 2, config, True), "B": preprocess(img_B, seed * 2 + 1, config, True),
                "step": step}

    # `prep` branches on the config only, never on a tensor: traced as written, without
    # AutoGraph's rewrite (0.5 s of each run's start, the same pixels).
    prep = tf.autograph.experimental.do_not_convert(prep)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(config.prefetch)
    return Batches(ds)


class Batches:
    """The training batches: an iterator that `close()` stops for good.

    tf.data runs `numpy_function` and `from_generator` code in its own threads, which need
    the GIL. Destroying the iterator joins them, and a Python that is already finalizing
    can no longer hand them the GIL: an iterator left alive until exit (for instance held by
    an exception's traceback) can hang the process after its last line. So the iterator is
    dropped explicitly (`close`, also on errors) and a decode error is re-raised as a
    `DatasetError` naming the file, with no reference back to tf.data's frames.
    """

    def __init__(self, dataset: tf.data.Dataset):
        self._it = dataset.as_numpy_iterator()

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            raise StopIteration
        message = None
        try:
            return next(self._it)
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
            # A file listed at the start that has gone or become unreadable since.
            message = f"a training image listed when the run started cannot be opened now ({e.message.splitlines()[0]})"
        except tf.errors.OpError as e:
            if UNREADABLE not in e.message:
                raise
            message = e.message.split(UNREADABLE, 1)[1].splitlines()[0]
        self.close()  # outside the except block: the error keeps no frame that holds the iterator
        raise datasets.DatasetError(f"{message}; remove, replace or restore the file and run the same command "
                                    f"again (it resumes from the last checkpoint)")

    def close(self) -> None:
        """Stops tf.data's workers now (the GIL released while they finish)."""
        self._it = None

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def eval_images(images: list[np.ndarray], config) -> np.ndarray:
    """Test-time preprocessing (load_size = crop_size, no flip) of same-sized images -> float32 batch."""
    out = [preprocess(tf.constant(img), tf.constant([0, 0], tf.int64), config, False).numpy() for img in images]
    return np.stack(out).astype(np.float32)
