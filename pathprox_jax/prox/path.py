"""The PathProx operator for one group of homogeneous units."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import MIN_NORM
from pathprox_jax.prox.group import group_lasso_slices, unit_norms
from pathprox_jax.prox.sphere import project_unit_sphere
from pathprox_jax.units.weights import UnitWeights


def prox_path_norm(
    x: UnitWeights,
    weight_decay,
    scaling=1.0,
    *,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    norms: tuple[jax.Array, jax.Array] | None = None,
) -> UnitWeights:
  r"""The PathProx proximal step for one group: project ``w``, shrink ``v``.

  The prox of ``weight_decay * sum_i ||v_i|| + sum_i I_S(w_i)`` (PathProx, Lemma
  4.2, eq. 4.5), i.e. Algorithm 4.1's "project" and "prox" lines:

  * ``w_i <- w_i / ||w_i||`` over every input slice (bias entries divided
    by the same norm; :func:`~pathprox_jax.prox.project_unit_sphere`);
  * ``v_i <- v_i max(1 - tau / ||v_i||, 0)`` over every output slice, with
    ``tau = weight_decay * scaling`` (``lambda * gamma_t``).

  ``v`` is *not* multiplied by ``||w_i||``: this is a projection, not a
  function-preserving rescaling. With ``scaling`` a tuple of arrays (one per
  output slice, the inverse of a diagonal metric) the shrinkage is the group
  prox in that metric (adaptive PathProx).

  Args:
    x: the group's weights after the gradient step.
    weight_decay: ``lambda``.
    scaling: ``gamma_t`` (scalar), or one inverse-metric array per output
      slice (an array alone is accepted for a single output slice).
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    min_norm: units with ``||w_i|| <= min_norm`` are not projected.
    norms: optional precomputed :func:`~pathprox_jax.prox.unit_norms` of ``x``.

  Returns:
    The new :class:`~pathprox_jax.units.UnitWeights`.

  Examples:
    >>> x = UnitWeights.from_arrays(jnp.array([[3., 1.], [4., 0.]]),
    ...                             jnp.array([[2., 0.], [0., 0.01]]))
    >>> y = prox_path_norm(x, 0.1, 1.0)
    >>> y.w[0]
    Array([[0.6, 1. ],
           [0.8, 0. ]], dtype=float32)
    >>> y.v[0]
    Array([[1.9, 0. ],
           [0. , 0. ]], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1, Lemma 4.2;
    ``docs/algorithms.md``, "The PathProx step".
  """
  nw, nv = unit_norms(x) if norms is None else norms
  y = project_unit_sphere(
      x, include_bias_in_norm=include_bias_in_norm, min_norm=min_norm, norms=nw
  )
  scalar = not isinstance(scaling, (tuple, list)) and jnp.ndim(scaling) == 0
  if not scalar and not isinstance(scaling, (tuple, list)):
    scaling = (scaling,)
  v = group_lasso_slices(
      x.v, weight_decay, scaling, axes=x.v_axes, norms=nv if scalar else None
  )
  return y.replace(v=v)
