"""FID and KID between two sets of images, with clean-fid's conventions.

- Resize: each uint8 image to 299x299 with PIL's bicubic filter on float32 channels,
  clipped to [0, 255] and not quantised back to uint8 (clean-fid's "clean" mode; images
  already 299x299 are left as they are). Grayscale is repeated to three channels.
- Features: the 2048-d pool3 output of pytorch-fid's FID Inception (`cyclejax.inception`).
- FID: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64, with the covariances'
  unbiased estimate (numpy's cov, as clean-fid and pytorch-fid).
- KID: the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
  over 100 subsets of min(n1, n2, 1000) features drawn without replacement (clean-fid's
  `kernel_distance`); reported as is (clean-fid prints it unscaled too).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from cyclejax import inception


def resize(image: np.ndarray, size: int = inception.SIZE) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (size, size, 3) in [0, 1], clean-fid's resize."""
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    image = image[..., :3]
    if image.shape[:2] == (size, size):
        return image.astype(np.float32) / 255.0
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
        (size, size), resample=Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255) / 255.0


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians.

    tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric S1^(1/2) S2 S1^(1/2), which has the same eigenvalues and, unlike S1 S2, gives
    real ones in floating point.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ s2 @ root1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*statistics(f1), *statistics(f2))


def kernel_distance(f1: np.ndarray, f2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID: the mean over subsets of the unbiased MMD^2 with the cubic polynomial kernel."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    d = f1.shape[1]
    m = min(len(f1), len(f2), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images on each side, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += within - 2.0 * kxy.mean()
    return float(total / num_subsets)


def image_features(variables: dict, images, batch: int = 50) -> np.ndarray:
    """Inception features of uint8 images of any sizes (resized one at a time, clean-fid's way)."""
    out = []
    for i in range(0, len(images), batch):
        chunk = np.stack([resize(np.asarray(im)) for im in images[i:i + batch]])
        out.append(inception.features(variables, chunk, batch, pad=len(images) > batch))
    return np.concatenate(out) if out else np.zeros((0, inception.FEATURES))
