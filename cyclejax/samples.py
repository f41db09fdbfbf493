"""Image grids of translations (real_A, fake_B, rec_A, real_B, fake_A, rec_B) as PNG and in TensorBoard."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from cyclejax import input_pipeline, storage
from cyclejax.model import apply_train_mode
from cyclejax.tf_import import tf

ROWS = 4


class SampleWriter:
    """Translates the same few test images every time, so successive grids are comparable."""

    def __init__(self, workdir: storage.PathLike, images_A, images_B, config, model, writer):
        self.dir = storage.resolve(workdir) / "samples"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = writer  # the run's one TensorBoard writer (Progress.writer)
        pick = lambda imgs: [imgs[i] for i in np.linspace(0, len(imgs) - 1, ROWS).astype(int)]  # noqa: E731
        self.real_A = input_pipeline.eval_images(pick(images_A), config)
        self.real_B = input_pipeline.eval_images(pick(images_B), config)

        @jax.jit
        def translate(params, batch_stats, real_A, real_B):
            run = lambda k, x: apply_train_mode(getattr(model, k), params[k], batch_stats[k], x)  # noqa: E731
            fake_B = run("G_A", real_A)
            fake_A = run("G_B", real_B)
            return [real_A, fake_B, run("G_B", fake_B), real_B, fake_A, run("G_A", fake_A)]

        self.translate = translate

    def grid(self, state) -> np.ndarray:
        cols = self.translate(state.translation_params, state.batch_stats,  # the generators' average, where kept
                              jnp.asarray(self.real_A), jnp.asarray(self.real_B))
        cols = [np.asarray(jax.device_get(c)) for c in cols]
        h = max(c.shape[1] for c in cols)
        rows = [np.concatenate([np.pad(c[r], ((0, h - c.shape[1]), (0, 2), (0, 0)), constant_values=1) for c in cols], 1)
                for r in range(self.real_A.shape[0])]
        img = np.concatenate(rows, 0)
        return np.clip((img + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def write(self, step: int, state):
        img = self.grid(state)
        path = self.dir / f"step_{step:08d}.png"
        storage.write_png(path, img)
        with self.writer.as_default(step=step):
            tf.summary.image("real_A|fake_B|rec_A|real_B|fake_A|rec_B", img[None], step=step)
        self.writer.flush()
        return path
