"""Helpers shared by the transforms: argument checks and the prox-as-update pattern."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from pathprox_jax.units import UnitSpec, fmt, group_leaves, normalize_path

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
  if not math.isfinite(v) or v < 0:
    raise ValueError(f"{name} must be a non-negative finite number; got {v}.")


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
    raise ValueError(f"{name} needs the current params, but you are not "
                     "passing `params`: call "
                     "`optimizer.update(grads, state, params)`.")


def check_update_args(units: UnitSpec, updates: Any, params: Any,
                      name: str) -> None:
  """Trace-time checks of ``update(updates, state, params)`` (no run-time cost).

  ``params`` must still match the spec, and ``updates`` must have the
  structure and leaf shapes of ``params``; errors name the first bad path.
  """
  require_params(params, name)
  units.check(params, where=f"params passed to {name}.update")
  def shapes(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {fmt(normalize_path(k)): jnp.shape(x) for k, x in flat}

  u_shapes, p_shapes = shapes(updates), shapes(params)
  if u_shapes.keys() != p_shapes.keys():
    raise ValueError(
        f"{name}: the updates/gradients do not have the structure of the "
        f"params. Only in updates: {sorted(u_shapes.keys() - p_shapes.keys()) or 'none'}; "
        f"only in params: {sorted(p_shapes.keys() - u_shapes.keys()) or 'none'}.")
  for path, shape in u_shapes.items():
    if shape != p_shapes[path]:
      raise ValueError(
          f"{name}: the update for '{path}' has shape {shape} but the param "
          f"has shape {p_shapes[path]}.")


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
