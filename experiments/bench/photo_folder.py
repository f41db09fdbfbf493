"""Writes the input benchmark's folder: `python experiments/bench/photo_folder.py OUT [N]`.

N (default 200) JPEGs of 600x400 a domain in OUT/trainA and OUT/trainB: smooth colour waves
with fine noise, quality 90, about 65 KB each (what a phone photo downscaled to 600x400
weighs), so decoding costs what it costs on photos. Then:
`python -m cyclejax.bench --input --dataset=OUT --batch=1 --batches=300`.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def main(out: str, n: int = 200) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:400, 0:600].astype(np.float32)
    for split in ("trainA", "trainB"):
        (Path(out) / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.stack([128 + 100 * np.sin(x / (37 + i % 13) + i), 128 + 100 * np.cos(y / (23 + i % 7)),
                             128 + 60 * np.sin((x + y) / 51)], -1)
            img = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).filter(ImageFilter.SMOOTH).save(Path(out) / split / f"{i:03d}.jpg", quality=90)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
