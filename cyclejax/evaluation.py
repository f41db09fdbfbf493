"""Scoring a generator bundle: the embedded paired errors, or FID and KID on a test set.

- `dataset='embedded'`: the paired ground-truth errors and the two baselines, exactly as
  the train command's eval.json (`cyclejax.embedded_score`).
- any other dataset (TFDS `cycle_gan/<name>` or a folder with testA/ and testB/): FID and
  KID between translated testA and real testB, and between translated testB and real
  testA, with clean-fid's conventions (`cyclejax.fid`) and pytorch-fid's Inception weights
  (`cyclejax.inception`). All test images by default (`max_images` to cap).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from cyclejax import bundle as bundle_lib
from cyclejax import datasets, embedded_score, fid, hub, inception, pretrained, storage
from cyclejax import model as model_lib
from cyclejax.errors import UserError
from cyclejax.translation import ImageTranslator


class EvaluateError(UserError):
    """A dataset that cannot be scored (no test splits)."""


class _Translated(Sequence):
    """The translations of a split, made when read (a batch of them at a time, by `fid.image_features`)."""

    def __init__(self, translate, split: datasets.Split, bar):
        self.translate, self.split, self.bar = translate, split, bar

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        self.bar.update(1)
        return self.translate(self.split[i])


def embedded_report(b: bundle_lib.Bundle) -> dict:
    """The paired errors and baselines of the embedded test split, as the train command's eval.json."""
    for d in bundle_lib.DIRECTIONS:
        b.check_direction(d)
    to_B, to_A = (model_lib.batch_translator(b.generator(d), b.variables[d]["params"],
                                             b.variables[d].get("batch_stats") or {})
                  for d in bundle_lib.DIRECTIONS)
    return embedded_score.score(to_B, to_A, step=b.config.get("source", {}).get("step", 0))


def fid_report(b: bundle_lib.Bundle, dataset: str, variables: dict, max_images: int = 0,
                 progress: bool = False) -> dict:
    """FID/KID of both directions the bundle holds, against the dataset's real test images."""
    tests = {}
    for split in ("testA", "testB"):
        if not datasets.has_split(dataset, split):
            raise EvaluateError(f"{dataset} has no {split} split: FID needs testA and testB")
        tests[split[-1]] = datasets.load_split(dataset, split, max_images)  # decoded when read
        if len(tests[split[-1]]) < 2:
            raise EvaluateError(f"{dataset} {split} gives {len(tests[split[-1]])} image(s): FID and KID compare "
                                "distributions and need at least 2 in each test split (check --max_images)")
    report: dict = {"dataset": dataset, "resize": "PIL bicubic to 299x299 on float32 channels (clean-fid 'clean')",
                    "features": "pytorch-fid FID Inception-v3 pool3 (2048-d)"}
    for direction in b.directions:
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        translate = ImageTranslator(b, direction)
        fakes = _Translated(translate, tests[src], tqdm(total=len(tests[src]), desc=f"translate {direction}",
                                                         disable=not progress))
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


def _file_name(model: storage.PathLike) -> str:
    """A model's name as part of a file name: hf://OWNER/REPO@REV -> OWNER--REPO@REV."""
    name = str(model).removeprefix(hub.PREFIX) if hub.is_spec(model) else str(model)
    return name.replace("/", "--")


def evaluate(model: storage.PathLike, dataset: str = "embedded", inception_weights: str | None = None,
             max_images: int = 0, output: storage.PathLike | None = None, progress: bool = False) -> dict:
    """Scores a bundle or workdir on `dataset`, writes the JSON report and prints its table."""
    t0 = time.time()
    b = bundle_lib.load_any(model)
    if datasets.kind(dataset) == "embedded":
        report = embedded_report(b)
        table = embedded_score.format_table(report)
    else:
        if inception_weights == "random":
            variables = inception.init_random()
            extractor = "random weights (pipeline test; meaningless numbers)"
        else:
            # Downloaded once when not given, and checked against the sha256 prefix in its name.
            weights = inception_weights or pretrained.inception_file(progress)
            variables = inception.load_weights(weights)
            extractor = str(weights)
        report = fid_report(b, dataset, variables, max_images, progress)
        report["inception_weights"] = extractor
        table = format_fid_table(report)
    # A pretrained model's name or a Hub model: no folder of its own to write the report into.
    by_name = hub.is_spec(model) or not storage.resolve(model).exists()
    report["model"] = str(model) if by_name else str(storage.resolve(model))
    report["seconds"] = round(time.time() - t0, 1)
    name = datasets.kind(dataset) if datasets.kind(dataset) == "embedded" else Path(dataset.rstrip("/")).name
    if not output:
        output = f"eval_{_file_name(model)}_{name}.json" if by_name else storage.resolve(model) / f"eval_{name}.json"
    output = storage.resolve(output)  # local or gs://
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
    except OSError as e:
        print(json.dumps(report, indent=2), flush=True)  # the scores are not lost
        raise EvaluateError(f"--output {output} cannot be written ({e}); the report is printed above") from e
    print(table, flush=True)
    print(f"report: {output}", flush=True)
    return report
