"""Trains a CycleGAN: `python -m cyclejax.train [--workdir=DIR] [--config=CONFIG.py[:VARIANTS]] [--config.KEY=VALUE ...]`.

With no flags it trains the quick-start config (`cyclejax/configs/default.py`) on the
embedded dataset into a new folder under ./runs/ and scores the result. Running the same
command on the same workdir resumes from its latest checkpoint. The run itself is
`cyclejax.training.train_and_evaluate(config, workdir)`, imported once the flags have parsed and the
config is checked: a mistyped flag, config key or value is reported in about a second, before
TensorFlow and Orbax load.
"""
from __future__ import annotations

from pathlib import Path

import jax
from absl import flags

from cyclejax import cli, config_check, parallel

_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and samples go (default: a new ./runs/<time>)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs outside TPU VMs (GPU clusters)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "with --coordinator_address: how many processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "with --coordinator_address: this process's index")
_CONFIG = cli.define_config("config", str(Path(__file__).parent / "configs" / "default.py"),
                            "a config file[:variants]; override keys with --config.KEY=VALUE")


def main(argv):
    del argv
    config = cli.config_value(_CONFIG)
    parallel.initialize_processes(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config_check.validate(config, jax.device_count(), jax.process_count())  # again in train_and_evaluate
    from cyclejax import training  # TensorFlow (its input pipeline) and Orbax: seconds to import
    is_main = jax.process_index() == 0
    if jax.process_count() > 1 and not _WORKDIR.value:
        cli.fail("a run over several processes needs --workdir, a path every host reaches (e.g. gs://bucket/run)")
    workdir = _WORKDIR.value or training.default_workdir()
    if is_main:
        print(f"cyclejax: training {config.dataset} into {workdir} on {jax.device_count()} devices, "
              f"{jax.process_count()} process(es)", flush=True)
    result = training.train_and_evaluate(config, workdir)
    if is_main and not result["preempted"]:
        print(f"cyclejax: done; see {workdir} (tensorboard --logdir {workdir})", flush=True)


if __name__ == "__main__":
    cli.run(main)
