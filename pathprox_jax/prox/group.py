"""Group norms and the group-lasso proximal operator (Euclidean or diagonal metric).

A *group* is one index along a unit axis, possibly spread over several arrays
(a unit's output weights in two heads are one group). The operators here
take tuples of arrays with their unit axes; :func:`group_norms` and
:func:`prox_group_lasso` are the one-array forms.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import (
    accumulation_dtype,
    along,
    safe_sqrt,
    sums_of_squares,
)
from pathprox_jax.units.weights import UnitWeights


def group_norms(x: jax.Array, axis: int) -> jax.Array:
  """Euclidean norm of every slice ``x.take(k, axis)``, accumulated in >= float32.

  Differentiable everywhere: the gradient at an all-zero group is 0, not
  NaN, so penalties built on it can be minimised with plain gradient steps.

  Examples:
    >>> group_norms(jnp.array([[3., 0.], [4., 1.]]), axis=1)
    Array([5., 1.], dtype=float32)
  """
  return safe_sqrt(sums_of_squares((x,), (axis % x.ndim,)))


def unit_norms(x: UnitWeights) -> tuple[jax.Array, jax.Array]:
  """``(||w_i||, ||v_i||)`` for every unit of a group, each ``(n,)``.

  ``||w_i||^2`` sums over every input slice, ``||v_i||^2`` over every output
  slice; biases are not included (PathProx's convention).

  Examples:
    >>> x = UnitWeights.from_arrays(jnp.array([[3., 0.], [4., 1.]]),
    ...                             jnp.array([[1., 0.], [0., 0.]]))
    >>> unit_norms(x)
    (Array([5., 1.], dtype=float32), Array([1., 0.], dtype=float32))
  """
  return (
      safe_sqrt(sums_of_squares(x.w, x.w_axes)),
      safe_sqrt(sums_of_squares(x.v, x.v_axes)),
  )


def group_path_norms(norms: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
  """``(G,)`` group path norms ``P_g = sum_i ||w_i|| ||v_i||`` from per-group
  :func:`unit_norms`.

  Examples:
    >>> group_path_norms([(jnp.array([1., 2.]), jnp.array([3., 1.]))])
    Array([5.], dtype=float32)
  """
  return jnp.stack([jnp.sum(nw * nv) for nw, nv in norms])


def shrink_factors(norms: jax.Array, tau) -> jax.Array:
  """Group soft-threshold factors: ``max(1 - tau / ||x_k||, 0)`` per group (0 at 0).

  Examples:
    >>> shrink_factors(jnp.array([2., 0.5, 0.]), 1.0)
    Array([0.5, 0. , 0. ], dtype=float32)
  """
  return jnp.where(
      norms > tau, 1.0 - tau / jnp.where(norms > 0, norms, 1.0), 0.0
  )


def group_lasso_slices(
    xs: Sequence[jax.Array],
    weight_decay,
    scaling=1.0,
    *,
    axes: Sequence[int],
    norms: jax.Array | None = None,
    newton_steps: int = 20,
) -> tuple[jax.Array, ...]:
  r"""Prox of ``weight_decay * sum_k ||x_k||`` where group ``k`` spans every array's slice ``k``.

  ``argmin_y sum_j (y_j - x_j)^2 / (2 s_j) + weight_decay sum_k ||y_k||`` over all
  entries ``j`` of all arrays. With a scalar ``scaling`` it is the
  closed-form group soft threshold at ``tau = weight_decay * scaling``; with one
  array per input (broadcastable to it; the inverse of a diagonal metric
  ``d = 1 / s``) it is solved per group: ``y_k = 0`` iff ``||d x_k|| <= weight_decay``,
  else ``y_j = x_j d_j r / (d_j r + weight_decay)`` with ``r = ||y_k||`` the root of
  ``sum_j (d_j x_j / (d_j r + weight_decay))^2 = 1``. The metric is first normalised
  per group (``d / max d``, ``weight_decay min s``; same minimiser, no overflow for
  tiny ``s``) and ``newton_steps`` Newton steps on the concave form
  ``1 / ||t(r)|| = 1`` run from the lower end of the bracket
  ``[(||d x|| - weight_decay) / max d, (||d x|| - weight_decay) / min d]``, stopping early
  once no root moves by more than a few ulps
  (``docs/algorithms.md``, "Group lasso in a diagonal metric").

  Args:
    xs: the arrays of one group family.
    axes: the group (unit) axis of each array.
    weight_decay: the regularisation strength, scalar (may be traced).
    scaling: a scalar step, or a tuple with one array per input.
    norms: optional precomputed group norms (scalar ``scaling`` only).
    newton_steps: at most this many Newton iterations (metric case).

  Returns:
    The shrunk arrays, shapes and dtypes of ``xs``.

  Examples:
    >>> a, b = jnp.array([[3.], [0.1]]), jnp.array([[4., 0.]])   # unit axes 0 and 1
    >>> group_lasso_slices((a, b), 1.0, axes=(0, 1))   # unit 0: norm 5 -> 4
    (Array([[2.4],
           [0. ]], dtype=float32), Array([[3.2, 0. ]], dtype=float32))
  """
  xs, axes = tuple(xs), tuple(a % x.ndim for x, a in zip(xs, axes))
  acc = accumulation_dtype(xs[0].dtype)
  if not isinstance(scaling, (tuple, list)):
    if jnp.ndim(scaling) != 0:
      raise ValueError(
          "group_lasso_slices: an array scaling must be given as "
          "a tuple with one array per input."
      )
    if norms is None:
      norms = safe_sqrt(sums_of_squares(xs, axes))
    tau = jnp.asarray(weight_decay, acc) * jnp.asarray(scaling, acc)
    factor = shrink_factors(norms, tau)
    return tuple(
        (x.astype(acc) * along(factor, x.ndim, a)).astype(x.dtype)
        for x, a in zip(xs, axes)
    )

  def per_group(fn, arrays):  # reduce every array over its non-unit axes
    out = None
    for y, a in zip(arrays, axes):
      r = fn(y, axis=tuple(i for i in range(y.ndim) if i != a))
      out = (
          r
          if out is None
          else (jnp.minimum(out, r) if fn is jnp.min else out + r)
      )
    return out

  def bc(u, x, a):
    return along(u, x.ndim, a)

  z = tuple(x.astype(acc) for x in xs)
  s = tuple(
      jnp.broadcast_to(jnp.asarray(sc, acc), zi.shape)
      for sc, zi in zip(scaling, z)
  )
  weight_decay = jnp.asarray(weight_decay, acc)
  smin = per_group(jnp.min, s)
  live = smin > 0  # a zero step: the prox is the identity
  d = tuple(
      jnp.where(
          bc(live, si, a),
          bc(jnp.where(live, smin, 1.0), si, a) / jnp.where(si > 0, si, 1.0),
          1.0,
      )
      for si, a in zip(s, axes)
  )
  mu = weight_decay * jnp.where(live, smin, 0.0)
  dz = tuple(di * zi for di, zi in zip(d, z))
  ndz = safe_sqrt(per_group(jnp.sum, tuple(jnp.square(q) for q in dz)))
  excess = jnp.maximum(ndz - mu, 0.0)
  lo, hi = excess, excess / per_group(jnp.min, d)

  def newton(_, r):
    # Newton on the concave form 1 / ||t(r)|| = 1: converges in a few steps
    # even for ill-conditioned metrics.
    safe = tuple(
        jnp.where(den > 0, den, 1.0)
        for den in (di * bc(r, di, a) + bc(mu, di, a) for di, a in zip(d, axes))
    )
    t = tuple(q / sf for q, sf in zip(dz, safe))
    n = jnp.sqrt(per_group(jnp.sum, tuple(jnp.square(ti) for ti in t)))
    slope = per_group(
        jnp.sum,
        tuple(jnp.square(ti) * di / sf for ti, di, sf in zip(t, d, safe)),
    )
    step = (n - 1.0) * jnp.square(n) / jnp.where(slope > 0, slope, 1.0)
    return jnp.clip(r + step, lo, hi)

  def unconverged(carry):
    i, r, moved = carry
    return (i < newton_steps) & moved

  def body(carry):
    i, r, _ = carry
    new = newton(i, r)
    # Stop once no group's root moves by more than float rounding: Newton
    # converges quadratically, so the last step is below machine precision.
    moved = jnp.any(jnp.abs(new - r) > 4 * jnp.finfo(acc).eps * new)
    return i + 1, new, moved

  _, r, _ = jax.lax.while_loop(
      unconverged, body, (jnp.zeros([], jnp.int32), lo, jnp.array(True))
  )
  out = []
  for x, zi, di, a in zip(xs, z, d, axes):
    denom = di * bc(r, di, a) + bc(mu, di, a)
    y = jnp.where(
        bc(ndz > mu, di, a),
        zi * di * bc(r, di, a) / jnp.where(denom > 0, denom, 1.0),
        0.0,
    )
    out.append(jnp.where(bc(live, di, a), y, zi).astype(x.dtype))
  return tuple(out)


def prox_group_lasso(
    x: jax.Array,
    weight_decay,
    scaling=1.0,
    *,
    axis: int = 0,
    norms: jax.Array | None = None,
    newton_steps: int = 20,
) -> jax.Array:
  r"""Proximal operator of ``weight_decay * sum_k ||x_k||_2`` (group lasso), groups along ``axis``.

  The one-array form of :func:`group_lasso_slices`: with a scalar
  ``scaling`` the group soft threshold ``y_k = x_k max(1 - tau / ||x_k||,
  0)``, ``tau = weight_decay * scaling`` (PathProx, Algorithm 4.1, ``Prox_2``); with
  an array ``scaling`` broadcastable to ``x`` the prox in the diagonal
  metric ``1 / scaling`` (ProxGen, eq. 2).

  Args:
    x: the point to shrink.
    weight_decay: the regularisation strength (``lambda``), scalar, may be traced.
    scaling: scalar step, or an array broadcastable to ``x``.
    axis: the group axis.
    norms: optional precomputed ``group_norms(x, axis)`` (scalar case).
    newton_steps: at most this many Newton iterations (metric case).

  Returns:
    The shrunk array, same shape and dtype as ``x``.

  Examples:
    >>> x = jnp.array([[3., 4.], [0.1, 0.]])     # rows are groups
    >>> prox_group_lasso(x, 1.0, 1.0, axis=0)
    Array([[2.4, 3.2],
           [0. , 0. ]], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1.
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, eq. 2.
    ``docs/algorithms.md``, "Group lasso in a diagonal metric".
  """
  scaling = scaling if jnp.ndim(scaling) == 0 else (scaling,)
  return group_lasso_slices(
      (x,),
      weight_decay,
      scaling,
      axes=(axis,),
      norms=norms,
      newton_steps=newton_steps,
  )[0]
