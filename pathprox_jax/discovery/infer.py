"""From a per-entry unit map of a leaf to the :class:`~pathprox_jax.Slice` that describes it."""

from __future__ import annotations

import math

import numpy as np

from pathprox_jax.discovery.rules import Reject
from pathprox_jax.units.slices import Slice


def infer_slice(
    path: str,
    labels: np.ndarray,
    num_units: int,
    *,
    free_axes: tuple[int, ...] = (),
    bias: str | None = None,
    conv: bool | None = None,
    output: bool = False,
) -> Slice:
  """The slice whose unit ``i`` is exactly the entries labelled ``i``.

  The unit axis is looked for as one leaf axis, or a block ``(r, n, s)`` of
  one axis (a flatten: unit ``i`` owns every ``s`` consecutive entries of
  each of ``r`` chunks), or of several consecutive axes merged (a
  ``(in, heads, head_dim)`` kernel whose units are the ``heads * head_dim``
  features); the simplest description wins.

  Raises:
    Reject: if no such view exists (the units are permuted or interleaved
      in a way a reshape cannot express).
  """
  shape = labels.shape
  coords = np.indices(shape) if labels.ndim else np.zeros((0,))
  n = num_units
  for span in range(1, len(shape) + 1):
    for j in range(len(shape) - span + 1):
      block = shape[j : j + span]
      size = math.prod(block)
      if size % n:
        continue
      merged = (
          np.ravel_multi_index([coords[a] for a in range(j, j + span)], block)
          if span > 1
          else coords[j]
      )
      for s in _divisors(size // n):
        if np.array_equal(labels, (merged // s) % n):
          return _slice(
              path,
              shape,
              j,
              span,
              size // (n * s),
              n,
              s,
              free_axes,
              bias,
              conv,
              output,
          )
  raise Reject(
      f"the units of '{path}' (shape {shape}) are not one axis of "
      "any reshape of it (permuted or interleaved units)"
  )


def _divisors(m: int) -> list[int]:
  return [d for d in range(1, m + 1) if m % d == 0]


def _slice(
    path, shape, j, span, r, n, s, free_axes, bias, conv, output
) -> Slice:
  factors = [f for f in (r, n, s) if f > 1] or [n]
  unit = j + (1 if r > 1 else 0)
  view = tuple(shape[:j]) + tuple(factors) + tuple(shape[j + span :])
  if not output:
    return Slice(path, unit, view=None if view == shape else view)

  def to_view(a):
    if j <= a < j + span:
      raise Reject(f"'{path}': an output axis lies inside the unit block")
    return a if a < j else a - span + len(factors)

  out_axes = tuple(to_view(a) for a in free_axes)
  return Slice(
      path,
      unit,
      view=None if view == shape else view,
      bias=bias,
      out_axes=out_axes or None,
      conv=conv,
  )
