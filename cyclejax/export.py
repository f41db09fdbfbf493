"""Exports a trained run's generators: `python -m cyclejax.export --workdir=DIR --output=OUT [--step=N]`.

Writes a generator bundle (`cyclejax.bundle`): both generators' parameters, their config
and a `jax.export` artifact of each. `export(workdir, output, step)` does it from Python.
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

from cyclejax import bundle as bundle_lib
from cyclejax import checkpoints


def from_workdir(workdir: str | Path, step: int | None = None) -> bundle_lib.Bundle:
    """The bundle of a run's checkpoint, its directions named after the dataset's A and B."""
    config, params, stats, step = checkpoints.restore_generators(workdir, step)
    # With direction=BtoA the run trained G_A on the dataset's B images: undo the swap so that
    # 'AtoB' always means the dataset's trainA -> trainB.
    a_to_b, b_to_a = ("G_B", "G_A") if config.get("direction") == "BtoA" else ("G_A", "G_B")
    variables = {"AtoB": {"params": params[a_to_b], "batch_stats": stats[a_to_b]},
                 "BtoA": {"params": params[b_to_a], "batch_stats": stats[b_to_a]}}
    gen = bundle_lib.generator_config(config, domains=bundle_lib.domain_names(config["dataset"]),
                                      source={"workdir": str(Path(workdir).absolute()), "step": step,
                                              "dataset": config["dataset"]})
    if config.get("direction") == "BtoA":
        gen["input_nc"], gen["output_nc"] = config["output_nc"], config["input_nc"]
    return bundle_lib.Bundle(config=gen, variables=variables)


def export(workdir: str | Path, output: str | Path, step: int | None = None) -> Path:
    return bundle_lib.save(from_workdir(workdir, step), output)


def define_flags() -> None:
    """The command's flags (defined only when it runs, so the modules import together)."""
    flags.DEFINE_string("workdir", None, "the training run's --workdir", required=True)
    flags.DEFINE_string("output", None, "the bundle folder to write", required=True)
    flags.DEFINE_integer("step", None, "the checkpoint step to export (default: the latest)")


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    try:
        out = export(FLAGS.workdir, FLAGS.output, FLAGS.step)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    b = bundle_lib.load(out)
    print(f"cyclejax: wrote {out} ({', '.join(b.directions)}; {b.config['netG']}, ngf {b.config['ngf']}, "
          f"step {b.config['source']['step']})", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
