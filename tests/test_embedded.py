"""The embedded dataset and its paired score."""
import hashlib

import numpy as np
import pytest

from cyclejax import embedded, embedded_score


def test_splits_have_the_documented_sizes_and_are_deterministic():
    a = embedded.load_split("trainA")
    assert a.shape == (800, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[:5], embedded.load_split("trainA")[:5])
    assert embedded.load_split("testB").shape == (100, 64, 64, 3)
    with pytest.raises(ValueError, match="splits"):
        embedded.load_split("valA")
    # The first images alone (a run with max_images, or a test) are those of the whole split.
    for n in (1, 12, 800, 5000):
        np.testing.assert_array_equal(embedded.load_split("trainA", n), a[:n])


# Every pixel of each split, as the recorded default runs (experiments/embedded/) and the score's
# baselines saw them: a faster renderer must draw the same images.
DIGESTS = {
    "trainA": "ec14920ef909dedd61d15357e7364a469fbd968722d2bb06cc2a6d818aa21d5e",
    "trainB": "de08bd1d2a09686c998f2f77cf8ec623b9bb04dd8a359913407b8cf92ed596f3",
    "testA": "31df47fb7051094027643aedbefd1258b9ecf7982e4de44e9e5dbd9b3ecf4d2d",
    "testB": "71ddbbcdcb51ec5d3dc95e9b55285aa0f9b6c212ccf8cd49dd3978326ce48bcb",
}


@pytest.mark.parametrize("split", sorted(DIGESTS))
def test_every_split_is_the_one_the_recorded_runs_trained_on(split):
    assert hashlib.sha256(embedded.load_split(split).tobytes()).hexdigest() == DIGESTS[split]


def test_test_split_renders_the_same_content_in_both_domains():
    A, B, masks = embedded.load_test_pairs()
    np.testing.assert_array_equal(A, embedded.load_split("testA"))
    np.testing.assert_array_equal(B, embedded.load_split("testB"))
    shapes = masks.any(axis=1)
    # Background: A is light, B dark. Shapes: B is striped (two shades), A is flat.
    assert A[~shapes].mean() > 180 and B[~shapes].mean() < 140
    # One background colour per domain (instance norm could not keep several apart).
    assert len(np.unique(A[~shapes], axis=0)) == 1 and len(np.unique(B[~shapes], axis=0)) == 1
    first = masks[0, 0] & ~masks[0, 1:].any(axis=0)
    assert len(np.unique(A[0][first].reshape(-1, 3), axis=0)) == 1
    assert len(np.unique(B[0][first].reshape(-1, 3), axis=0)) == 2


def test_no_per_pixel_colour_map_solves_it():
    """Some colour of A maps to two different colours of B (the stripes)."""
    A, B, _ = embedded.load_test_pairs()
    a = A[:10].reshape(-1, 3)
    b = B[:10].reshape(-1, 3)
    pairs = {}
    for x, y in zip(map(tuple, a), map(tuple, b)):
        pairs.setdefault(x, set()).add(y)
    assert max(len(v) for v in pairs.values()) >= 2


def test_ground_truth_scores_zero_and_baselines_do_not():
    A, B, _ = embedded.load_test_pairs()
    report = embedded_score.score(lambda x: B / 127.5 - 1, lambda x: A / 127.5 - 1, step=7)
    assert report["step"] == 7
    for d in ("AtoB", "BtoA"):
        assert report[d]["model"] == pytest.approx(0.0, abs=1e-9)
        assert report[d]["identity"] > 0.3
        assert 0.05 < report[d]["colour_transfer"] < report[d]["identity"]
    assert "ratio = model / better baseline (the default run's goal: <= 0.40 in both directions)" in \
        embedded_score.format_table(report)


def test_texture_score_ignores_stripe_phase():
    _, B, masks = embedded.load_test_pairs()
    shifted = np.roll(B, 2, axis=2)  # half a stripe period
    base = embedded_score.error(B / 255.0, B / 255.0, masks)
    moved = embedded_score.error(shifted / 255.0, B / 255.0, masks)
    flat = embedded_score.error(np.full_like(B, 128) / 255.0, B / 255.0, masks)
    assert base["error"] == 0.0
    assert moved["texture"] < 0.25 * flat["texture"]
