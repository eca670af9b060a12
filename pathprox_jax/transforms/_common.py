"""Helpers shared by the transforms: argument checks and the prox-as-update pattern."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from pathprox_jax.units import UnitSpec, group_leaves

ScalarOrSchedule = float | jax.Array | optax.Schedule


def check_hyperparam(name: str, value: Any, *, allow_schedule: bool = True
                     ) -> None:
  """Rejects negative, NaN or non-scalar Python/NumPy hyper-parameters early.

  Traced values (``optax.inject_hyperparams``) and schedules pass; schedules
  are checked once at step 0 in :func:`scalar_at`.
  """
  if callable(value):
    if not allow_schedule:
      raise ValueError(f"{name} must be a number, not a schedule.")
    return
  if isinstance(value, jax.core.Tracer):
    return
  if jnp.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(value)}.")
  v = float(value)
  if math.isnan(v) or v < 0:
    raise ValueError(f"{name} must be a non-negative number; got {v}.")


def check_units(units: Any) -> None:
  if not isinstance(units, UnitSpec):
    raise TypeError("`units` must be a pathprox_jax.UnitSpec (build it with "
                    f"UnitSpec.from_pairs or model.unit_spec()); got {type(units)}.")


def check_schedule(name: str, value: Any) -> None:
  """Evaluates a schedule at step 0 at init time and checks it is a scalar."""
  if callable(value):
    out = jax.eval_shape(value, jnp.zeros([], jnp.int32))
    if getattr(out, "shape", None) != ():
      raise ValueError(f"Schedule `{name}` must return a scalar; at step 0 it "
                       f"returned shape {getattr(out, 'shape', type(out))}.")


def scalar_at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
  return value(count) if callable(value) else jnp.asarray(value)


def require_params(params: Any, name: str) -> None:
  if params is None:
    raise ValueError(f"{name}: {optax.NO_PARAMS_MSG} Call "
                     "`optimizer.update(grads, state, params)`.")


def rewrite_updates(units: UnitSpec, updates: Any, params: Any,
                    new_values: Callable[[list[Any], list[dict[str, int]]], dict[int, Any]]
                    ) -> Any:
  """Applies a map ``z -> z'`` to the grouped leaves of ``z = params + updates``.

  ``new_values(z_leaves, positions)`` returns ``{leaf_index: new_z}`` for the
  leaves it changes; those updates become ``new_z - params``, every other
  update is returned untouched, so the transform composes in a chain.
  """
  u_leaves, treedef, positions = group_leaves(units, updates)
  p_leaves, _, p_positions = group_leaves(units, params)
  if p_positions != positions:
    raise ValueError("`updates` and `params` have different structures.")
  z = {}
  for pos in positions:
    for i in pos.values():
      z[i] = (p_leaves[i] + u_leaves[i].astype(p_leaves[i].dtype))
  z_leaves = [z.get(i) for i in range(len(u_leaves))]
  out = list(u_leaves)
  for i, new in new_values(z_leaves, positions).items():
    out[i] = (new - p_leaves[i]).astype(u_leaves[i].dtype)
  return jax.tree_util.tree_unflatten(treedef, out)
