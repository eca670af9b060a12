"""PathProx as optax transforms: the proximal step, balancing, and the full alias."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pathprox_jax.balance import apply_layer_scales, group_unit_norms, layer_scales
from pathprox_jax.prox.path import UnitWeights, prox_path_norm
from pathprox_jax.transforms._common import (ScalarOrSchedule,
                                             check_hyperparam, check_schedule,
                                             check_units, check_update_args,
                                             rewrite_updates, scalar_at)
from pathprox_jax.units import (INPUT_BIAS, INPUT_KERNEL, OUTPUT_KERNEL,
                                UNGROUPED_KERNEL, UnitSpec, group_leaves)


class PathProxState(NamedTuple):
  """State of :func:`path_prox`: the step count used for the schedule."""
  count: jax.Array


def _prox_groups(z, positions, reg, scaling, *, balance, include_bias, eps,
                 dead_threshold):
  """Balancing (optional) then the prox on every group; norms computed once."""
  norms = group_unit_norms(z, positions)
  if balance:
    p = jnp.stack([jnp.sum(nw * nv) for nw, nv in norms])
    c_in, c_out = layer_scales(p, dead_threshold)
    z = apply_layer_scales(z, positions, c_in, c_out)
    # Balancing leaves input kernels alone and scales each output kernel by
    # one number, so the norms need no recomputation.
    norms = [(nw, nv * (c_out[g] / c_in[g])) for g, (nw, nv) in enumerate(norms)]
  new = {}
  for pos, nrm in zip(positions, norms):
    b = z[pos[INPUT_BIAS]] if INPUT_BIAS in pos else None
    x = UnitWeights(z[pos[INPUT_KERNEL]], b, z[pos[OUTPUT_KERNEL]])
    y = prox_path_norm(x, reg, scaling, include_bias=include_bias, eps=eps,
                       norms=nrm)
    new[pos[INPUT_KERNEL]] = y.w
    new[pos[OUTPUT_KERNEL]] = y.v
    if b is not None:
      new[pos[INPUT_BIAS]] = y.b
  if balance:  # output biases were rescaled too
    for pos in positions:
      for i in pos.values():
        new.setdefault(i, z[i])
  return new


def path_prox_params(params, units: UnitSpec, weight_decay, learning_rate, *,
                     balance: bool = True, include_bias_in_norm: bool = False,
                     eps: float = 1e-12, dead_threshold: float = 1e-12):
  r"""The proximal step of :func:`path_prox` applied to ``params`` directly.

  Same math (balancing if ``balance``, then projection and group
  soft-threshold at ``weight_decay * learning_rate``), as a pure function on
  a params pytree, used *after* ``optax.apply_updates`` the way
  ``optax.projections`` are. This is the fastest form on CPU: the optax
  transform must return ``prox(z) - params``, which keeps ``params`` alive
  next to ``z`` and costs one parameter-sized temporary per step; here the
  donated parameter buffers are updated in place
  (``benchmarks/STEP_TIME_RESULTS.md``).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec, path_prox_params
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = optax.sgd(0.1)    # + add_decayed_weights on ungrouped kernels
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = path_prox_params(optax.apply_updates(params, updates), spec,
    ...                           weight_decay=1e-3, learning_rate=0.1)
  """
  leaves, treedef, positions = group_leaves(units, params)
  new = _prox_groups(leaves, positions, weight_decay, learning_rate,
                     balance=balance, include_bias=include_bias_in_norm,
                     eps=eps, dead_threshold=dead_threshold)
  return jax.tree_util.tree_unflatten(
      treedef, [new.get(i, x) for i, x in enumerate(leaves)])


def path_prox(weight_decay: ScalarOrSchedule, learning_rate: ScalarOrSchedule,
              units: UnitSpec, *, balance: bool = False,
              include_bias_in_norm: bool = False, eps: float = 1e-12,
              dead_threshold: float = 1e-12
              ) -> optax.GradientTransformationExtraArgs:
  r"""The PathProx proximal step, to be placed last in a chain.

  Given the incoming ``updates`` (e.g. ``-lr * grad`` from ``optax.sgd``), it
  forms ``z = params + updates`` and returns ``prox(z) - params`` where, for
  every unit of every group (PathProx paper, Algorithm 4.1):

  * ``w_i <- z_w_i / ||z_w_i||`` (bias entry divided by the same norm),
  * ``v_i <- 0`` if ``||z_v_i|| <= tau`` else ``z_v_i (1 - tau / ||z_v_i||)``,

  with ``tau = weight_decay * learning_rate(count)``, the schedule evaluated at
  the same step count ``optax.sgd`` uses. Leaves outside the groups pass
  through. With ``balance=True`` the layer-wise balancing of Appendix B runs
  first, fused with the prox so that the per-unit norms are computed once.

  Args:
    weight_decay: ``lambda``.
    learning_rate: ``gamma_t``: a float or an optax schedule.
    units: the :class:`~pathprox_jax.UnitSpec` of the network.
    balance: run layer-wise balancing before the prox.
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    eps: input norms at or below this are left unprojected (zero stays zero).
    dead_threshold: group path norms at or below this count as dead in
      balancing.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec, path_prox
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = optax.chain(optax.sgd(0.1), path_prox(1e-3, 0.1, spec))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
  """
  check_units(units)
  check_hyperparam("weight_decay", weight_decay, allow_schedule=False)
  check_hyperparam("learning_rate", learning_rate)

  def init_fn(params):
    units.check(params)
    check_schedule("learning_rate", learning_rate)
    return PathProxState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_update_args(units, updates, params, "path_prox")
    lr = scalar_at(learning_rate, state.count)

    def new_values(z, positions):
      return _prox_groups(z, positions, weight_decay, lr, balance=balance,
                          include_bias=include_bias_in_norm, eps=eps,
                          dead_threshold=dead_threshold)

    updates = rewrite_updates(units, updates, params, new_values)
    return updates, PathProxState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def layerwise_balance(units: UnitSpec, dead_threshold: float = 1e-12
                      ) -> optax.GradientTransformationExtraArgs:
  r"""Layer-wise balancing (PathProx paper, Appendix B) as a transform.

  From ``z = params + updates`` it returns ``balance(z) - params``: every
  live group's path norm ``P_g = sum_i ||w_i|| ||v_i||`` is set to the
  geometric mean of the live groups' path norms by rescaling output layers
  and compensating in the next group, so the network function is unchanged
  (see :func:`~pathprox_jax.balance.layer_scales` for the exact walk and the
  handling of dead groups). ``chain(sgd, layerwise_balance(u), path_prox(...))``
  equals ``path_prox(..., balance=True)`` after ``sgd``; the latter shares the
  norm computations.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec, layerwise_balance, path_prox
    >>> params = {f"l{i}": {"kernel": jnp.ones((2, 2))} for i in range(4)}
    >>> spec = UnitSpec.from_pairs(params, [("l0", "l1"), ("l2", "l3")])
    >>> tx = optax.chain(optax.sgd(0.1), layerwise_balance(spec),
    ...                  path_prox(1e-4, 0.1, spec))
  """
  check_units(units)

  def init_fn(params):
    units.check(params)
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_update_args(units, updates, params, "layerwise_balance")

    def new_values(z, positions):
      norms = group_unit_norms(z, positions)
      p = jnp.stack([jnp.sum(nw * nv) for nw, nv in norms])
      c_in, c_out = layer_scales(p, dead_threshold)
      scaled = apply_layer_scales(z, positions, c_in, c_out)
      return {i: scaled[i] for pos in positions for i in pos.values()}

    return rewrite_updates(units, updates, params, new_values), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def pathprox(learning_rate: ScalarOrSchedule, weight_decay: float,
             units: UnitSpec, *, momentum: float = 0.0, nesterov: bool = False,
             balance: bool = True, include_bias_in_norm: bool = False
             ) -> optax.GradientTransformationExtraArgs:
  r"""PathProx, the full Algorithm 4.1: SGD + balancing + proximal step.

  Minimises the path-norm objective ``L(W) + lambda sum_i ||w_i|| ||v_i|| +
  lambda/2 sum ||K||^2`` (eq. 4.3; ``K`` the kernels in no group), which has
  the same minimisers as the weight decay objective (Theorem 4.1):

  1. ordinary weight decay ``grad + lambda K`` on kernels outside every
     group (biases are never decayed),
  2. SGD (optionally with momentum) on all parameters,
  3. layer-wise balancing (if ``balance``),
  4. sphere projection of input weights and group soft-threshold of output
     weights at ``lambda * lr_t``.

  The first projection changes the network function unless the input
  weights already have unit norm; with large learning rates from PyTorch's
  default init, normalise once with :func:`~pathprox_jax.normalize_units`.

  Args:
    learning_rate: a float or an optax schedule.
    weight_decay: ``lambda``.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    momentum: SGD momentum (0 in all of the paper's runs).
    nesterov: Nesterov momentum.
    balance: run layer-wise balancing each step (the paper's default).
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, optax
    >>> from flax import nnx
    >>> import pathprox_jax as ppx
    >>> model = ppx.FactorizedMLP(depth=2, width=16, in_features=8,
    ...                           num_classes=3, rngs=nnx.Rngs(0))
    >>> tx = ppx.pathprox(0.1, 1e-4, model.unit_spec())
    >>> opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  """
  check_units(units)
  check_hyperparam("momentum", momentum, allow_schedule=False)
  use_momentum = not (isinstance(momentum, (int, float)) and momentum == 0)
  chain = optax.chain(
      optax.add_decayed_weights(weight_decay, mask=units.mask(UNGROUPED_KERNEL)),
      optax.sgd(learning_rate, momentum if use_momentum else None, nesterov),
      path_prox(weight_decay, learning_rate, units, balance=balance,
                include_bias_in_norm=include_bias_in_norm),
  )

  def update_fn(updates, state, params=None, **extra_args):
    # Check before optax's own transforms can fail with a less clear error.
    check_update_args(units, updates, params, "pathprox")
    return chain.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(chain.init, update_fn)
