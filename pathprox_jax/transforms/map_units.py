"""Any map of the grouped weights as an optax transform (the prox-as-update pattern)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from pathprox_jax._checks import check_units, checked
from pathprox_jax.units import UnitSpec, UnitWeights

GroupsFn = Callable[[list[UnitWeights]], list[UnitWeights]]


def prox_update(
    units: UnitSpec, updates: Any, params: Any, fn: GroupsFn
) -> Any:
  """Turns a map of the grouped weights into an optax update.

  With ``z = params + updates`` on the grouped leaves, returns updates
  ``u'`` such that ``params + u' = merge(fn(split(z)))``: every array
  ``fn`` changes becomes ``new - params``; arrays it returns untouched, and
  every leaf outside the groups, keep their incoming update bit for bit.
  """
  p_groups, _ = units.split(params)
  u_groups, rest = units.split(updates)
  z = [
      jax.tree.map(lambda p, u: p + u.astype(p.dtype), pg, ug)
      for pg, ug in zip(p_groups, u_groups)
  ]
  new = fn(z)

  def delta(n, zz, p, u):
    return u if n is zz else (n - p).astype(u.dtype)

  return units.merge(
      [
          jax.tree.map(delta, n, zz, p, u)
          for n, zz, p, u in zip(new, z, p_groups, u_groups)
      ],
      rest,
  )


def map_groups_update(
    units: UnitSpec, fn: GroupsFn
) -> optax.GradientTransformationExtraArgs:
  """:func:`map_units` without the argument and params checks."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    return prox_update(units, updates, params, fn), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def map_units(
    units: UnitSpec, fn: GroupsFn
) -> optax.GradientTransformationExtraArgs:
  """A transform applying ``fn`` to every group's weights after the incoming update.

  ``fn`` maps the list of split :class:`~pathprox_jax.units.UnitWeights` of
  ``z = params + updates`` to new ones; the transform returns
  ``merge(fn(split(z))) - params`` on the grouped leaves and passes every
  other update through, so it composes in a chain (place it after the
  optimizer). :func:`~pathprox_jax.balance_layers_update` is one; a
  projection of the input weights (weight normalisation as a constraint)
  is another.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
    >>> spec = ppx.UnitSpec.from_pairs(params, [("a", "b")])
    >>> tx = optax.chain(optax.sgd(0.1), ppx.map_units(
    ...     spec, lambda groups: [ppx.prox.project_unit_sphere(x) for x in groups]))
    >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> jnp.linalg.norm(optax.apply_updates(params, u)["a"]["kernel"], axis=0).round(5)
    Array([1., 1., 1., 1.], dtype=float32)
  """
  check_units(units)
  if not callable(fn):
    raise TypeError("map_units: fn must be a function of the list of groups.")
  return checked("map_units", units, map_groups_update(units, fn))
