"""Function-preserving rescalings: layer-wise balancing, neuron balancing, normalisation.

Every function here multiplies a unit's input weights (and bias entries) by
``a > 0`` and its output weights by ``1 / a``, or, for layer-wise balancing,
moves one scale per group along a chain of groups. With positively
homogeneous operations between the maps (ReLU, leaky ReLU, max/average
pooling, identity) the network function does not change.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import DEAD_THRESHOLD, safe_inverse
from pathprox_jax.prox.group import group_path_norms, unit_norms
from pathprox_jax.units import UnitSpec, UnitWeights, scale_units

__all__ = [
    "DEAD_THRESHOLD",
    "layer_scales",
    "balance_layers_groups",
    "balance_layers",
    "balance_neurons",
    "normalize_units",
]

Norms = list[tuple[jax.Array, jax.Array]]


def layer_scales(
    group_path_norms: jax.Array,
    *,
    links: Sequence[bool] | None = None,
    dead_threshold: float = DEAD_THRESHOLD,
    live: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Scales that equalise the groups' path norms (PathProx, Appendix B).

  With ``P_g = sum_i ||w_i|| ||v_i||`` and ``P*`` their geometric mean over
  *live* groups (``P_g > dead_threshold``), walking the groups in network
  order, group ``g`` receives ``c_in[g]`` from its predecessor and passes on
  ``c_out[g]``::

      input biases   *= c_in[g]
      output kernels *= c_out[g] / c_in[g]        (P_g -> P_g c_out / c_in)
      output biases  *= c_out[g]

  A live group sets ``c_out = c_in P* / P_g`` (its path norm becomes ``P*``);
  a dead group passes ``c_in`` on unchanged; the last group has ``c_out = 1``,
  so the network output is unchanged. All logarithms are of positive
  numbers: no NaN, no inf.

  ``links[g]`` false cuts the walk between groups ``g`` and ``g + 1`` (a
  residual add or a branch sits there, where passing a scale would change
  the function): each maximal linked segment is balanced on its own, to the
  geometric mean of its own live groups, and ends with ``c_out = 1``. A
  segment of one group is left as it is.

  Args:
    group_path_norms: ``(G,)`` path norms in network order.
    dead_threshold: path norms at or below this count as dead.
    links: ``G - 1`` static flags (``None``: one chain, all linked), e.g.
      :attr:`UnitSpec.links`.
    live: optional ``(G,)`` booleans: groups to treat as dead even though
      their path norm is positive (see :func:`balance_layers_groups`).

  Returns:
    ``(c_in, c_out)``, each ``(G,)``.

  Examples:
    >>> c_in, c_out = layer_scales(jnp.array([2., 8.]))
    >>> c_out
    Array([2., 1.], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Appendix B;
    ``docs/algorithms.md``, "Layer-wise balancing".
  """
  p = jnp.asarray(group_path_norms)
  live = p > dead_threshold if live is None else live & (p > dead_threshold)
  if links is not None and not all(links):
    cuts = (
        [0] + [g + 1 for g, linked in enumerate(links) if not linked] + [len(p)]
    )
    parts = [
        layer_scales(p[a:b], dead_threshold=dead_threshold, live=live[a:b])
        for a, b in zip(cuts, cuts[1:])
    ]
    return (
        jnp.concatenate([c for c, _ in parts]),
        jnp.concatenate([c for _, c in parts]),
    )
  logp = jnp.log(jnp.where(live, p, 1.0))
  n_live = jnp.sum(live)
  log_target = jnp.sum(jnp.where(live, logp, 0.0)) / jnp.maximum(n_live, 1)
  step = jnp.where(live, log_target - logp, 0.0)
  log_out = jnp.cumsum(step).at[-1].set(0.0)
  log_in = jnp.concatenate([jnp.zeros((1,), log_out.dtype), log_out[:-1]])
  return jnp.exp(log_in), jnp.exp(log_out)


def balance_layers_groups(
    groups: Sequence[UnitWeights],
    norms: Norms,
    *,
    links: Sequence[bool] | None = None,
    dead_threshold: float = DEAD_THRESHOLD,
    prox_threshold=None,
) -> tuple[list[UnitWeights], Norms, tuple[jax.Array, jax.Array]]:
  """Layer-wise balancing of split groups, given their
  :func:`~pathprox_jax.prox.unit_norms` (``links`` as in :func:`layer_scales`).

  With ``prox_threshold`` (the ``tau = lambda * lr`` of the soft threshold
  that follows), a group whose every unit the threshold would zero after
  balancing counts as dead for this step: it gets no share of the geometric
  mean and passes scales through unchanged. Otherwise a group revived for
  one step by a small gradient on its output weights would receive a large
  scale in its input biases, be zeroed again, and keep that scale; repeated
  every step, the biases grow without bound (measured: overflow within 20
  steps of PathProx at lambda 0.1 on Task 1).

  Returns the balanced groups, their unit norms (``||w_i||`` unchanged,
  ``||v_i||`` times ``c_out / c_in``: no recomputation) and the scales
  ``(c_in, c_out)`` of :func:`layer_scales`.

  Examples:
    >>> from pathprox_jax.prox import unit_norms
    >>> p = {"a": {"kernel": jnp.ones((1, 1))}, "b": {"kernel": 4 * jnp.ones((1, 1))},
    ...      "c": {"kernel": jnp.ones((1, 1))}, "d": {"kernel": jnp.ones((1, 1))}}
    >>> groups, _ = UnitSpec.from_pairs(p, [("a", "b"), ("c", "d")]).split(p)
    >>> _, norms, (c_in, c_out) = balance_layers_groups(groups, [unit_norms(x) for x in groups])
    >>> c_out   # path norms 4 and 1 -> both 2
    Array([0.5, 1. ], dtype=float32)
  """
  p = group_path_norms(norms)
  live = p > dead_threshold
  if prox_threshold is not None:
    for _ in range(len(groups)):  # at most G groups can drop out
      c_in, c_out = layer_scales(
          p, links=links, dead_threshold=dead_threshold, live=live
      )
      live = live & jnp.stack([
          jnp.max(nv, initial=0.0) * (c_out[g] / c_in[g]) > prox_threshold
          for g, (_, nv) in enumerate(norms)
      ])
  c_in, c_out = layer_scales(
      p, links=links, dead_threshold=dead_threshold, live=live
  )
  ratio = [c_out[g] / c_in[g] for g in range(len(groups))]
  new = [
      scale_units(x, b=c_in[g], v=ratio[g], c=c_out[g])
      for g, x in enumerate(groups)
  ]
  return (
      new,
      [(nw, nv * ratio[g]) for g, (nw, nv) in enumerate(norms)],
      (c_in, c_out),
  )


def balance_layers(
    params: Any, units: UnitSpec, *, dead_threshold: float = DEAD_THRESHOLD
) -> Any:
  """Layer-wise balancing of ``params`` (Appendix B): all live groups of each
  linked segment end at the same path norm; the network function is
  unchanged where :attr:`UnitSpec.links` are right (checked by
  :func:`~pathprox_jax.discover`, assumed by hand-built specs).

  Examples:
    >>> p = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": 4 * jnp.ones((2, 2))},
    ...      "c": {"kernel": jnp.ones((2, 2))}, "d": {"kernel": jnp.ones((2, 2))}}
    >>> spec = UnitSpec.from_pairs(p, [("a", "b"), ("c", "d")])
    >>> from pathprox_jax import path_norms
    >>> path_norms(balance_layers(p, spec), spec).round(3)
    Array([8., 8.], dtype=float32)
  """
  groups, rest = units.split(params)
  new, _, _ = balance_layers_groups(
      groups,
      [unit_norms(x) for x in groups],
      links=units.links,
      dead_threshold=dead_threshold,
  )
  return units.merge(new, rest)


def _balance_neuron(x: UnitWeights) -> UnitWeights:
  nw, nv = unit_norms(x)
  ok = (nw > 0) & (nv > 0)
  ratio = jnp.sqrt(nv / jnp.where(ok, nw, 1.0))
  a = jnp.where(ok, ratio, jnp.where(nv > 0, 1.0, 0.0))
  return scale_units(x, w=a, b=a, v=jnp.where(ok, safe_inverse(ratio), 1.0))


def balance_neurons(params: Any, units: UnitSpec) -> Any:
  r"""Rescales every unit to ``||w_i|| = ||v_i||``; the function is unchanged.

  Neural Balance Theorem (PathProx, Theorem 3.2): ``w_i, b_i`` times
  ``a_i = sqrt(||v_i|| / ||w_i||)``, ``v_i`` times ``1 / a_i``; afterwards
  ``0.5 (||w_i||^2 + ||v_i||^2) = ||w_i|| ||v_i||``, so the weight decay
  penalty of the result equals the path-norm penalty. A unit with ``v_i =
  0`` contributes nothing and becomes ``w_i = b_i = 0`` (the ``a_i -> 0``
  limit); a unit with ``w_i = 0 < ||v_i||`` outputs a constant that no
  finite scale balances and is left alone.

  Examples:
    >>> p = {"a": {"kernel": jnp.array([[4.]])}, "b": {"kernel": jnp.array([[1.]])}}
    >>> balance_neurons(p, UnitSpec.from_pairs(p, [("a", "b")]))["a"]["kernel"]
    Array([[2.]], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Theorem 3.2.
  """
  return units.map_groups(params, _balance_neuron)


def _normalize(x: UnitWeights) -> UnitWeights:
  nw, _ = unit_norms(x)
  inv = safe_inverse(nw)
  return scale_units(x, w=inv, b=inv, v=jnp.where(nw > 0, nw, 1.0))


def normalize_units(params: Any, units: UnitSpec) -> Any:
  r"""Rescales every unit to ``||w_i|| = 1``; the function is unchanged.

  ``w_i, b_i`` are divided by ``||w_i||`` and ``v_i`` multiplied by it;
  units with ``w_i = 0`` are left alone. PathProx's first step projects
  every ``w_i`` onto the sphere *without* compensating in ``v_i``; from
  PyTorch's default initialisation (``||w_i|| ~ 0.58``) that scales a
  three-group network's logits by about 5 in one step, and at lr 0.3 some
  seeds diverge (``benchmarks/RESULTS.md``). Normalising once at
  initialisation makes that first projection a no-op.

  Examples:
    >>> p = {"a": {"kernel": jnp.array([[3.], [4.]])}, "b": {"kernel": jnp.array([[2.]])}}
    >>> normalize_units(p, UnitSpec.from_pairs(p, [("a", "b")]))["b"]["kernel"]
    Array([[10.]], dtype=float32)
  """
  return units.map_groups(params, _normalize)
