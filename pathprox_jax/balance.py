"""Function-preserving rescalings: layer-wise balancing and neuron balancing."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from pathprox_jax.prox.group import accumulation_dtype, group_norms
from pathprox_jax.units import (INPUT_BIAS, INPUT_KERNEL, OUTPUT_BIAS,
                                OUTPUT_KERNEL, UnitSpec, group_leaves)


def layer_scales(group_path_norms: jax.Array, dead_threshold: float = 1e-12
                 ) -> tuple[jax.Array, jax.Array]:
  r"""Scales that equalise the groups' path norms (PathProx paper, Appendix B).

  With ``P_g = sum_i ||w_i|| ||v_i||`` and ``P*`` their geometric mean over
  *live* groups (``P_g > dead_threshold``), walking the groups in network
  order, group ``g`` receives the scale ``c_in[g]`` from its predecessor and
  passes on ``c_out[g]``::

      A_g bias   *= c_in[g]
      B_g kernel *= c_out[g] / c_in[g]        (so P_g -> P_g c_out / c_in)
      B_g bias   *= c_out[g]

  A live group sets ``c_out = c_in P* / P_g`` (its path norm becomes ``P*``);
  a dead group passes ``c_in`` through unchanged (no finite scale can lift a
  zero path norm, and none is tried); the last group has ``c_out = 1`` so the
  network output is unchanged. The network function is preserved exactly
  (only homogeneous operations sit between ``B_g`` and ``A_{g+1}``) and all
  live groups end at ``P*``. All logs are of positive numbers, so no NaN.

  Args:
    group_path_norms: ``(G,)`` path norms in network order.
    dead_threshold: path norms at or below this are treated as dead.

  Returns:
    ``(c_in, c_out)``, each ``(G,)``.
  """
  p = jnp.asarray(group_path_norms)
  live = p > dead_threshold
  logp = jnp.log(jnp.where(live, p, 1.0))
  n_live = jnp.sum(live)
  log_target = jnp.sum(jnp.where(live, logp, 0.0)) / jnp.maximum(n_live, 1)
  step = jnp.where(live, log_target - logp, 0.0)
  log_out = jnp.cumsum(step).at[-1].set(0.0)
  log_in = jnp.concatenate([jnp.zeros((1,), log_out.dtype), log_out[:-1]])
  return jnp.exp(log_in), jnp.exp(log_out)


def _scale(x: jax.Array, factor: jax.Array) -> jax.Array:
  return (x.astype(accumulation_dtype(x.dtype)) * factor).astype(x.dtype)


def apply_layer_scales(leaves: list[Any], positions: Sequence[dict[str, int]],
                       c_in: jax.Array, c_out: jax.Array) -> list[Any]:
  """Applies :func:`layer_scales` to a flat leaf list (see ``group_leaves``)."""
  leaves = list(leaves)
  for g, pos in enumerate(positions):
    ratio = c_out[g] / c_in[g]
    for role, factor in ((INPUT_BIAS, c_in[g]), (OUTPUT_KERNEL, ratio),
                         (OUTPUT_BIAS, c_out[g])):
      if role in pos:
        leaves[pos[role]] = _scale(leaves[pos[role]], factor)
  return leaves


def group_unit_norms(leaves: list[Any], positions: Sequence[dict[str, int]]
                     ) -> list[tuple[jax.Array, jax.Array]]:
  """Per group, the kernel-only ``(||w_i||, ||v_i||)`` arrays."""
  out = []
  for pos in positions:
    w, v = leaves[pos[INPUT_KERNEL]], leaves[pos[OUTPUT_KERNEL]]
    out.append((group_norms(w, w.ndim - 1), group_norms(v, v.ndim - 2)))
  return out


def balance_layers(params: Any, units: UnitSpec,
                   dead_threshold: float = 1e-12) -> Any:
  """Layer-wise balancing of ``params`` (Appendix B); the function is unchanged.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": 4 * jnp.ones((2, 2))},
    ...      "c": {"kernel": jnp.ones((2, 2))}, "d": {"kernel": jnp.ones((2, 2))}}
    >>> spec = UnitSpec.from_pairs(p, [("a", "b"), ("c", "d")])
    >>> from pathprox_jax.objectives import path_norms
    >>> path_norms(balance_layers(p, spec), spec).round(3)
    Array([8., 8.], dtype=float32)
  """
  leaves, treedef, positions = group_leaves(units, params)
  norms = group_unit_norms(leaves, positions)
  p = jnp.stack([jnp.sum(nw * nv) for nw, nv in norms])
  c_in, c_out = layer_scales(p, dead_threshold)
  return jax.tree_util.tree_unflatten(
      treedef, apply_layer_scales(leaves, positions, c_in, c_out))


def balance_neurons(params: Any, units: UnitSpec) -> Any:
  r"""Rescales every unit to ``||w_i|| = ||v_i||`` without changing the function.

  Neural Balance Theorem (PathProx paper, Theorem 3.2): ``w_i, b_i`` are
  multiplied by ``a_i = sqrt(||v_i|| / ||w_i||)`` and ``v_i`` by ``1/a_i``;
  afterwards ``0.5 (||w_i||^2 + ||v_i||^2) = ||w_i|| ||v_i||``, so the plain
  weight decay penalty of the result equals the path-norm penalty. A unit
  with ``||v_i|| = 0`` contributes nothing, so its balanced form is
  ``w_i = b_i = 0`` (the ``a_i -> 0`` limit). A unit with ``||w_i|| = 0 <
  ||v_i||`` outputs the constant ``sigma(b_i) v_i``, which no finite scale
  balances; it is left as it is.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = {"a": {"kernel": jnp.array([[4.]])}, "b": {"kernel": jnp.array([[1.]])}}
    >>> spec = UnitSpec.from_pairs(p, [("a", "b")])
    >>> balance_neurons(p, spec)["a"]["kernel"]
    Array([[2.]], dtype=float32)
  """
  leaves, treedef, positions = group_leaves(units, params)
  leaves = list(leaves)
  for (nw, nv), pos in zip(group_unit_norms(leaves, positions), positions):
    ok = (nw > 0) & (nv > 0)
    ratio = jnp.sqrt(nv / jnp.where(ok, nw, 1.0))
    a = jnp.where(ok, ratio, jnp.where(nv > 0, 1.0, 0.0))
    inv_a = jnp.where(ok, 1.0 / jnp.where(ok, ratio, 1.0), 1.0)
    for role, factor in ((INPUT_KERNEL, a), (INPUT_BIAS, a),
                         (OUTPUT_KERNEL, inv_a)):
      if role in pos:
        x = leaves[pos[role]]
        axis = x.ndim - 2 if role == OUTPUT_KERNEL else x.ndim - 1
        shape = [1] * x.ndim
        shape[axis] = -1
        leaves[pos[role]] = _scale(x, factor.reshape(shape))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def normalize_units(params: Any, units: UnitSpec) -> Any:
  r"""Rescales every unit to ``||w_i|| = 1`` without changing the function.

  ``w_i, b_i`` are divided by ``||w_i||`` and ``v_i`` multiplied by it
  (homogeneity, as in :func:`balance_neurons`); units with ``w_i = 0`` are
  left alone. PathProx's first step projects every ``w_i`` onto the sphere
  *without* compensating in ``v_i``; from PyTorch's default initialisation
  (``||w_i|| ~ 0.58``) that scales a three-group network's logits by about
  5 in one step, and at lr 0.3 some seeds diverge (``benchmarks/RESULTS.md``).
  Normalising once at initialisation makes that first projection a no-op.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = {"a": {"kernel": jnp.array([[3.], [4.]])}, "b": {"kernel": jnp.array([[2.]])}}
    >>> normalize_units(p, UnitSpec.from_pairs(p, [("a", "b")]))["b"]["kernel"]
    Array([[10.]], dtype=float32)
  """
  leaves, treedef, positions = group_leaves(units, params)
  leaves = list(leaves)
  for (nw, _), pos in zip(group_unit_norms(leaves, positions), positions):
    live = nw > 0
    inv = jnp.where(live, 1.0 / jnp.where(live, nw, 1.0), 1.0)
    for role, factor in ((INPUT_KERNEL, inv), (INPUT_BIAS, inv),
                         (OUTPUT_KERNEL, jnp.where(live, nw, 1.0))):
      if role in pos:
        x = leaves[pos[role]]
        shape = [1] * x.ndim
        shape[x.ndim - 2 if role == OUTPUT_KERNEL else x.ndim - 1] = -1
        leaves[pos[role]] = _scale(x, factor.reshape(shape))
  return jax.tree_util.tree_unflatten(treedef, leaves)
