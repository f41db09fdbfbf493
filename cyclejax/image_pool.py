"""The official `ImagePool` (Shrivastava et al.), as a pytree updated inside the compiled step.

For each image of a batch, in order: while the pool holds fewer than `size` images, store it
and return it; once full, with probability 1/2 return a uniformly chosen stored image and put
the new one in its slot, otherwise return the new image. Size 0 (the official `--pool_size 0`)
returns its input and holds no images at all: `images` is None, since a checkpoint cannot store
an array of size zero.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ImagePool:
    images: jax.Array | None  # (size, H, W, C); None for size 0
    count: jax.Array  # int32: how many slots are filled

    @property
    def size(self) -> int:
        return 0 if self.images is None else self.images.shape[0]


def init_pool(size: int, image_shape: tuple[int, int, int], dtype=jnp.float32) -> ImagePool:
    images = jnp.zeros((size, *image_shape), dtype) if size > 0 else None
    return ImagePool(images=images, count=jnp.zeros((), jnp.int32))


def query(pool: ImagePool, images: jax.Array, key: jax.Array) -> tuple[ImagePool, jax.Array]:
    """Returns (new pool, images to show the discriminator), one image at a time as the official loop."""
    if pool.size == 0:
        return pool, images
    images = images.astype(pool.images.dtype)

    def one(pool: ImagePool, inputs):
        image, p, random_slot = inputs
        full = pool.count >= pool.size
        swap = jnp.logical_and(full, p > 0.5)
        slot = jnp.where(full, random_slot, pool.count)
        store = jnp.logical_or(jnp.logical_not(full), swap)
        stored = pool.images[slot]
        returned = jnp.where(swap, stored, image)
        new_images = pool.images.at[slot].set(jnp.where(store, image, stored))
        new_count = jnp.minimum(pool.count + 1, pool.size)
        return ImagePool(new_images, new_count), returned

    return jax.lax.scan(one, pool, (images, *draws(key, images.shape[0], pool.size)))


def draws(key: jax.Array, n: int, size: int) -> tuple[jax.Array, jax.Array]:
    """The random numbers `query` uses for a batch of `n`: per image the official
    `random.uniform(0, 1)` (a swap when > 0.5) and `random.randint(0, size - 1)` (the slot)."""
    def one(key):
        swap_key, slot_key = jax.random.split(key)
        return jax.random.uniform(swap_key), jax.random.randint(slot_key, (), 0, size)

    return jax.vmap(one)(jax.random.split(key, n))
