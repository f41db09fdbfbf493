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
