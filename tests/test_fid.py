"""FID and KID formulas, clean-fid's resize, and the FID Inception against its PyTorch layout."""
import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from cyclejax import fid, inception, pretrained, torch_weights
from tests.torch_inception import FIDInceptionTorch


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_frechet_distance_of_known_gaussians_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, 2.0)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Diagonal covariances: sum of (sigma1 - sigma2)^2 plus the squared mean difference.
    v1, v2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-12)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_from_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(1)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.eye(d), np.diag([1.0, 2.0, 0.5, 1.0])
    x = rng.multivariate_normal(mu1, s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    assert fid.fid_from_features(x, y) == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2), rel=0.02)


def _mmd2_unbiased_by_definition(x, y):
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_the_unbiased_mmd_computed_by_definition():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 5))
    y = rng.normal(0.3, 1.2, size=(30, 5))
    # One subset of all samples: a permutation of each set, so exactly the full estimator.
    got = fid.kernel_distance(x, y, num_subsets=1, max_subset_size=30)
    assert got == pytest.approx(_mmd2_unbiased_by_definition(x, y), rel=1e-10)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    z = rng.normal(0.5, 1.0, size=(400, 8))
    same, diff = fid.kernel_distance(x, y, num_subsets=20), fid.kernel_distance(x, z, num_subsets=20)
    # E[k] for the shift: the squared mean embedding distance is clearly above the noise.
    assert abs(same) < 0.1 * diff and diff > 0
    with pytest.raises(ValueError, match="at least 2"):
        fid.kernel_distance(x[:1], y)


def test_resize_is_pil_bicubic_on_float_channels_and_keeps_299():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    out = fid.resize(img)
    assert out.shape == (299, 299, 3) and out.dtype == np.float32
    ch = np.asarray(Image.fromarray(img[..., 1].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))
    np.testing.assert_allclose(out[..., 1], np.clip(ch, 0, 255) / 255.0, atol=1e-7)
    same = rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fid.resize(same), same / np.float32(255))
    assert fid.resize(img[..., 0]).shape == (299, 299, 3)  # grayscale repeated


@pytest.fixture(scope="module")
def torch_net():
    torch.manual_seed(0)
    net = FIDInceptionTorch().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the mapping of each is tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
    return net


def test_fid_network_layer_shapes_match_the_weight_file_layout(torch_net):
    """Every entry of the weight file's layout maps to a Flax leaf of the same size, and back."""
    sd = {k: v.numpy() for k, v in torch_net.state_dict().items()}
    variables = torch_weights.state_dict_to_variables(sd, inception.FIDInception(), 3, inception.SIZE, "layout",
                                                key_fn=inception.torch_key, ignore=("fc.",))
    n_flax = sum(np.size(a) for a in _leaves(variables))
    n_torch = sum(v.size for k, v in sd.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert n_flax == n_torch
    assert variables["params"]["Mixed_7c"]["branch3x3dbl_3a"]["conv"]["kernel"].shape == (1, 3, 384, 384)
    assert variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert sd["fc.weight"].shape == (1008, 2048)  # the classifier the file carries and FID does not use
    broken = dict(sd)
    broken["Mixed_6b.branch7x7_2.conv.weight"] = np.zeros((128, 128, 7, 1), np.float32)
    with pytest.raises(torch_weights.ConversionError, match="Mixed_6b.branch7x7_2.conv.weight has shape"):
        torch_weights.state_dict_to_variables(broken, inception.FIDInception(), 3, inception.SIZE, "layout",
                                        key_fn=inception.torch_key, ignore=("fc.",))


def _leaves(tree):
    import jax
    return jax.tree_util.tree_leaves(tree)


@pytest.mark.slow
def test_fid_network_features_match_pytorch(torch_net, tmp_path):
    path = tmp_path / pretrained.INCEPTION_FILE
    torch.save(torch_net.state_dict(), path)
    variables = inception.load_weights(path)
    x = np.random.default_rng(5).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)
    ours = inception.features(variables, x)
    with torch.no_grad():
        theirs = torch_net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).double().numpy()
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    # The .npz form for machines without torch gives the same variables.
    inception.save_npz(path, tmp_path / "w.npz")
    np.testing.assert_array_equal(inception.features(inception.load_weights(tmp_path / "w.npz"), x), ours)


def test_missing_weights_say_how_to_download(tmp_path):
    with pytest.raises(inception.MissingWeights, match="leave out --inception_weights to download them once.*https://github.com/mseitzer"):
        inception.load_weights(tmp_path / "nope.pth")


def test_random_weights_fit_the_weight_file_layout_and_give_varied_finite_features(torch_net):
    """`--inception_weights=random` (drawn with NumPy, not `net.init`): every variable of the
    weight file's layout, in float32, and features that differ between images and seeds."""
    import jax

    sd = {k: v.numpy() for k, v in torch_net.state_dict().items()}
    layout = torch_weights.state_dict_to_variables(sd, inception.FIDInception(), 3, inception.SIZE, "layout",
                                                   key_fn=inception.torch_key, ignore=("fc.",))
    random = inception.init_random(0)
    assert jax.tree_util.tree_structure(random) == jax.tree_util.tree_structure(layout)
    for a, b in zip(jax.tree_util.tree_leaves(random), jax.tree_util.tree_leaves(layout)):
        assert a.shape == b.shape and a.dtype == np.float32
    x = np.random.default_rng(6).uniform(0, 1, (2, 299, 299, 3)).astype(np.float32)
    f0, f1 = inception.features(random, x), inception.features(inception.init_random(1), x)
    assert np.isfinite(f0).all() and f0.std() > 0
    assert np.abs(f0[0] - f0[1]).max() > 1e-3 * np.abs(f0).max()  # the images are told apart
    assert not np.allclose(f0, f1)  # another seed, other weights
