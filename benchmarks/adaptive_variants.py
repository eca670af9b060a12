"""Exploration variants of adaptive PathProx, built from the library's parts.

Release 0.3.0 keeps one adaptive PathProx in the library
(:func:`pathprox_jax.adaptive_pathprox`); the options that
``benchmarks.race --explore`` tried (``benchmarks/RESULTS.md``, "Adaptive
PathProx: why it re-densified, and the fix") live here, with the semantics
they had in release 0.2.1:

* ``amsgrad``: the metric is the running maximum of ``v^`` (AMSGrad), so
  neither the step nor the shrinkage threshold ``lambda lr / d`` grows when
  the gradients vanish; the state is ``optax.ScaleByAmsgradState``;
* ``freeze_dead``: the second moments of a unit that is dead (``v_i = 0``)
  at the start of the step never decrease;
* ``layer_metric``: ``"outputs"`` replaces ``v^`` of every output kernel by
  its mean, ``"all"`` does so for every grouped leaf;
* ``rescale_v``: ``v_i <- ||z_w_i|| v_i`` before the shrinkage, so that the
  sphere projection keeps the network function;
* ``rescale_moments=False``: balancing leaves Adam's moments as they are
  (stale after every rescaling).

With every option off the transform is :func:`pathprox_jax.adaptive_pathprox`
with the same ``eps``; :func:`self_check` asserts it
(``python -m benchmarks.adaptive_variants``), and
``python -m benchmarks.api_regression --quick`` compares every variant with
release 0.2.1's options step by step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pathprox_jax as ppx
from pathprox_jax import units as pu
from pathprox_jax._numerics import MIN_NORM

B1, B2 = 0.9, 0.999  # Adam's moment decays (bias correction on)
# Adam's eps: adaptive PathProx's default up to release 0.2.1, and the eps of
# the recorded runs that do not state another.
ADAM_EPS = 1e-8
LAYER_METRICS = {
    "none": (),
    "outputs": (pu.OUTPUT_KERNEL,),
    "all": (pu.OUTPUT_KERNEL, pu.INPUT_KERNEL, pu.INPUT_BIAS, pu.OUTPUT_BIAS),
}


def _freeze_dead(units, params, nu, old_nu):
  """``nu`` where the unit is alive (``||v_i|| > 0`` in ``params``), else
  ``max(nu, old_nu)``; output biases (not unit-indexed) keep ``nu``."""
  (p_groups, _), (new_groups, rest), (old_groups, _) = (
      units.split(params),
      units.split(nu),
      units.split(old_nu),
  )
  return units.merge(
      [
          pu.where_units(
              ppx.prox.unit_norms(x)[1] > 0,
              new,
              jax.tree.map(jnp.maximum, new, old),
          )
          for x, new, old in zip(p_groups, new_groups, old_groups)
      ],
      rest,
  )


def _layer_mean(units, params, v_hat, roles):
  """Every leaf of the given roles replaced by its mean."""
  which = units.mask(*roles)(params)
  return jax.tree.map(
      lambda v, m: jnp.full_like(v, jnp.mean(v)) if m else v, v_hat, which
  )


def _rescale_v(x, norms):
  """``v_i <- ||w_i|| v_i`` for the units the projection will normalise."""
  nw, nv = norms
  f = jnp.where(nw > MIN_NORM, nw, 1.0)
  return pu.scale_units(x, v=f), (nw, nv * f)


def _rescale(units, tree, c_in, c_out, power):
  """:func:`~pathprox_jax.transforms.scale_moments` on a whole tree."""
  groups, rest = units.split(tree)
  return units.merge(
      ppx.transforms.scale_moments(groups, c_in, c_out, power), rest
  )


def adaptive_pathprox_variant(
    learning_rate,
    weight_decay: float,
    units: ppx.UnitSpec,
    *,
    eps: float,
    amsgrad: bool = False,
    freeze_dead: bool = False,
    layer_metric: str = "none",
    rescale_v: bool = False,
    rescale_moments: bool = True,
    balance: bool = True,
) -> optax.GradientTransformationExtraArgs:
  """Adaptive PathProx with release 0.2.1's exploration options.

  Args:
    learning_rate: float or optax schedule.
    weight_decay: ``lambda``.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    eps: added to ``sqrt(v^)`` (no default: 0.2.1 used Adam's ``1e-8``, the
      library now defaults to ``max(lambda / 10, 1e-8)``).
    amsgrad, freeze_dead, layer_metric, rescale_v, rescale_moments: see the
      module docstring.
    balance: layer-wise balancing before the prox.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (``update`` needs
    ``params``); state ``optax.ScaleByAdamState``, or
    ``optax.ScaleByAmsgradState`` with ``amsgrad``.
  """
  if layer_metric not in LAYER_METRICS:
    raise ValueError(
        f"layer_metric must be one of {sorted(LAYER_METRICS)}; "
        f"got {layer_metric!r}."
    )
  lr_at = (
      learning_rate
      if callable(learning_rate)
      else (lambda _: jnp.asarray(learning_rate))
  )
  ungrouped = units.mask(pu.UNGROUPED_KERNEL)

  def init_fn(params):
    units.check(params, where="params passed to adaptive_pathprox_variant")
    s = ppx.transforms.adam_init(params)
    if amsgrad:
      return optax.ScaleByAmsgradState(
          s.count, s.mu, s.nu, jax.tree.map(jnp.zeros_like, s.nu)
      )
    return s

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = lr_at(state.count)
    grads = jax.tree.map(
        lambda g, p, u: g + weight_decay * p if u else g,
        updates,
        params,
        ungrouped(params),
    )
    mu, nu, m_hat, v_hat, count = ppx.transforms.adam_moments(
        grads, state, B1, B2, True
    )
    if freeze_dead:
      nu = _freeze_dead(units, params, nu, state.nu)
      v_hat = optax.tree_utils.tree_bias_correction(nu, B2, count)
    if amsgrad:
      v_hat = nu_max = jax.tree.map(jnp.maximum, state.nu_max, v_hat)
    if layer_metric != "none":
      v_hat = _layer_mean(units, params, v_hat, LAYER_METRICS[layer_metric])
    z = jax.tree.map(
        lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps), params, m_hat, v_hat
    )
    groups, rest = units.split(z)
    norms = [ppx.prox.unit_norms(x) for x in groups]
    if balance:
      groups, norms, (c_in, c_out) = ppx.balance.balance_layers_groups(
          groups, norms, links=units.links
      )
      if rescale_moments:
        mu = _rescale(units, mu, c_in, c_out, 1)
        nu = _rescale(units, nu, c_in, c_out, 2)
        v_hat = nu_max = _rescale(units, v_hat, c_in, c_out, 2)
    if rescale_v:
      groups, norms = map(list, zip(*map(_rescale_v, groups, norms)))
    z = units.merge(
        ppx.transforms.adaptive_prox_groups(
            groups, units.split(v_hat)[0], lr, weight_decay, eps, norms=norms
        ),
        rest,
    )
    out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), z, params)
    if amsgrad:
      return out, optax.ScaleByAmsgradState(count, mu, nu, nu_max)
    return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def make_adaptive(
    learning_rate,
    weight_decay: float,
    units: ppx.UnitSpec,
    *,
    eps: float,
    **options,
) -> optax.GradientTransformationExtraArgs:
  """The library's :func:`~pathprox_jax.adaptive_pathprox` if ``options``
  are its own (``balance``), else :func:`adaptive_pathprox_variant`."""
  if set(options) <= {"balance"}:
    return ppx.adaptive_pathprox(
        learning_rate, weight_decay, units, eps=eps, **options
    )
  return adaptive_pathprox_variant(
      learning_rate, weight_decay, units, eps=eps, **options
  )


def self_check(steps: int = 5) -> float:
  """Asserts that the variant with every option off is the library's
  :func:`~pathprox_jax.adaptive_pathprox` (balancing on and off): ``steps``
  jitted steps from random gradients on a small network. Returns the
  largest relative difference of the parameters (0.0: bitwise equal).

  >>> self_check(steps=2)
  0.0
  """
  from flax import nnx

  model = ppx.FactorizedMLP(
      2, 6, in_features=5, num_classes=3, rngs=nnx.Rngs(0)
  )
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  spec = model.unit_spec()
  leaves, treedef = jax.tree.flatten(params)
  worst = 0.0
  for balance in (True, False):
    kw = dict(eps=1e-3, balance=balance)
    txs = (
        ppx.adaptive_pathprox(1e-2, 1e-2, spec, **kw),
        adaptive_pathprox_variant(1e-2, 1e-2, spec, **kw),
    )
    steps_fn = [jax.jit(functools.partial(_step, tx)) for tx in txs]
    runs = [(params, tx.init(params)) for tx in txs]
    for i in range(steps):
      keys = jax.random.split(jax.random.key(i), len(leaves))
      grads = jax.tree.unflatten(
          treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
      )
      runs = [f(p, s, grads) for f, (p, s) in zip(steps_fn, runs)]
      a, b = (
          np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])
          for p, _ in runs
      )
      worst = max(worst, float(np.linalg.norm(a - b) / np.linalg.norm(a)))
  assert worst <= 1e-6, f"variant differs from adaptive_pathprox: {worst:.3g}"
  return worst


def _step(tx, params, state, grads):
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


if __name__ == "__main__":
  print(
      "adaptive_pathprox_variant with every option off vs "
      "ppx.adaptive_pathprox: largest relative difference "
      f"{self_check():.3g}"
  )
