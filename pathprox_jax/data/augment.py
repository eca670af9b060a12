"""CIFAR-style augmentation in JAX: padded random crop + horizontal flip."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["random_crop_flip"]


@functools.partial(jax.jit, static_argnames=("pad",))
def random_crop_flip(
    key: jax.Array,
    images: jax.Array,
    pad: int = 4,
    fill: jax.typing.ArrayLike = 0.0,
) -> jax.Array:
  """Randomly crops each image from a padded copy and flips half of them.

  Each image of the NHWC batch is padded by ``pad`` pixels on every side
  with the constant ``fill``, an ``H x W`` window is cut at a uniformly
  random offset in ``[0, 2 * pad]`` along each axis, and the result is
  mirrored left-right with probability 1/2. Offsets and flips are drawn
  independently per image from ``key``; the same key gives the same output.
  The function is jitted (``pad`` is static) and also works inside other
  jitted code.

  Note that the loaders return *normalised* images, where ``fill=0.0`` is the
  dataset mean colour. To pad with black as in un-normalised pipelines, pass
  ``fill=-mean / std`` per channel (e.g. from
  :data:`pathprox_jax.data.NORMALIZATION`).

  Args:
      key: PRNG key.
      images: Batch of shape ``(N, H, W, C)``.
      pad: Padding in pixels (static); ``0`` means flip only.
      fill: Padding value, a scalar or an array broadcastable to ``(C,)``.

  Returns:
      Augmented batch with the shape and dtype of ``images``.

  Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((8, 32, 32, 3))
      >>> random_crop_flip(jax.random.key(0), x).shape
      (8, 32, 32, 3)
  """
  n, h, w, c = images.shape
  key_crop, key_flip = jax.random.split(key)
  offsets = jax.random.randint(key_crop, (n, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(key_flip, 0.5, (n,))
  fill_c = jnp.broadcast_to(jnp.asarray(fill, images.dtype), (c,))
  canvas = jnp.broadcast_to(fill_c, (n, h + 2 * pad, w + 2 * pad, c))
  padded = jax.lax.dynamic_update_slice(canvas, images, (0, pad, pad, 0))

  def crop_one(
      image: jax.Array, offset: jax.Array, flip: jax.Array
  ) -> jax.Array:
    window = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
    return jnp.where(flip, window[:, ::-1, :], window)

  return jax.vmap(crop_one)(padded, offsets, flips)
