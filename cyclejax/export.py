"""Exports a trained run's generators: `python -m cyclejax.export --workdir=DIR --output=OUT [--step=N]`.

Writes a generator bundle (`cyclejax.bundle`): both generators' parameters, their config
and a `jax.export` artifact of each. With `--push_to_hub=OWNER/REPO` it then uploads the
bundle to that Hugging Face Hub model repository (created if missing) with a model card
(`cyclejax.hub`; `pip install "cyclejax[hub]"`, and a write token in HF_TOKEN or from
`hf auth login`); translate with `--model=hf://OWNER/REPO`. From Python:
`bundle.save(bundle.from_workdir(workdir), output)`, then `hub.push(output, "OWNER/REPO")`.
"""
from __future__ import annotations

from absl import flags

from cyclejax import bundle as bundle_lib
from cyclejax import cli, hub

_WORKDIR = flags.DEFINE_string("workdir", None, "the training run's --workdir", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "the bundle folder to write", required=True)
_STEP = flags.DEFINE_integer("step", None, "the checkpoint step to export (default: the latest)")
_PUSH = flags.DEFINE_string("push_to_hub", None, "then upload the bundle to this Hugging Face Hub model repository, "
                            "OWNER/REPO (created if missing), with a model card")


def main(argv):
    del argv
    repo_id = hub.push_target(_PUSH.value) if _PUSH.value else None  # checked before the export
    b = bundle_lib.from_workdir(_WORKDIR.value, _STEP.value)
    out = bundle_lib.save(b, _OUTPUT.value)
    print(f"cyclejax: wrote {out} ({', '.join(b.directions)}; {b.config['netG']}, ngf {b.config['ngf']}, "
          f"step {b.config['source']['step']})", flush=True)
    if repo_id:
        info = hub.push(out, repo_id)
        print(f"cyclejax: pushed to {info.repo_url} (commit {info.oid}); use it as --model=hf://{repo_id} "
              f"(this push: hf://{repo_id}@{info.oid})", flush=True)


if __name__ == "__main__":
    cli.run(main)
