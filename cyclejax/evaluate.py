"""Scores a model: `python -m cyclejax.evaluate --model=BUNDLE_OR_WORKDIR --dataset=...`.

- `--dataset=embedded`: the paired ground-truth errors and the two baselines, exactly as
  the train command's eval.json (`cyclejax.embedded_score`).
- any other dataset (TFDS `cycle_gan/<name>` or a folder with testA/ and testB/): FID and
  KID between translated testA and real testB, and between translated testB and real
  testA, with clean-fid's conventions (`cyclejax.fid`) and pytorch-fid's Inception weights
  (`--inception_weights`, see `cyclejax.inception` for the one-time download). All test
  images by default (`--max_images` to cap); the counts are printed and reported.

Writes the report as JSON (`--output`, default <model>/eval_<dataset>.json) and prints a table.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags
from tqdm import tqdm

from cyclejax import bundle as bundle_lib
from cyclejax import checkpoints, datasets, embedded_score, fid, inception
from cyclejax import export as export_lib
from cyclejax import model as model_lib
from cyclejax.translate import Translator


class EvaluateError(ValueError):
    pass


def load_model(path: str | Path) -> bundle_lib.Bundle:
    """A bundle folder, or a training workdir exported on the fly."""
    path = Path(path)
    if (path / "bundle.json").is_file():
        return bundle_lib.load(path)
    if (path / "checkpoints").is_dir():
        return export_lib.from_workdir(path)
    raise EvaluateError(f"--model {path} is neither a bundle (no bundle.json) nor a training workdir "
                        f"(no checkpoints/)")


def evaluate_embedded(b: bundle_lib.Bundle) -> dict:
    for d in bundle_lib.DIRECTIONS:
        b.check_direction(d)
    to_B, to_A = (model_lib.translator(b.generator(d), b.variables[d]["params"], b.variables[d].get("batch_stats") or {})
                  for d in bundle_lib.DIRECTIONS)
    return embedded_score.evaluate(to_B, to_A, step=b.config.get("source", {}).get("step", 0))


def evaluate_fid(b: bundle_lib.Bundle, dataset: str, variables: dict, max_images: int = 0,
                 progress: bool = False) -> dict:
    """FID/KID of both directions the bundle holds, against the dataset's real test images."""
    tests = {}
    for split in ("testA", "testB"):
        if not datasets.has_split(dataset, split):
            raise EvaluateError(f"{dataset} has no {split} split: FID needs testA and testB")
        tests[split[-1]] = datasets.load_images(dataset, split, max_images)
    report: dict = {"dataset": dataset, "resize": "PIL bicubic to 299x299 on float32 channels (clean-fid 'clean')",
                    "features": "pytorch-fid FID Inception-v3 pool3 (2048-d)"}
    for direction in b.directions:
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        translate = Translator(b, direction)
        fakes = [translate(im) for im in tqdm(tests[src], desc=f"translate {direction}", disable=not progress)]
        f_fake = fid.image_features(variables, fakes)
        f_real = fid.image_features(variables, tests[dst])
        report[direction] = {"fid": round(fid.fid_from_features(f_fake, f_real), 4),
                             "kid": round(fid.kernel_distance(f_fake, f_real), 6),
                             "n_translated": len(fakes), "n_real": len(tests[dst])}
    return report


def format_fid_table(report: dict) -> str:
    lines = [f"{report['dataset']}: FID / KID of translated test images against real ones (lower is better)",
             f"{'direction':<10}{'FID':>10}{'KID':>12}{'translated':>12}{'real':>8}"]
    for d in bundle_lib.DIRECTIONS:
        if d in report:
            r = report[d]
            lines.append(f"{d:<10}{r['fid']:>10.2f}{r['kid']:>12.5f}{r['n_translated']:>12}{r['n_real']:>8}")
    lines.append(f"resize: {report['resize']}")
    return "\n".join(lines)


def evaluate(model: str | Path, dataset: str = "embedded", inception_weights: str | None = None,
             max_images: int = 0, output: str | Path | None = None, progress: bool = False) -> dict:
    t0 = time.time()
    b = load_model(model)
    if datasets.kind(dataset) == "embedded":
        report = evaluate_embedded(b)
        table = embedded_score.format_table(report)
    else:
        if inception_weights == "random":
            variables = inception.init_random()
            extractor = "random weights (pipeline test; meaningless numbers)"
        else:
            variables = inception.load_weights(inception_weights)
            extractor = str(inception_weights)
        report = evaluate_fid(b, dataset, variables, max_images, progress)
        report["inception_weights"] = extractor
        table = format_fid_table(report)
    report["model"] = str(Path(model).absolute())
    report["seconds"] = round(time.time() - t0, 1)
    name = datasets.kind(dataset) if datasets.kind(dataset) == "embedded" else Path(dataset.rstrip("/")).name
    output = Path(output) if output else Path(model) / f"eval_{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(table, flush=True)
    print(f"report: {output}", flush=True)
    return report


def define_flags() -> None:
    """The command's flags (defined only when it runs, so the modules import together)."""
    flags.DEFINE_string("model", None, "a generator bundle, or a training --workdir (its latest checkpoint)",
                                 required=True)
    flags.DEFINE_string("dataset", "embedded", "embedded, cycle_gan/<name> or a folder with testA/ testB/")
    flags.DEFINE_string("output", None, "the JSON report (default: <model>/eval_<dataset>.json)")
    flags.DEFINE_string("inception_weights", str(Path.home() / ".cache" / "cyclejax" / inception.WEIGHTS_FILE),
                                   "pytorch-fid's Inception weights (.pth or .npz); 'random' tests the pipeline "
                                   "with random weights (meaningless numbers)")
    flags.DEFINE_integer("max_images", 0, "use at most this many test images per domain (0: all)")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    try:
        evaluate(FLAGS.model, FLAGS.dataset, FLAGS.inception_weights, FLAGS.max_images, FLAGS.output,
                 progress=sys.stderr.isatty())
    except (EvaluateError, bundle_lib.BundleError, datasets.DatasetError, FileNotFoundError,
            checkpoints.CheckpointMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
