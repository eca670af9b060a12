"""Numerical check of a UnitSpec against the function it describes."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from pathprox_jax.balance import balance_layers
from pathprox_jax.units import UnitSpec, scale_units


def _relative_change(a, b) -> float:
  a = np.concatenate(
      [np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)]
  )
  b = np.concatenate(
      [np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)]
  )
  den = np.linalg.norm(a)
  return (
      float(np.linalg.norm(a - b) / den)
      if den > 0
      else float(np.linalg.norm(b))
  )


def verify_units(
    fn: Callable,
    params: Any,
    units: UnitSpec,
    *inputs: Any,
    rtol: float = 1e-5,
    seed: int = 0,
) -> dict[str, float]:
  """Checks on real numbers that ``units`` describes ``fn``'s homogeneous units.

  For every group, each unit ``i`` is rescaled (input slices and biases by a
  random ``a_i`` in ``[0.5, 2]``, output slices by ``1 / a_i``); then the
  whole spec is layer-balanced (:func:`~pathprox_jax.balance_layers`, along
  :attr:`UnitSpec.links`). Neither may change ``fn(params, *inputs)`` by
  more than ``rtol`` (relative). This is the check a hand-built spec can
  get; :func:`~pathprox_jax.discover` establishes the same from the graph.

  Args:
    fn: ``fn(params, *inputs) -> outputs``.
    params: the params.
    units: the spec to check.
    *inputs: a batch of example inputs (real data makes the check stronger:
      ReLUs at zero hide non-homogeneous terms).
    rtol: the largest relative change of the outputs allowed.
    seed: seed of the random rescaling.

  Returns:
    ``{"group 0": change, ..., "balance_layers": change}``.

  Raises:
    ValueError: naming the group (or balancing) that changes the outputs.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
    >>> fn = lambda p, x: jax.nn.relu(x @ p["a"]["kernel"]) @ p["b"]["kernel"]
    >>> spec = ppx.UnitSpec.from_pairs(params, [("a", "b")])
    >>> out = ppx.verify_units(fn, params, spec, jnp.ones((2, 3)))
    >>> out["group 0"] < 1e-6
    True
  """
  units.check(params)
  apply = jax.jit(lambda p: fn(p, *inputs))
  reference = apply(params)
  rng = np.random.default_rng(seed)
  changes = {}
  split, rest = units.split(params)
  for g, x in enumerate(split):
    a = jnp.asarray(rng.uniform(0.5, 2.0, x.num_units), jnp.float32)
    groups = list(split)
    groups[g] = scale_units(x, w=a, b=a, v=1.0 / a)
    changes[f"group {g}"] = _relative_change(
        reference, apply(units.merge(groups, rest))
    )
  changes["balance_layers"] = _relative_change(
      reference, apply(balance_layers(params, units))
  )
  bad = {k: v for k, v in changes.items() if not v <= rtol}
  if bad:
    raise ValueError(
        "The UnitSpec does not describe fn's homogeneous units: "
        + ", ".join(
            f"{k} changes the outputs by {v:.3g} (relative)"
            for k, v in bad.items()
        )
        + f" > rtol {rtol}. A group whose rescaling changes the outputs is not "
        "homogeneous (an activation, norm or skip between its maps); if only "
        "balance_layers does, pass links=[...] with False where a residual "
        "add, branch or norm sits between consecutive groups, or use "
        "balance=False."
    )
  return changes
