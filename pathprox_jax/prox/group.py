"""Group norms and the group-lasso proximal operator (Euclidean or diagonal metric)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def accumulation_dtype(dtype) -> jnp.dtype:
  """At least float32, so that bf16/f16 weights get accurate norms."""
  return jnp.promote_types(dtype, jnp.float32)


def _other_axes(ndim: int, axis: int) -> tuple[int, ...]:
  axis = axis % ndim
  return tuple(a for a in range(ndim) if a != axis)


def group_norms(x: jax.Array, axis: int) -> jax.Array:
  """Euclidean norm of every slice ``x.take(k, axis)``, accumulated in >= float32.

  Args:
    x: array of any rank >= 1.
    axis: the group axis; the result has shape ``(x.shape[axis],)``.

  Returns:
    The per-group norms. Differentiable everywhere: the gradient at an
    all-zero group is 0 (not NaN), so penalties built on it, such as
    ``path_norm_penalty``, can be minimised with plain gradient steps.

  Examples:
    >>> group_norms(jnp.array([[3., 0.], [4., 1.]]), axis=1)
    Array([5., 1.], dtype=float32)
  """
  x = x.astype(accumulation_dtype(x.dtype))
  sq = jnp.sum(jnp.square(x), axis=_other_axes(x.ndim, axis))
  # sqrt has an infinite derivative at 0: keep gradients of zero groups at 0.
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def _expand(per_group: jax.Array, ndim: int, axis: int) -> jax.Array:
  shape = [1] * ndim
  shape[axis % ndim] = -1
  return per_group.reshape(shape)


def prox_group_lasso(x: jax.Array, reg, scaling=1.0, axis: int = 0, *,
                     norms: jax.Array | None = None,
                     newton_steps: int = 20) -> jax.Array:
  r"""Proximal operator of ``reg * sum_k ||x_k||_2`` (group lasso).

  Solves ``argmin_y sum_i (y_i - x_i)^2 / (2 scaling_i) + reg sum_k ||y_k||``
  where group ``k`` is the slice ``x.take(k, axis)``.

  * Scalar ``scaling`` (Euclidean metric): the closed-form group soft
    threshold with ``tau = reg * scaling`` (PathProx paper, Algorithm 4.1,
    ``Prox_2``): ``y_k = 0`` if ``||x_k|| <= tau`` else
    ``x_k (1 - tau / ||x_k||)``.
  * Array ``scaling`` shaped like ``x`` (diagonal metric ``d = 1/scaling``,
    ProxGen with a preconditioner, ALGORITHMS.md section 4): ``y_k = 0`` iff
    ``||d x_k|| <= reg``; otherwise ``y_i = x_i d_i r / (d_i r + reg)`` with
    ``r = ||y_k||`` the root of ``sum_i (d_i x_i / (d_i r + reg))^2 = 1``,
    found by ``newton_steps`` Newton steps from the lower bound
    ``(||d x|| - reg) / max d``, clamped to the bracket
    ``[(||d x|| - reg) / max d, (||d x|| - reg) / min d]``.

  Args:
    x: the point to shrink.
    reg: the regularisation strength (``lambda``), scalar, may be traced.
    scaling: scalar step size, or an array broadcastable to ``x`` (inverse
      metric, e.g. ``lr / (sqrt(v_hat) + eps)``).
    axis: the group axis.
    norms: optional precomputed ``group_norms(x, axis)`` (Euclidean case only).
    newton_steps: Newton iterations for the metric case.

  Returns:
    The shrunk array, same shape and dtype as ``x``.

  Examples:
    >>> x = jnp.array([[3., 4.], [0.1, 0.]])     # rows are groups
    >>> prox_group_lasso(x, reg=1.0, scaling=1.0, axis=0)
    Array([[2.4, 3.2],
           [0. , 0. ]], dtype=float32)
  """
  acc = accumulation_dtype(x.dtype)
  axis = axis % x.ndim
  if jnp.ndim(scaling) == 0:
    if norms is None:
      norms = group_norms(x, axis)
    tau = jnp.asarray(reg, acc) * jnp.asarray(scaling, acc)
    safe = jnp.where(norms > 0, norms, 1.0)
    factor = jnp.where(norms > tau, 1.0 - tau / safe, 0.0)
    return (x.astype(acc) * _expand(factor, x.ndim, axis)).astype(x.dtype)

  other = _other_axes(x.ndim, axis)
  z = x.astype(acc)
  reg = jnp.asarray(reg, acc)
  s = jnp.broadcast_to(jnp.asarray(scaling, acc), z.shape)
  # Normalise the metric per group, d~ = d / max d = min s / s in (0, 1] and
  # reg~ = reg min s: same minimiser, and d z cannot overflow for tiny s.
  smin = jnp.min(s, axis=other, keepdims=True)
  live = smin > 0                       # a zero step: the prox is the identity
  d = jnp.where(live, jnp.where(live, smin, 1.0) / jnp.where(s > 0, s, 1.0), 1.0)
  mu = reg * jnp.where(live, smin, 0.0)
  dz = d * z
  ndz = jnp.sqrt(jnp.sum(jnp.square(dz), axis=other, keepdims=True))
  excess = jnp.maximum(ndz - mu, 0.0)
  lo, hi = excess, excess / jnp.min(d, axis=other, keepdims=True)

  def newton(_, r):
    # Newton on the equivalent concave form 1 / ||t(r)|| = 1, which converges
    # in a few steps even for ill-conditioned metrics.
    denom = d * r + mu
    safe = jnp.where(denom > 0, denom, 1.0)
    t = dz / safe
    n = jnp.sqrt(jnp.sum(jnp.square(t), axis=other, keepdims=True))
    slope = jnp.sum(jnp.square(t) * d / safe, axis=other, keepdims=True)
    step = (n - 1.0) * jnp.square(n) / jnp.where(slope > 0, slope, 1.0)
    return jnp.clip(r + step, lo, hi)

  r = jax.lax.fori_loop(0, newton_steps, newton, lo)
  denom = d * r + mu
  y = jnp.where(ndz > mu, z * d * r / jnp.where(denom > 0, denom, 1.0), 0.0)
  return jnp.where(live, y, z).astype(x.dtype)
