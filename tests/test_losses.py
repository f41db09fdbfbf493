"""The losses against values computed by hand in float64 numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclejax import losses

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)

rng = np.random.default_rng(0)
PRED = rng.normal(size=(2, 5, 5, 1)) * 2


@pytest.mark.parametrize("real", [True, False])
def test_lsgan_is_mse_against_one_or_zero(real):
    t = 1.0 if real else 0.0
    expected = np.mean((PRED - t) ** 2)
    assert float(losses.gan_loss(jnp.asarray(PRED, jnp.float32), real, "lsgan")) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("real", [True, False])
def test_vanilla_is_binary_cross_entropy_on_logits(real):
    p = 1 / (1 + np.exp(-PRED))
    expected = -np.mean(np.log(p)) if real else -np.mean(np.log(1 - p))
    assert float(losses.gan_loss(jnp.asarray(PRED, jnp.float32), real, "vanilla")) == pytest.approx(expected, rel=1e-6)


def test_vanilla_is_stable_for_large_logits():
    big = jnp.array([80.0, -80.0])
    assert float(losses.gan_loss(big, True, "vanilla")) == pytest.approx(40.0, rel=1e-6)


@pytest.mark.parametrize("real, sign", [(True, -1), (False, 1)])
def test_wgangp_is_signed_mean(real, sign):
    assert float(losses.gan_loss(jnp.asarray(PRED, jnp.float32), real, "wgangp")) == pytest.approx(sign * PRED.mean(), rel=1e-6)


def test_unknown_gan_mode_is_refused():
    with pytest.raises(ValueError, match="gan_mode must be one of"):
        losses.gan_loss(jnp.zeros(3), True, "hinge")


def test_l1_is_mean_absolute_difference():
    a, b = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
    assert float(losses.l1(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))) == pytest.approx(np.mean(np.abs(a - b)), rel=1e-6)


def test_gradient_penalty_of_a_quadratic_critic():
    """D(x) = sum(w * x^2) per sample has gradient 2 w x: the penalty follows in closed form."""
    real = rng.normal(size=(3, 4, 4, 2))
    fake = rng.normal(size=(3, 4, 4, 2))
    w = rng.normal(size=(4, 4, 2))
    key = jax.random.PRNGKey(5)
    critic = lambda x: jnp.sum(jnp.asarray(w, jnp.float32) * x**2, axis=(1, 2, 3))  # noqa: E731
    ours = float(losses.gradient_penalty(critic, jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32), key))
    alpha = np.asarray(jax.random.uniform(key, (3, 1, 1, 1)), np.float64)
    x = alpha * real + (1 - alpha) * fake
    grads = (2 * w * x).reshape(3, -1)
    expected = 10.0 * np.mean((np.linalg.norm(grads + 1e-16, axis=1) - 1.0) ** 2)
    assert ours == pytest.approx(expected, rel=1e-5)
