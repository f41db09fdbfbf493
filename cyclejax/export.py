"""Exports a trained run's generators: `python -m cyclejax.export --workdir=DIR --output=OUT [--step=N]`.

Writes a generator bundle (`cyclejax.bundle`): both generators' parameters, their config
and a `jax.export` artifact of each. From Python: `bundle.save(bundle.from_workdir(workdir), output)`.
"""
from __future__ import annotations

from absl import flags

from cyclejax import bundle as bundle_lib
from cyclejax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "the training run's --workdir", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "the bundle folder to write", required=True)
_STEP = flags.DEFINE_integer("step", None, "the checkpoint step to export (default: the latest)")


def main(argv):
    del argv
    b = bundle_lib.from_workdir(_WORKDIR.value, _STEP.value)
    out = bundle_lib.save(b, _OUTPUT.value)
    print(f"cyclejax: wrote {out} ({', '.join(b.directions)}; {b.config['netG']}, ngf {b.config['ngf']}, "
          f"step {b.config['source']['step']})", flush=True)


if __name__ == "__main__":
    cli.run(main)
