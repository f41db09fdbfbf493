"""The official preprocess modes (`--preprocess` of the official code) and what `auto` means.

Kept apart from `cyclejax.input_pipeline`, which implements them in tf.data, so that checking a
config (and so the benchmark, and the accelerator script on a machine without TensorFlow)
does not import TensorFlow.
"""
from __future__ import annotations

PREPROCESS = ("auto", "resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


def preprocess_mode(config) -> str:
    """`auto`: none on the embedded dataset (64x64 already), resize_and_crop on any other."""
    if config.preprocess != "auto":
        return config.preprocess
    return "none" if config.dataset == "embedded" else "resize_and_crop"


def train_size(config, height: int, width: int) -> tuple[int, int]:
    """(height, width) of a training image of that size after `config`'s preprocessing.

    Only `none` and `scale_width` keep something of the image's own size (a batch, and each
    domain's image pool, then needs every image to give the same); the others crop to
    crop_size x crop_size.
    """
    mode, load, crop = preprocess_mode(config), config.load_size, config.crop_size
    if mode == "none":  # the official __make_power_2(base=4): round() halves to even, as tf.round
        return max(4, round(height / 4) * 4), max(4, round(width / 4) * 4)
    if mode == "scale_width":  # the official __scale_width to load_size, height at least crop_size
        return max(int(load * height / width), crop), load
    return crop, crop
