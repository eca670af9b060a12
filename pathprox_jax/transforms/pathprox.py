"""PathProx as optax transforms: the proximal step, balancing, the gradient step and the alias.

Two equivalent forms of Algorithm 4.1:

* as one ``GradientTransformation``: :func:`pathprox` =
  ``chain(ungrouped_weight_decay, sgd, pathprox_update)``;
* in place, after ``optax.apply_updates``: :func:`pathprox_gradient`
  (the gradient step) then :func:`pathprox_params` (the prox on the new
  params). Same numbers; no parameter-sized temporary, so it is the faster
  form on CPU (``benchmarks/RESULTS.md``, "Step time").

Every public factory validates its arguments once, at construction, and
checks the params against the spec once per trace (``_checks.checked``);
the parts an alias chains are built unchecked.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from pathprox_jax._checks import (
    ScalarOrSchedule,
    check_number,
    check_schedule,
    check_units,
    checked,
    scalar_at,
)
from pathprox_jax._numerics import DEAD_THRESHOLD, MIN_NORM
from pathprox_jax.balance import balance_layers_groups
from pathprox_jax.prox.group import unit_norms
from pathprox_jax.prox.path import prox_path_norm
from pathprox_jax.transforms.map_units import map_groups_update, prox_update
from pathprox_jax.units import UNGROUPED_KERNEL, UnitSpec, UnitWeights


class PathProxState(NamedTuple):
  """State of :func:`pathprox_update`: the step count used for the schedule.

  Examples:
    >>> import jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> p = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
    >>> ppx.pathprox_update(0.1, 1e-4, ppx.UnitSpec.from_pairs(p, [("a", "b")])).init(p)
    PathProxState(count=Array(0, dtype=int32))
  """

  count: jax.Array


def pathprox_groups(
    groups: Sequence[UnitWeights],
    learning_rate,
    weight_decay,
    *,
    links: Sequence[bool] | None = None,
    balance: bool = True,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    dead_threshold: float = DEAD_THRESHOLD,
) -> list[UnitWeights]:
  r"""The PathProx step on split groups: balancing, then the prox.

  Layer-wise balancing (optional, along ``links``), then
  :func:`~pathprox_jax.prox.prox_path_norm` on every group at threshold
  ``tau = weight_decay * learning_rate``; unit norms are computed once and
  shared by both. The group-space form of :func:`pathprox_params` and
  :func:`pathprox_update`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax.units import UnitWeights
    >>> x = UnitWeights.from_arrays(jnp.array([[3.0], [4.0]]), jnp.array([[0.05]]))
    >>> pathprox_groups([x], 0.1, 1.0)[0].v[0]   # ||v|| <= tau = 0.1: pruned
    Array([[0.]], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1 and Appendix B.
  """
  groups = list(groups)
  norms = [unit_norms(x) for x in groups]
  if balance:
    groups, norms, _ = balance_layers_groups(
        groups,
        norms,
        links=links,
        dead_threshold=dead_threshold,
        prox_threshold=weight_decay * learning_rate,
    )
  return [
      prox_path_norm(
          x,
          weight_decay,
          learning_rate,
          include_bias_in_norm=include_bias_in_norm,
          min_norm=min_norm,
          norms=n,
      )
      for x, n in zip(groups, norms)
  ]


def _check_prox_args(
    learning_rate, weight_decay, units, min_norm, dead_threshold
) -> None:
  check_units(units)
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay)
  check_number("min_norm", min_norm)
  check_number("dead_threshold", dead_threshold)


def _pathprox_update(
    learning_rate, weight_decay, units, **options
) -> optax.GradientTransformationExtraArgs:
  """:func:`pathprox_update` without the argument and params checks."""

  def init_fn(params):
    del params
    check_schedule("learning_rate", learning_rate)
    return PathProxState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = scalar_at(learning_rate, state.count)
    updates = prox_update(
        units,
        updates,
        params,
        lambda z: pathprox_groups(
            z, lr, weight_decay, links=units.links, **options
        ),
    )
    return updates, PathProxState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def pathprox_update(
    learning_rate: ScalarOrSchedule,
    weight_decay: float,
    units: UnitSpec,
    *,
    balance: bool = True,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    dead_threshold: float = DEAD_THRESHOLD,
) -> optax.GradientTransformationExtraArgs:
  r"""The PathProx proximal step as an update, to be placed last in a chain.

  From the incoming ``updates`` (e.g. ``-lr * grad`` from ``optax.sgd``) it
  forms ``z = params + updates`` and returns ``prox(z) - params``, where for
  every unit (PathProx, Algorithm 4.1):

  * ``w_i <- z_w_i / ||z_w_i||`` (bias entries divided by the same norm),
  * ``v_i <- z_v_i max(1 - tau / ||z_v_i||, 0)``,

  ``tau = weight_decay * learning_rate(count)``, the schedule evaluated at
  the step count ``optax.sgd`` uses. With ``balance=True`` the layer-wise
  balancing of Appendix B runs first, sharing the unit norms. Leaves
  outside the groups pass through.

  Args:
    learning_rate: ``gamma_t``: a float or an optax schedule.
    weight_decay: ``lambda``.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    balance: layer-wise balancing before the prox (see the chain
      assumption in :class:`~pathprox_jax.UnitSpec`).
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    min_norm: units with ``||w_i|| <= min_norm`` are not projected.
    dead_threshold: group path norms at or below this count as dead in
      balancing.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = optax.chain(optax.sgd(0.1), ppx.pathprox_update(0.1, 1e-3, spec))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1 and Appendix B;
    ``docs/algorithms.md``, "The PathProx step".
  """
  _check_prox_args(learning_rate, weight_decay, units, min_norm, dead_threshold)
  return checked(
      "pathprox_update",
      units,
      _pathprox_update(
          learning_rate,
          weight_decay,
          units,
          balance=balance,
          include_bias_in_norm=include_bias_in_norm,
          min_norm=min_norm,
          dead_threshold=dead_threshold,
      ),
  )


def pathprox_params(
    params: Any,
    units: UnitSpec,
    learning_rate: ScalarOrSchedule,
    weight_decay: float,
    *,
    step: jax.Array | int | None = None,
    balance: bool = True,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    dead_threshold: float = DEAD_THRESHOLD,
) -> Any:
  r"""The PathProx proximal step applied to ``params`` in place.

  The math of :func:`pathprox_update` as a pure function of the params,
  used after ``optax.apply_updates`` the way ``optax.projections`` are,
  with :func:`pathprox_gradient` as the gradient step. Donated parameter
  buffers are updated in place: no parameter-sized temporary.

  Args:
    params: the params after the gradient step.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    learning_rate: ``gamma_t``: a float, or a schedule with ``step``.
    weight_decay: ``lambda``.
    step: with a schedule, the step count the gradient step used (the
      count before that update: 0 for the first step).
    balance, include_bias_in_norm, min_norm, dead_threshold: as in
      :func:`pathprox_update`.

  Returns:
    The params after balancing and the prox.

  Raises:
    ValueError: if ``params`` do not match ``units`` (at trace time), or
      ``learning_rate`` is a schedule and ``step`` is missing.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> p = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
    >>> spec = ppx.UnitSpec.from_pairs(p, [("a", "b")])
    >>> tx = ppx.pathprox_gradient(0.1, 1e-3, spec)
    >>> updates, state = tx.update(jax.tree.map(jnp.ones_like, p), tx.init(p), p)
    >>> p = ppx.pathprox_params(optax.apply_updates(p, updates), spec, 0.1, 1e-3)
    >>> jnp.linalg.norm(p["a"]["kernel"], axis=0).round(5)   # on the sphere
    Array([1., 1., 1., 1.], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1.
  """
  _check_prox_args(learning_rate, weight_decay, units, min_norm, dead_threshold)
  if callable(learning_rate):
    if step is None:
      raise ValueError(
          "pathprox_params: learning_rate is a schedule; pass "
          "step=<the step count of the gradient step>."
      )
    learning_rate = learning_rate(step)
  groups, rest = units.split(params)
  return units.merge(
      pathprox_groups(
          groups,
          learning_rate,
          weight_decay,
          links=units.links,
          balance=balance,
          include_bias_in_norm=include_bias_in_norm,
          min_norm=min_norm,
          dead_threshold=dead_threshold,
      ),
      rest,
  )


def balance_layers_update(
    units: UnitSpec, *, dead_threshold: float = DEAD_THRESHOLD
) -> optax.GradientTransformationExtraArgs:
  r"""Layer-wise balancing (PathProx, Appendix B) as a transform.

  From ``z = params + updates`` it returns ``balance(z) - params``: every
  live group's path norm is set to the geometric mean of the live groups'
  path norms, the network function is unchanged (see
  :func:`~pathprox_jax.balance.layer_scales`). ``chain(sgd,
  balance_layers_update(u), pathprox_update(..., balance=False))`` equals
  ``chain(sgd, pathprox_update(...))``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {f"l{i}": {"kernel": jnp.ones((2, 2))} for i in range(4)}
    >>> spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1"), ("l2", "l3")])
    >>> tx = optax.chain(optax.sgd(0.1), ppx.balance_layers_update(spec),
    ...                  ppx.pathprox_update(0.1, 1e-4, spec, balance=False))

  References:
    Yang et al., PathProx, arXiv:2210.03069, Appendix B.
  """
  check_units(units)
  check_number("dead_threshold", dead_threshold)
  return checked(
      "balance_layers_update",
      units,
      map_groups_update(
          units,
          lambda z: balance_layers_groups(
              z,
              [unit_norms(x) for x in z],
              links=units.links,
              dead_threshold=dead_threshold,
          )[0],
      ),
  )


def _ungrouped_weight_decay(weight_decay, units):
  return optax.add_decayed_weights(
      weight_decay, mask=units.mask(UNGROUPED_KERNEL)
  )


def ungrouped_weight_decay(
    weight_decay: float, units: UnitSpec
) -> optax.GradientTransformationExtraArgs:
  r"""Coupled weight decay ``g + lambda K`` on the kernels in no unit group.

  The weight decay objective charges ``lambda/2 ||K||^2`` on every kernel;
  the grouped ones are handled by the path-norm prox, the rest (a
  transformer's attention, an odd MLP's last layer) by this gradient term.
  Chain it ahead of any optimizer, e.g. ``proxgen_adam`` with
  :func:`~pathprox_jax.prox.unit_group_lasso`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))},
    ...           "c": {"kernel": jnp.ones((2, 2))}}
    >>> units = ppx.UnitSpec.from_pairs(params, [("a", "b")])
    >>> tx = ppx.ungrouped_weight_decay(0.5, units)
    >>> g, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> float(g["c"]["kernel"][0, 0]), float(g["a"]["kernel"][0, 0])
    (0.5, 0.0)
  """
  check_units(units)
  check_number("weight_decay", weight_decay)
  return checked(
      "ungrouped_weight_decay",
      units,
      _ungrouped_weight_decay(weight_decay, units),
      proximal=False,
  )


def _gradient_parts(learning_rate, weight_decay, units, momentum, nesterov):
  check_number("momentum", momentum, 0.0, 1.0)
  use_momentum = not (isinstance(momentum, (int, float)) and momentum == 0)
  return (
      _ungrouped_weight_decay(weight_decay, units),
      optax.sgd(learning_rate, momentum if use_momentum else None, nesterov),
  )


def pathprox_gradient(
    learning_rate: ScalarOrSchedule,
    weight_decay: float,
    units: UnitSpec,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""The gradient step of PathProx, for use with :func:`pathprox_params`.

  ``chain(ungrouped_weight_decay(weight_decay, units), sgd)``: ordinary
  weight decay on the kernels in no group (biases never), then SGD
  (optionally with momentum). :func:`pathprox` is this chain followed by
  :func:`pathprox_update`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
    >>> tx = ppx.pathprox_gradient(0.1, 1e-4, ppx.UnitSpec.from_pairs(params, [("a", "b")]))
  """
  check_units(units)
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay)
  return checked(
      "pathprox_gradient",
      units,
      optax.chain(
          *_gradient_parts(
              learning_rate, weight_decay, units, momentum, nesterov
          )
      ),
      proximal=False,
  )


def pathprox(
    learning_rate: ScalarOrSchedule,
    weight_decay: float,
    units: UnitSpec,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    balance: bool = True,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    dead_threshold: float = DEAD_THRESHOLD,
) -> optax.GradientTransformationExtraArgs:
  r"""PathProx, the full Algorithm 4.1: SGD, balancing, proximal step.

  Minimises the path-norm objective ``L(W) + lambda sum_i ||w_i|| ||v_i|| +
  lambda/2 sum ||K||^2`` (eq. 4.3; ``K`` the kernels in no group), whose
  minimisers, once neuron-balanced, are those of the weight decay objective
  (Theorem 4.1). Each step:

  1. ``grad + lambda K`` on the kernels in no group (biases never decayed),
  2. SGD (optionally with momentum) on all parameters,
  3. layer-wise balancing (if ``balance``),
  4. sphere projection of input weights and group soft-threshold of output
     weights at ``lambda * lr_t``.

  The first projection changes the network function unless the input
  weights already have unit norm; from PyTorch's default init at large
  learning rates, normalise once with :func:`~pathprox_jax.normalize_units`.

  Args:
    learning_rate: a float or an optax schedule.
    weight_decay: ``lambda``.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    momentum: SGD momentum (0 in all of the paper's runs).
    nesterov: Nesterov momentum.
    balance, include_bias_in_norm, min_norm, dead_threshold: as in
      :func:`pathprox_update`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> from flax import nnx
    >>> import pathprox_jax as ppx
    >>> model = ppx.FactorizedMLP(depth=2, width=16, in_features=8,
    ...                           num_classes=3, rngs=nnx.Rngs(0))
    >>> tx = ppx.pathprox(0.1, 1e-4, model.unit_spec())
    >>> opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1;
    ``docs/algorithms.md``, "The PathProx step".
  """
  _check_prox_args(learning_rate, weight_decay, units, min_norm, dead_threshold)
  return checked(
      "pathprox",
      units,
      optax.chain(
          *_gradient_parts(
              learning_rate, weight_decay, units, momentum, nesterov
          ),
          _pathprox_update(
              learning_rate,
              weight_decay,
              units,
              balance=balance,
              include_bias_in_norm=include_bias_in_norm,
              min_norm=min_norm,
              dead_threshold=dead_threshold,
          ),
      ),
  )
