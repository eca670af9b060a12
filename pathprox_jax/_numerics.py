"""Numerical building blocks shared by every operator: accumulation dtype,
zero-safe square roots, per-unit sums of squares and per-unit scaling."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

MIN_NORM = 1e-12
"""Default floor on ``||w_i||``: units at or below it are not projected."""

DEAD_THRESHOLD = 1e-12
"""Default floor on a group's path norm: at or below it balancing treats the
group as dead."""


def accumulation_dtype(dtype) -> jnp.dtype:
  """At least float32, so that bfloat16/float16 weights get accurate norms."""
  return jnp.promote_types(dtype, jnp.float32)


def safe_sqrt(sq: jax.Array) -> jax.Array:
  """``sqrt`` with value and gradient 0 at 0 (``sqrt'(0)`` is infinite)."""
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def safe_inverse(x: jax.Array, floor=0.0) -> jax.Array:
  """``1 / x`` where ``x > floor``, else 1 (nothing is divided by ~0)."""
  big = x > floor
  return jnp.where(big, 1.0 / jnp.where(big, x, 1.0), 1.0)


def along(per_unit, ndim: int, axis: int) -> jax.Array:
  """Reshapes a ``(n,)`` vector (or a scalar) to broadcast along ``axis``."""
  per_unit = jnp.asarray(per_unit)
  if per_unit.ndim == 0:
    return per_unit
  shape = [1] * ndim
  shape[axis] = -1
  return per_unit.reshape(shape)


def sums_of_squares(
    arrays: Sequence[jax.Array], axes: Sequence[int]
) -> jax.Array:
  """``(n,)``: per unit, the sum of squares over every array's other axes.

  Unit ``i`` of array ``k`` is the slice ``arrays[k].take(i, axes[k])``;
  the sums of all arrays are added. Accumulated in at least float32.
  """
  total = None
  for x, axis in zip(arrays, axes):
    x = x.astype(accumulation_dtype(x.dtype))
    s = jnp.sum(
        jnp.square(x), axis=tuple(a for a in range(x.ndim) if a != axis)
    )
    total = s if total is None else total + s
  if total is None:
    raise ValueError("sums_of_squares needs at least one array.")
  return total


def scale(x: jax.Array, factor) -> jax.Array:
  """``x * factor`` computed in the accumulation dtype, cast back to ``x``'s."""
  return (x.astype(accumulation_dtype(x.dtype)) * factor).astype(x.dtype)
