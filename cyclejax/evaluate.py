"""Scores a model: `python -m cyclejax.evaluate --model=BUNDLE_OR_WORKDIR --dataset=...`.

`--dataset=embedded` gives the paired errors and baselines of the train command's eval.json;
any other dataset (TFDS `cycle_gan/<name>` or a folder with testA/ and testB/) FID and KID
of both directions with clean-fid's conventions (`cyclejax.evaluation`). Writes the report
as JSON (`--output`, default <model>/eval_<dataset>.json, or ./eval_<name>_<dataset>.json for a
pretrained model's name, ./eval_OWNER--REPO_<dataset>.json for hf://OWNER/REPO) and prints a table.
"""
from __future__ import annotations

import sys
from absl import flags

from cyclejax import cli, evaluation

_MODEL = flags.DEFINE_string("model", None, "a generator bundle, a training --workdir (its latest checkpoint), "
                             "a pretrained model's name, or hf://OWNER/REPO[@REVISION] on the Hugging Face Hub",
                             required=True)
_DATASET = flags.DEFINE_string("dataset", "embedded", "embedded, cycle_gan/<name> or a folder with testA/ testB/")
_OUTPUT = flags.DEFINE_string("output", None, "the JSON report (default: <model>/eval_<dataset>.json; "
                             "./eval_<name>_<dataset>.json for a pretrained name, "
                             "./eval_OWNER--REPO[@REVISION]_<dataset>.json for hf://OWNER/REPO[@REVISION])")
_INCEPTION = flags.DEFINE_string("inception_weights", None,
                                 "pytorch-fid's Inception weights (.pth or .npz; default: downloaded once into "
                                 "~/.cache/cyclejax and sha256-checked); 'random' tests the pipeline with random "
                                 "weights (meaningless numbers)")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "use at most this many test images per domain (0: all)")


def main(argv):
    del argv
    if _MAX_IMAGES.value < 0:
        cli.fail(f"--max_images={_MAX_IMAGES.value} must be 0 (all) or more")
    evaluation.evaluate(_MODEL.value, _DATASET.value, _INCEPTION.value, _MAX_IMAGES.value, _OUTPUT.value,
                        progress=sys.stderr.isatty())


if __name__ == "__main__":
    cli.run(main)
