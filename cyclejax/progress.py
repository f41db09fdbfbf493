"""What a run shows while it trains: a progress bar (or log lines) and TensorBoard scalars.

Metrics are fetched from the device only every `log_every` steps, so the loop never waits
on the accelerator in between.
"""
from __future__ import annotations

import sys
import time

import jax
from tqdm import tqdm

from cyclejax import storage
from cyclejax.losses import METRICS
from cyclejax.tf_import import tf


class Progress:
    def __init__(self, workdir: storage.PathLike, start: int, total: int, steps_per_epoch: int, enabled: bool = True):
        self.enabled = enabled
        self.total, self.spe = total, steps_per_epoch
        self.last_step, self.last_time = start, time.perf_counter()
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.writer = tf.summary.create_file_writer(str(workdir))  # tf.io.gfile: local or gs://
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, metrics, batch_size: int, log: bool) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        if not log and step != self.total:
            return
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        img_per_s = (step - self.last_step) * batch_size / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        epoch = (step - 1) // self.spe + 1
        with self.writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(f"loss/{k}" if k in METRICS else k, v)
            tf.summary.scalar("img_per_s", img_per_s)
        losses = " ".join(f"{k}={values[k]:.3f}" for k in METRICS)
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix_str(losses)
        else:
            print(f"step {step}/{self.total} epoch {epoch} {img_per_s:.1f} img/s lr={values['lr']:.2e} {losses}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
