"""The PathProx operator for one group of homogeneous units."""

from __future__ import annotations

from typing import NamedTuple

import jax

from pathprox_jax.prox.group import group_norms, prox_group_lasso
from pathprox_jax.prox.sphere import project_unit_sphere


class UnitWeights(NamedTuple):
  """The weights of one group: input kernel ``w``, its bias ``b``, output kernel ``v``.

  ``w`` is Dense ``(in, n)`` or Conv ``(kh, kw, in, n)`` (units on the last
  axis), ``b`` is ``(n,)`` or ``None``, ``v`` is Dense ``(n, out)`` or Conv
  ``(kh, kw, n, out)`` (units on axis ``-2``).
  """
  w: jax.Array
  b: jax.Array | None
  v: jax.Array


def unit_norms(x: UnitWeights) -> tuple[jax.Array, jax.Array]:
  """Per-unit kernel norms ``(||w_i||, ||v_i||)``, each of shape ``(n,)``."""
  return group_norms(x.w, x.w.ndim - 1), group_norms(x.v, x.v.ndim - 2)


def prox_path_norm(x: UnitWeights, reg, scaling=1.0, *,
                   include_bias: bool = False, eps: float = 1e-12,
                   norms: tuple[jax.Array, jax.Array] | None = None
                   ) -> UnitWeights:
  r"""PathProx step for one group (Algorithm 4.1, lines "project" and "prox").

  Minimises ``sum_i I_S(w_i) ||v_i|| reg`` plus the proximity term (Lemma
  4.2, eq. 4.5): every unit's input weights go to the unit sphere,
  ``w_i <- y_i / ||y_i||`` (bias divided by the same norm), and its output
  weights are group-soft-thresholded, ``v_i <- Prox_2(z_i)`` with threshold
  ``reg * scaling`` (``lambda * gamma_t``). ``v`` is *not* multiplied by
  ``||y_i||``: this is a projection, not a rescaling (ALGORITHMS.md 2.3).

  With an array ``scaling`` shaped like ``v`` the shrinkage is the group prox
  in that diagonal metric (adaptive PathProx).

  Args:
    x: the group's weights after the gradient step.
    reg: ``lambda``.
    scaling: ``gamma_t`` (scalar) or the inverse metric for ``v``.
    include_bias: include the bias entry in the projected norm.
    eps: units whose input norm is ``<= eps`` are not projected.
    norms: optional precomputed :func:`unit_norms` of ``x`` (kernel only).

  Returns:
    The new :class:`UnitWeights`.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = UnitWeights(w=jnp.array([[3., 1.], [4., 0.]]), b=None,
    ...                 v=jnp.array([[2., 0.], [0., 0.01]]))
    >>> y = prox_path_norm(x, reg=0.1, scaling=1.0)
    >>> y.w
    Array([[0.6, 1. ],
           [0.8, 0. ]], dtype=float32)
    >>> y.v
    Array([[1.9, 0. ],
           [0. , 0. ]], dtype=float32)
  """
  nw, nv = unit_norms(x) if norms is None else norms
  w, b = project_unit_sphere(x.w, x.b, include_bias=include_bias, eps=eps,
                             norms=nw)
  v = prox_group_lasso(x.v, reg, scaling, axis=x.v.ndim - 2,
                       norms=nv if jax.numpy.ndim(scaling) == 0 else None)
  return UnitWeights(w, b, v)
