"""float32 results judged against float64 truth: no further from it than another float32
implementation on the same machine and inputs is (times a small factor), plus a floor of a
few float32 units. The bound is measured where the test runs, so it holds on every CPU kind."""
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def assert_as_close_as(got, reference, truth, factor: float = 4.0, floor_ulps: float = 16.0, what: str = ""):
    """max |got - truth| <= factor * max |reference - truth| + floor_ulps * eps32 * max |truth|."""
    got, reference, truth = (np.asarray(a, np.float64) for a in (got, reference, truth))
    assert got.shape == truth.shape == reference.shape, (what, got.shape, reference.shape, truth.shape)
    error, reference_error = np.abs(got - truth).max(), np.abs(reference - truth).max()
    bound = factor * reference_error + floor_ulps * EPS32 * np.abs(truth).max()
    assert error <= bound, f"{what}: error {error:.3g} > {factor} x {reference_error:.3g} + floor = {bound:.3g}"
