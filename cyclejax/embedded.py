"""The embedded dataset: two domains of generated 64x64 scenes, made in a fraction of a second.

Content (what a translation must keep): one to three shapes (disc, square, triangle) at
random places and sizes, each of a colour from a fixed palette drawn with unequal
probabilities. Appearance (what it must change):

- domain A: flat shapes on a light background;
- domain B: the same content at dusk: the background darkened and tinted blue, and every
  shape filled with diagonal stripes of its colour and a darker shade (period 4 pixels).

The palette is kept across domains and its colours are drawn with unequal, distinct
probabilities, so the mapping is identifiable from unpaired data: a discriminator sees any
permutation of the colours. The texture makes sure no per-pixel colour map solves it.
Each domain has one background colour: instance normalisation removes each image's mean
colour, so a generator cannot tell several background colours of one domain apart well
enough to keep them (with three, the B->A generator mapped every background to the most
frequent one; experiments/embedded/README.md).
Train splits draw A and B contents independently (unpaired); the test split renders the
same contents in both domains, so translations are scored against ground truth
(`cyclejax.embedded_score`).
"""
from __future__ import annotations

import numpy as np

SIZE = 64
SHAPE_COLOURS = np.array([[0.85, 0.15, 0.15], [0.15, 0.65, 0.2], [0.2, 0.3, 0.9], [0.95, 0.8, 0.1]])
SHAPE_PROBS = np.array([0.4, 0.3, 0.2, 0.1])
BACKGROUND = np.array([0.95, 0.9, 0.72])
DUSK_SCALE, DUSK_TINT = 0.5, np.array([0.0, 0.03, 0.12])
STRIPE_PERIOD, STRIPE_SHADE = 4, 0.5
SPLITS = {"trainA": (800, 1), "trainB": (800, 2), "testA": (100, 3), "testB": (100, 3)}


def _contents(n: int, seed: int, size: int = SIZE, first: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background colours (n, 3), shape masks (n, 3, H, W) and shape colours (n, 3, 3).

    `first`: masks (and the rest) of the first `first` images only; every image's draws are
    made as for all n, so image i is the same whatever `first` is.
    """
    rng = np.random.default_rng(seed)
    bg = np.broadcast_to(BACKGROUND, (n, 3))
    colours = SHAPE_COLOURS[rng.choice(len(SHAPE_COLOURS), (n, 3), p=SHAPE_PROBS)]
    count = rng.integers(1, 4, n)
    kind = rng.integers(0, 3, (n, 3))
    radius = rng.uniform(0.12, 0.24, (n, 3)) * size
    cy = rng.uniform(0.2, 0.8, (n, 3)) * size
    cx = rng.uniform(0.2, 0.8, (n, 3)) * size
    keep = slice(0, n if first is None else min(first, n))
    bg, colours, count, kind, radius, cy, cx = (a[keep] for a in (bg, colours, count, kind, radius, cy, cx))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    masks = np.zeros((len(count), 3, size, size), bool)
    for k in range(3):  # one shape slot at a time, each image's shape only: a fraction of the memory
        for shape in range(3):
            i = np.flatnonzero((kind[:, k] == shape) & (k < count))
            dy = y[None] - cy[i, k, None, None]
            dx = x[None] - cx[i, k, None, None]
            r = radius[i, k, None, None]
            if shape == 0:  # disc
                masks[i, k] = dx**2 + dy**2 <= r**2
            elif shape == 1:  # square
                masks[i, k] = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
            else:  # triangle
                masks[i, k] = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    return bg, masks, colours


def _render(bg, masks, colours, domain: str, size: int = SIZE) -> np.ndarray:
    """Float images (n, H, W, 3) in [0, 1]; later shapes cover earlier ones."""
    n = bg.shape[0]
    top = np.full((n, size, size), -1)  # which shape slot each pixel shows (-1: the background)
    for k in range(masks.shape[1]):
        top[masks[:, k]] = k
    if domain == "A":
        img = np.broadcast_to(bg[:, None, None, :], (n, size, size, 3)).copy()
        shade = np.ones((size, size, 1))
    else:
        dusk = np.clip(bg * DUSK_SCALE + DUSK_TINT, 0, 1)
        img = np.broadcast_to(dusk[:, None, None, :], (n, size, size, 3)).copy()
        y, x = np.mgrid[0:size, 0:size]
        dark = ((x + y) % STRIPE_PERIOD) >= STRIPE_PERIOD // 2
        shade = np.where(dark, STRIPE_SHADE, 1.0)[:, :, None]
    image, row, col = np.nonzero(top >= 0)
    img[image, row, col] = colours[image, top[image, row, col]] * shade[row, col]
    return img


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8)


def load_split(split: str, max_images: int = 0) -> np.ndarray:
    """uint8 images (n, 64, 64, 3) of `split` in trainA, trainB, testA, testB; the first
    `max_images` of them when that is not 0 (the same images, made alone)."""
    if split not in SPLITS:
        raise ValueError(f"the embedded dataset has splits {sorted(SPLITS)}, not {split!r}")
    n, seed = SPLITS[split]
    bg, masks, colours = _contents(n, seed, first=max_images or None)
    return to_uint8(_render(bg, masks, colours, split[-1]))


def load_test_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paired test split: uint8 A, uint8 B (same contents) and shape masks (n, 3, H, W)."""
    n, seed = SPLITS["testA"]
    bg, masks, colours = _contents(n, seed)
    return to_uint8(_render(bg, masks, colours, "A")), to_uint8(_render(bg, masks, colours, "B")), masks
