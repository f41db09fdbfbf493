"""Times the compiled train step: `python -m cyclejax.bench --netG=resnet_9blocks --size=256`.

Prints what it measures as it goes and, last, one JSON line (`cyclejax.benchmark`):
`s_per_step`, `compile_s`, `img_per_s`, `gflops_per_s`, `peak_rss_mb`, and with
`--breakdown` the median seconds of the step's parts.

`--compare=torch` also times the official PyTorch iteration (`cyclejax.torch_reference`) at the
same sizes, batch and thread count, in a fresh process, and adds `torch_s_per_step`,
`torch_peak_rss_mb` and `ratio` (torch seconds / cyclejax seconds; above 1 cyclejax is
faster); with `--dtype=bfloat16` torch runs under torch.autocast(bfloat16).

`--input --dataset=FOLDER` times the input pipeline alone instead: images/s of training
batches (read, decoded, resize_and_crop from size * 286 / 256 to --size, flipped).
"""
from __future__ import annotations

import importlib.util
import json

from absl import flags

from cyclejax import benchmark, cli, convolution
from cyclejax import model as model_lib

_NETG = flags.DEFINE_string("netG", "resnet_9blocks", "generator architecture")
_NETD = flags.DEFINE_string("netD", "basic", "discriminator architecture")
_SIZE = flags.DEFINE_integer("size", 256, "image height and width")
_BATCH = flags.DEFINE_integer("batch", 1, "global batch size")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(model_lib.DTYPES), "compute dtype of the networks")
_CONV_IMPL = flags.DEFINE_enum("conv_impl", "auto", list(convolution.IMPLS),
                               "how convolutions are computed (cyclejax/convolution.py): auto (oneDNN's on a "
                               "CPU where built, XLA's on GPU/TPU), onednn, xla, or matmul (matrix products for "
                               "every stride-1 layer)")
_NGF = flags.DEFINE_integer("ngf", 64, "generator width")
_NDF = flags.DEFINE_integer("ndf", 64, "discriminator width")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed steps after compilation")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "also time the parts of a step (generator, discriminator, ...)")
_INPUT = flags.DEFINE_bool("input", False, "time the input pipeline alone (with --dataset), not the step")
_DATASET = flags.DEFINE_string("dataset", None, "with --input: a folder with trainA/ trainB/, a TFDS name, or embedded")
_BATCHES = flags.DEFINE_integer("batches", 100, "with --input: timed batches")
_COMPARE = flags.DEFINE_enum("compare", None, ["torch"], "also time the official PyTorch iteration (needs torch) "
                             "at the same sizes and thread count, and report ratio = torch s / cyclejax s")


def main(argv):
    del argv
    if _INPUT.value:
        if not _DATASET.value:
            cli.fail("--input needs --dataset (a folder with trainA/ and trainB/, a TFDS name or embedded)")
        if _BATCH.value < 1 or _BATCHES.value < 1:
            cli.fail("--batch and --batches must be at least 1")
        print(json.dumps(benchmark.input_rate(_DATASET.value, _SIZE.value, _BATCH.value, _BATCHES.value)))
        return
    if _STEPS.value < 1 or _WARMUP.value < 0:
        cli.fail("--steps must be at least 1 and --warmup at least 0")
    sizes = dict(netG=_NETG.value, netD=_NETD.value, size=_SIZE.value, batch=_BATCH.value, dtype=_DTYPE.value,
                 ngf=_NGF.value, ndf=_NDF.value, steps=_STEPS.value)
    result = benchmark.benchmark(warmup=_WARMUP.value, conv_impl=_CONV_IMPL.value, **sizes)
    if _COMPARE.value == "torch":
        if importlib.util.find_spec("torch") is None:
            cli.fail('--compare=torch needs torch: pip install -e ".[torch]"')
        result = benchmark.compare_with_torch(result, warmup=_WARMUP.value, **sizes)
        print(f"torch {result['torch_s_per_step']:.3f} s/step, cyclejax {result['s_per_step']:.3f} s/step: "
              f"ratio {result['ratio']:.2f} (> 1: cyclejax faster)", flush=True)
    if _BREAKDOWN.value:
        result["breakdown"] = benchmark.breakdown(conv_impl=_CONV_IMPL.value, **sizes)
        for k, v in result["breakdown"].items():
            print(f"{k}: {v:.3f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
