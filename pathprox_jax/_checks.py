"""Argument checks shared by every public function: early, clear ``ValueError``s.

Static values are checked at construction; traced values (under
``optax.inject_hyperparams`` and ``jit``) and schedules pass, and schedules
are checked once, abstractly, at ``init`` (:func:`check_schedule`).
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pathprox_jax.units import UnitSpec
from pathprox_jax.units.paths import path_str

ScalarOrSchedule = float | jax.Array | optax.Schedule


def is_traced(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def check_number(
    name: str,
    value: Any,
    lo: float = 0.0,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = True,
    schedule: bool = False,
) -> None:
  """Raises ``ValueError`` unless a static scalar ``value`` lies in the interval.

  The default interval ``[0, inf)`` is "a non-negative finite number".
  Traced values pass. A callable passes if ``schedule`` (it is checked at
  ``init`` by :func:`check_schedule`) and is rejected otherwise.
  """
  if callable(value):
    if not schedule:
      raise ValueError(
          f"{name} must be a number, not a schedule or function; got {value!r}."
      )
    return
  if is_traced(value):
    return
  try:
    arr = np.asarray(value)
  except Exception:  # noqa: BLE001 - any unconvertible object
    arr = np.asarray(None)
  if (
      isinstance(value, bool)
      or arr.dtype == object
      or not (
          jnp.issubdtype(arr.dtype, jnp.floating)
          or jnp.issubdtype(arr.dtype, jnp.integer)
      )
  ):
    raise ValueError(f"{name} must be a real number; got {value!r}.")
  if arr.ndim != 0:
    raise ValueError(f"{name} must be a scalar; got shape {arr.shape}.")
  v = float(value)
  bad = (
      math.isnan(v)
      or v < lo
      or v > hi
      or (lo_open and v == lo)
      or (hi_open and v == hi)
  )
  if bad:
    if (lo, hi, lo_open, hi_open) == (0.0, math.inf, False, True):
      raise ValueError(f"{name} must be a non-negative finite number; got {v}.")
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}; got {v}.")


def check_int(name: str, value: Any, lo: int = 0) -> int:
  """A Python/NumPy integer ``>= lo`` (bools rejected)."""
  if (
      isinstance(value, bool)
      or not jnp.issubdtype(type(value), jnp.integer)
      or value < lo
  ):
    raise ValueError(f"{name} must be an int >= {lo}; got {value!r}.")
  return int(value)


def check_units(units: Any) -> None:
  if not isinstance(units, UnitSpec):
    raise TypeError(
        "`units` must be a pathprox_jax.UnitSpec (build it with "
        "UnitSpec.from_pairs, UnitSpec.from_groups or "
        f"model.unit_spec()); got {type(units).__name__}."
    )


def check_schedule(name: str, value: Any) -> None:
  """Evaluates a schedule abstractly at step 0 and checks it returns a scalar."""
  if callable(value):
    out = jax.eval_shape(value, jnp.zeros([], jnp.int32))
    if getattr(out, "shape", None) != ():
      raise ValueError(
          f"Schedule `{name}` must return a scalar; at step 0 it "
          f"returned shape {getattr(out, 'shape', type(out))}."
      )


def scalar_at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """A hyper-parameter's value at step ``count``."""
  return value(count) if callable(value) else jnp.asarray(value)


def require_params(params: Any, name: str) -> None:
  if params is None:
    raise ValueError(
        f"{name} needs the current params, but you are not "
        "passing `params`: call "
        "`optimizer.update(grads, state, params)`."
    )


def check_float_params(params: Any, name: str) -> None:
  """Raises ``ValueError`` naming the first non-floating leaf of ``params``."""
  for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
          f"{name}: parameter '{path_str(kp)}' has dtype {dtype} and shape "
          f"{jnp.shape(leaf)}; only floating-point parameters can be "
          "optimised. Filter them out (e.g. nnx.Optimizer(..., wrt=nnx.Param) "
          "or eqx.filter(model, eqx.is_inexact_array))."
      )


def check_update_args(
    units: UnitSpec, updates: Any, params: Any, name: str
) -> None:
  """Trace-time checks of ``update(updates, state, params)`` (no run-time cost):
  ``params`` still match the spec and ``updates`` have their paths and shapes.
  """
  require_params(params, name)
  units.check(params, where=f"params passed to {name}.update")

  def shapes(tree):
    return {
        path_str(k): jnp.shape(x)
        for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }

  u_shapes, p_shapes = shapes(updates), shapes(params)
  if u_shapes.keys() != p_shapes.keys():
    raise ValueError(
        f"{name}: the updates/gradients do not have the structure of the"
        " params. Only in updates:"
        f" {sorted(u_shapes.keys() - p_shapes.keys()) or 'none'}; only in"
        f" params: {sorted(p_shapes.keys() - u_shapes.keys()) or 'none'}."
    )
  for path, shape in u_shapes.items():
    if shape != p_shapes[path]:
      raise ValueError(
          f"{name}: the update for '{path}' has shape {shape} but "
          f"the param has shape {p_shapes[path]}."
      )


def checked(
    name: str,
    units: UnitSpec | None,
    tx: optax.GradientTransformation,
    *,
    proximal: bool = True,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` with this library's ``init`` and ``update`` checks ahead of its own.

  The one place a public transform validates what it is given: at ``init``,
  the params against ``units`` (paths, shapes, dtypes) and, for a
  ``proximal`` (or balancing) ``tx``, that it is not the base of
  ``optax.contrib.schedule_free``; at ``update`` (trace
  time, no run-time cost), that ``params`` are passed and match, and that
  the updates have their structure. Parts an alias chains are built
  unchecked, so each check runs once.
  """

  def init_fn(params):
    if proximal:
      refuse_schedule_free(name)
    if units is not None:
      units.check(params, where=f"params passed to {name}.init")
    return tx.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    if units is None:
      require_params(params, name)
    else:
      check_update_args(units, updates, params, name)
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------
# Compositions that would silently do the wrong thing
# --------------------------------------------------------------------------

INJECT_HINT = (
    "optax.inject_hyperparams treats every callable argument as a "
    "schedule and calls it with the step count; keep the prox (and a "
    "callable mask) static: optax.inject_hyperparams(ppx.proxgen_adam, "
    "static_args=('prox', 'mask'))(learning_rate=..., "
    "weight_decay=..., prox=ppx.prox.prox_l1)"
)


def prox_function(fn: Callable) -> Callable:
  """Marks a ``prox(x, weight_decay, scaling)`` so that a one-argument call, which is
  how ``optax.inject_hyperparams`` calls a schedule, says what to pass."""

  @functools.wraps(fn)
  def prox(*args, **kwargs):
    if len(args) == 1 and not kwargs:
      raise TypeError(
          f"{fn.__name__}(x, weight_decay, scaling) was called with one "
          f"argument. If this is inside an optimizer: {INJECT_HINT}."
      )
    return fn(*args, **kwargs)

  return prox


def refuse_schedule_free(name: str) -> None:
  """Raises if ``init`` runs inside ``optax.contrib.schedule_free``.

  Schedule-free hands its base optimizer the interpolated point ``y`` and
  adds the returned update to its own sequence ``z``; a proximal step (or a
  balancing step) computed at ``y`` is then never applied to ``z``, so
  nothing is projected, pruned or balanced, silently.
  """
  frame = sys._getframe(1)
  while frame is not None:
    code = frame.f_code
    if code.co_name == "init_fn" and code.co_filename.replace(
        "\\", "/"
    ).endswith("optax/contrib/_schedule_free.py"):
      raise ValueError(
          f"{name} cannot be the base optimizer of optax.contrib.schedule_free:"
          " the wrapper calls it at its interpolated point y and adds the"
          " update to another sequence z, so the proximal step (projection,"
          " soft-threshold, balancing) would never act on the weights it keeps"
          " and no unit would ever be pruned. Use a learning-rate schedule"
          " instead (learning_rate=optax.cosine_decay_schedule(...))."
      )
    frame = frame.f_back
