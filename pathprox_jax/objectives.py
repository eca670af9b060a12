"""Objectives and diagnostics: weight decay and path-norm penalties, sparsity, Lipschitz."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import accumulation_dtype
from pathprox_jax.prox.group import group_path_norms, unit_norms
from pathprox_jax.units import UnitSpec
from pathprox_jax.units.paths import is_kernel, leaf_index


def _sum_squares(leaves) -> jax.Array:
  return sum(
      (
          jnp.sum(jnp.square(x.astype(accumulation_dtype(x.dtype))))
          for x in leaves
      ),
      jnp.zeros([], jnp.float32),
  )


def weight_decay_penalty(params: Any) -> jax.Array:
  r"""``0.5 * sum ||K||^2`` over every kernel (:func:`~pathprox_jax.units.kernel_mask`;
  biases and norm scales excluded).

  The weight decay objective is ``F = L + lambda * weight_decay_penalty``
  (PathProx, eq. 3.1 with ``R/2``).

  Examples:
    >>> weight_decay_penalty({"fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
    Array(2., dtype=float32)
  """
  leaves, _, index = leaf_index(params)
  return 0.5 * _sum_squares(
      leaves[i] for p, i in index.items() if is_kernel(p, leaves[i])
  )


def _unit_norms(params: Any, units: UnitSpec):
  return [unit_norms(x) for x in units.split(params)[0]]


def unit_path_norms(params: Any, units: UnitSpec) -> list[jax.Array]:
  """Per group, the ``(n,)`` unit path norms ``||w_i|| ||v_i||``.

  Examples:
    >>> p = {"a": {"kernel": jnp.array([[3., 1.], [4., 0.]])},
    ...      "b": {"kernel": jnp.array([[2.], [0.]])}}
    >>> unit_path_norms(p, UnitSpec.from_pairs(p, [("a", "b")]))
    [Array([10.,  0.], dtype=float32)]
  """
  return [nw * nv for nw, nv in _unit_norms(params, units)]


def path_norms(params: Any, units: UnitSpec) -> jax.Array:
  """``(G,)`` group path norms ``P_g = sum_i ||w_i|| ||v_i||`` (kernel entries only).

  Examples:
    >>> p = {"a": {"kernel": jnp.array([[3., 1.], [4., 0.]])},
    ...      "b": {"kernel": jnp.array([[2.], [1.]])}}
    >>> path_norms(p, UnitSpec.from_pairs(p, [("a", "b")]))
    Array([11.], dtype=float32)
  """
  return group_path_norms(_unit_norms(params, units))


def path_norm_penalty(params: Any, units: UnitSpec) -> jax.Array:
  r"""The path-norm regulariser ``R~(W)`` of eq. 4.2.

  ``sum_g P_g + 0.5 * sum ||K||^2`` over kernels ``K`` in no group. The
  path-norm objective is ``G = L + lambda * path_norm_penalty``; it equals the
  weight decay objective of the neuron-balanced network
  (:func:`~pathprox_jax.balance_neurons`), which is how the paper reports
  PathProx's progress on the weight decay objective. (Exception: a unit with
  ``w_i = 0`` but ``v_i != 0`` has path norm 0 here, while no rescaling
  removes its ``||v_i||^2 / 2`` from the weight decay penalty.)

  Examples:
    >>> p = {"a": {"kernel": jnp.array([[3.], [4.]])}, "b": {"kernel": jnp.array([[2.]])},
    ...      "head": {"kernel": jnp.array([[1., 1.]])}}
    >>> path_norm_penalty(p, UnitSpec.from_pairs(p, [("a", "b")]))   # 5 * 2 + 2 / 2
    Array(11., dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, eqs. 4.2-4.3, Theorem 4.1.
  """
  leaves, _, index = leaf_index(params)
  ungrouped = _sum_squares(leaves[index[p]] for p in units.ungrouped_kernels)
  return jnp.sum(path_norms(params, units)) + 0.5 * ungrouped


class ActiveUnits(NamedTuple):
  """Result of :func:`active_units`.

  Examples:
    >>> ActiveUnits(jnp.array(0.5), jnp.array([2]), (4,)).totals
    (4,)
  """

  fraction: jax.Array  # active units / all grouped units
  counts: jax.Array  # (G,) active units per group
  totals: tuple[int, ...]  # units per group


def active_units(
    params: Any, units: UnitSpec, threshold: float = 0.0
) -> ActiveUnits:
  """Units with path norm ``||w_i|| ||v_i|| > threshold`` (paper: 0 for curves,
  ``1e-5`` for pruning decisions).

  Examples:
    >>> p = {"a": {"kernel": jnp.ones((2, 2))},
    ...      "b": {"kernel": jnp.array([[1., 1.], [0., 0.]])}}
    >>> active_units(p, UnitSpec.from_pairs(p, [("a", "b")])).fraction
    Array(0.5, dtype=float32)
  """
  counts = jnp.stack(
      [jnp.sum(u > threshold) for u in unit_path_norms(params, units)]
  )
  totals = units.num_units
  return ActiveUnits(jnp.sum(counts) / max(sum(totals), 1), counts, totals)


def jacobian_spectral_norms(
    apply_fn: Callable[[jax.Array], jax.Array], x: jax.Array
) -> jax.Array:
  r"""Local Lipschitz estimate: ``||d f(x_n) / d x_n||_2`` for each example.

  The spectral norm (largest singular value) of the input-output Jacobian
  of a single example, as in the paper's Figure 1 (middle). ``apply_fn`` maps
  a batch ``(N, ...)`` to outputs ``(N, K)``; examples are processed
  independently with ``vmap`` of a reverse-mode Jacobian.

  Examples:
    >>> f = lambda x: x @ jnp.array([[3., 0.], [0., 1.]])
    >>> jacobian_spectral_norms(f, jnp.ones((4, 2)))
    Array([3., 3., 3., 3.], dtype=float32)
  """

  def one(xi):
    jac = jax.jacrev(lambda z: apply_fn(z[None])[0])(xi)
    jac = jac.reshape(jac.shape[0], -1)
    return jnp.linalg.norm(jac, ord=2)

  return jax.vmap(one)(x)
