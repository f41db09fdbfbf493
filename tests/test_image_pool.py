"""The image pool: official semantics, inside jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclejax import checkpoints, image_pool, train_state
from cyclejax import model as model_lib
from tests.conftest import tiny_config

pytestmark = pytest.mark.numeric  # run again with the instruction set capped (.ci/run)

query = jax.jit(image_pool.query)


def _images(start, n):
    """Images whose every pixel holds their serial number, so we can tell them apart."""
    return jnp.arange(start, start + n, dtype=jnp.float32)[:, None, None, None] * jnp.ones((n, 2, 2, 1))


def test_size_zero_returns_its_input():
    pool = image_pool.init_pool(0, (2, 2, 1))
    x = _images(1, 3)
    new, out = image_pool.query(pool, x, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out, x)
    assert new.images is None and new.size == 0


def test_a_state_without_pools_is_checkpointed_and_restored(tmp_path):
    """`pool_size=0` (an official option): the run's first checkpoint used to fail inside Orbax
    ("Cannot save arrays with zero size: pool_A.images") after minutes of training."""
    config = tiny_config(pool_size=0)
    model = model_lib.build(config, steps_per_epoch=10)
    state = train_state.create(model, 0, (32, 32, 3), (32, 32, 3))
    assert state.pool_A.size == state.pool_B.size == 0
    mngr = checkpoints.manager(tmp_path, keep=1)
    checkpoints.save(mngr, state, config)
    mngr.wait_until_finished()
    restored = checkpoints.restore_latest(mngr, state, config)
    assert restored is not None and restored.pool_A.images is None
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_while_filling_it_returns_and_stores_its_inputs():
    pool = image_pool.init_pool(5, (2, 2, 1))
    pool, out = query(pool, _images(1, 3), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out, _images(1, 3))
    pool, out = query(pool, _images(4, 2), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(out, _images(4, 2))
    assert int(pool.count) == 5
    np.testing.assert_array_equal(pool.images[:, 0, 0, 0], [1, 2, 3, 4, 5])


def test_once_full_about_half_swap_for_earlier_images():
    size = 10
    pool = image_pool.init_pool(size, (2, 2, 1))
    pool, _ = query(pool, _images(1, size), jax.random.PRNGKey(0))
    swapped, n = 0, 0
    seen = set(range(1, size + 1))  # everything ever stored
    key = jax.random.PRNGKey(1)
    serial = size + 1
    for i in range(200):
        key, sub = jax.random.split(key)
        before = set(np.asarray(pool.images[:, 0, 0, 0]).astype(int).tolist())
        pool, out = query(pool, _images(serial, 1), sub)
        got = int(out[0, 0, 0, 0])
        n += 1
        if got != serial:
            swapped += 1
            assert got in before and got in seen and got < serial  # an image stored earlier
            assert serial in set(np.asarray(pool.images[:, 0, 0, 0]).astype(int).tolist())  # took its slot
        else:
            assert set(np.asarray(pool.images[:, 0, 0, 0]).astype(int).tolist()) == before  # pool unchanged
        seen.add(serial)
        serial += 1
    assert int(pool.count) == size
    assert 0.4 < swapped / n < 0.6, swapped / n


def test_a_batch_is_queried_one_image_at_a_time():
    """A batch larger than the pool: the first images fill it, and each later one either passes
    through or swaps with an image stored by an earlier image of the same batch."""
    pool = image_pool.init_pool(2, (2, 2, 1))
    pool, out = query(pool, _images(1, 20), jax.random.PRNGKey(3))
    values = np.asarray(out[:, 0, 0, 0]).astype(int)
    assert list(values[:2]) == [1, 2]
    stored = [1, 2]  # the pool's contents, replayed from what it returned
    for i, v in enumerate(values[2:], start=3):
        if v != i:
            assert v in stored, (i, v, stored)  # a swap returns an image the pool holds now
            stored[stored.index(v)] = i
    assert 0 < sum(v != i for i, v in enumerate(values, start=1)) < 18  # both cases happened
    assert sorted(np.asarray(pool.images[:, 0, 0, 0]).astype(int)) == sorted(stored)
