"""Projection of each unit's input weights onto the unit sphere."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import (
    MIN_NORM,
    safe_inverse,
    safe_sqrt,
    sums_of_squares,
)
from pathprox_jax.units.weights import UnitWeights, scale_units


def project_unit_sphere(
    x: UnitWeights,
    weight_decay=0.0,
    scaling=1.0,
    *,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    norms: jax.Array | None = None,
) -> UnitWeights:
  r"""Projects every unit's input weights onto the unit sphere.

  ``w_i <- w_i / ||w_i||``, the prox of the sphere indicator ``I_S``
  (PathProx, Lemma 4.2): ``argmin_{||u|| = 1} ||u - w_i|| = w_i / ||w_i||``.
  ``||w_i||`` sums over every input slice; the unit's input-bias entries
  are divided by the same norm, so the unit keeps its kink. Units with
  ``||w_i|| <= min_norm`` (an all-zero column) are left unchanged: zeros
  stay zero and nothing is NaN. Output weights are untouched.

  The prox signature of the package, ``prox(x, weight_decay, scaling)``;
  an indicator has no strength and no step, so both are ignored.

  Args:
    x: a group's :class:`~pathprox_jax.units.UnitWeights`.
    weight_decay, scaling: ignored (the prox of an indicator).
    include_bias_in_norm: project ``[w_i; b_i]`` (``||[w_i; b_i]|| = 1``).
    min_norm: norms at or below this are not projected.
    norms: optional precomputed kernel-only ``||w_i||``.

  Returns:
    The projected :class:`~pathprox_jax.units.UnitWeights`.

  Examples:
    >>> x = UnitWeights.from_arrays(jnp.array([[3., 0.], [4., 0.]]),
    ...                             jnp.ones((2, 1)), b=jnp.array([10., 1.]))
    >>> y = project_unit_sphere(x)
    >>> y.w[0], y.b[0]
    (Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32), Array([2., 1.], dtype=float32))

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1 and Lemma 4.2;
    ``docs/algorithms.md``, "The PathProx step".
  """
  del weight_decay, scaling
  if norms is None:
    norms = safe_sqrt(sums_of_squares(x.w, x.w_axes))
  if include_bias_in_norm and x.b:
    norms = jnp.sqrt(jnp.square(norms) + sums_of_squares(x.b, x.b_axes))
  inv = safe_inverse(norms, min_norm)
  return scale_units(x, w=inv, b=inv)
