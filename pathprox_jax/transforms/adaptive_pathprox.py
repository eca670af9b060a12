"""Adaptive PathProx: the PathProx step taken in Adam's diagonal metric.

No published method does this: the PathProx paper lists adaptive variants as
future work, and ProxGen (Yun, Lozano & Yang) supplies the tool, a proximal
step in the preconditioner metric. This module combines them
(``docs/algorithms.md``, "Adaptive PathProx"); it is an experiment, not a
reproduction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from pathprox_jax._checks import (ScalarOrSchedule, check_float_params,
                                  check_number, check_schedule, check_units,
                                  check_update_args, scalar_at,
                                  refuse_schedule_free)
from pathprox_jax.balance import balance_groups
from pathprox_jax.prox.group import unit_norms
from pathprox_jax.prox.path import prox_path_norm
from pathprox_jax.transforms.proxgen import adam_init, adam_moments
from pathprox_jax.units import (INPUT_BIAS, INPUT_KERNEL, OUTPUT_BIAS,
                                OUTPUT_KERNEL, UNGROUPED_KERNEL, UnitSpec, scale_units,
                                where_units)

__all__ = ["adaptive_pathprox"]


def _scale_moments(groups, c_in, c_out, power):
  """Transforms moments like gradients under the balancing reparametrisation.

  Balancing multiplies a leaf by ``f`` (input bias ``c_in``, output kernel
  ``c_out / c_in``, output bias ``c_out``) without changing the network
  function, so the loss gradient with respect to that leaf is multiplied by
  ``1 / f``. Scaling the first moment by ``f^-1`` and the second by ``f^-2``
  gives the moments Adam would hold had the whole gradient history been
  computed in the new coordinates.
  """
  f_in, f_out = c_in ** -power, c_out ** -power
  return [scale_units(x, b=f_in[g], v=f_out[g] / f_in[g], c=f_out[g])
          for g, x in enumerate(groups)]


def _rescale_v(x, norms, min_norm):
  """``v_i <- ||w_i|| v_i`` for the units the projection will normalise."""
  nw, nv = norms
  f = jnp.where(nw > min_norm, nw, 1.0)
  return scale_units(x, v=f), (nw, nv * f)


def adaptive_pathprox(learning_rate: ScalarOrSchedule, weight_decay: float,
                      units: UnitSpec, *, b1: float = 0.9, b2: float = 0.999,
                      eps: float = 1e-8, bias_correction: bool = True,
                      balance: bool = True, rescale_moments: bool = True,
                      amsgrad: bool = False, rescale_v: bool = False,
                      freeze_dead: bool = False, layer_metric: str = "none",
                      include_bias_in_norm: bool = False,
                      min_norm: float = 1e-12, dead_threshold: float = 1e-12
                      ) -> optax.GradientTransformationExtraArgs:
  r"""PathProx with Adam's step and Adam's metric for the group shrinkage.

  Not a published method: the PathProx paper lists adaptive variants as
  future work; this combines its Algorithm 4.1 with ProxGen's proximal step
  in a preconditioner metric (``docs/algorithms.md``, "Adaptive PathProx"). Treat it as an
  experiment (see ``benchmarks/PROXGEN_RESULTS.md`` for measurements).

  Minimises the same path-norm objective as :func:`~pathprox_jax.pathprox`,
  ``L(W) + lambda sum_i ||w_i|| ||v_i|| + lambda/2 sum ||K||^2`` (``K`` the
  kernels in no group). Each step, with ``t`` from 1 and ``lr_t =
  learning_rate(t - 1)``:

  1. gradient ``g = grad L`` plus ``lambda K`` on ungrouped kernels
     (*coupled* decay: it enters Adam's moments; decoupled AdamW decay would
     make the fixed points solve ``grad L = -lambda K (sqrt(v^) + eps)``
     instead of ``grad L = -lambda K``, i.e. minimise a different objective);
  2. Adam: ``m, v`` updated, ``m^, v^`` bias-corrected (optional),
     ``d = sqrt(v^) + eps``, ``z = theta - lr_t m^ / d`` on every leaf;
  3. layer-wise balancing of ``z`` (optional, PathProx Appendix B);
  4. every unit: ``w_i <- z_w_i / ||z_w_i||`` (bias divided by the same norm);
  5. every unit: ``v_i <- argmin_x sum_j d_j (x_j - z_j)^2 / (2 lr_t) +
     lambda ||x||`` over the entries ``j`` of ``v_i``, the group prox in
     Adam's metric (``prox_group_lasso`` with ``scaling = lr_t / d``);
     ``v_i = 0`` iff ``||d z_v_i|| <= lambda lr_t``.

  With ``d`` constant this is PathProx with step ``lr_t / d``.

  Balancing and the Adam state: balancing rescales each output kernel by
  ``f = c_out / c_in`` (and biases by ``c_in``, ``c_out``) without changing
  the function, so the gradients of those leaves scale by ``1 / f`` from then
  on, while ``m`` and ``v`` still hold the old scale (for ``~1 / (1 - b2)``
  steps). With ``rescale_moments=True`` (default) the moments are
  transformed with the parameters (``m / f``, ``v / f^2``), and the prox of
  this step uses the transformed metric. What this solves: the state stays
  consistent with the parameters, and the group prox becomes equivariant,
  ``prox_{d/f}(f z) = f prox_d(z)`` (exactly for ``eps -> 0``), so *which*
  units are zeroed no longer depends on the arbitrary layer scales that
  balancing changes. What it does not solve: Adam's step ``lr m^ / d`` has
  the same absolute size in any scaling (``m / sqrt(v)`` is invariant), so the
  *relative* change of a layer still depends on its scale, and balancing
  changes the trajectory; ``eps`` breaks the equivariance for coordinates
  with ``sqrt(v^)`` comparable to ``eps``; the sphere projection of ``w`` is
  not a reparametrisation and its moments are left alone. With
  ``balance=False`` nothing is rescaled.

  Args:
    learning_rate: float or optax schedule.
    weight_decay: ``lambda`` (non-negative).
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    b1, b2: Adam's moment decays in ``[0, 1)``.
    eps: ``delta > 0`` added to ``sqrt(v^)``. With Adam's ``1e-8`` the
      effective step ``lr / (sqrt(v^) + eps)`` grows as the data loss
      vanishes and every dead unit can revive at once; ``weight_decay / 10``
      delays that, and a decaying learning rate stops it
      (``docs/algorithms.md``, "The revival cascade").
    bias_correction: Adam's bias correction.
    balance: layer-wise balancing before the prox each step.
    rescale_moments: transform ``m, v`` with the balancing scales.
    amsgrad: use the running maximum of ``v^`` as the metric (AMSGrad,
      Reddi et al. 2018): ``d`` never shrinks, so neither the step nor the
      shrinkage threshold ``lambda lr_t / d`` grows when gradients vanish
      late in training.
    freeze_dead: never let the second moments of a dead unit (``v_i = 0``
      at the start of the step: its input, bias and output entries)
      decrease: ``nu <- max(nu_old, b2 nu_old + (1 - b2) g^2)`` while it is
      dead (AMSGrad for dead units only). Otherwise they decay while the unit is dead (its
      input weights receive no gradient, its output weights only the small
      gradient of a network that fits the data), and the first steps after
      a revival are taken with ``lr / sqrt(v^)`` many times larger than
      while it was alive.
    layer_metric: ``"none"`` (Adam's per-entry metric), ``"outputs"`` (one
      metric value per output-kernel leaf: the mean of its ``v^``, for the
      step and the shrinkage) or ``"all"`` (the same for every grouped leaf).
    rescale_v: multiply each unit's output weights by the input norm the
      projection removes (``v_i <- ||z_w_i|| v_i``, before the shrinkage),
      so the projection keeps the network function and only the shrinkage
      changes it (PathProx Lemma 4.2's reparametrisation).
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    min_norm: units with ``||w_i|| <= min_norm`` are not projected.
    dead_threshold: group path norms at or below this count as dead in
      balancing.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    ``optax.ScaleByAdamState`` (``optax.ScaleByAmsgradState`` with
    ``amsgrad``); ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec, adaptive_pathprox
    >>> params = {"fc1": {"kernel": jnp.array([[3.0, 1.0], [4.0, 0.0]])},
    ...           "fc2": {"kernel": jnp.array([[1.0], [1e-3]])}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = adaptive_pathprox(1e-3, 0.5, spec, balance=False)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> params = optax.apply_updates(params, tx.update(grads, state, params)[0])
    >>> jnp.linalg.norm(params["fc1"]["kernel"], axis=0).round(5)   # unit sphere
    Array([1., 1.], dtype=float32)
    >>> params["fc2"]["kernel"].round(4)   # second unit pruned
    Array([[0.9985],
           [0.    ]], dtype=float32)

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1 and section 6;
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, eq. 2.
  """
  name = "adaptive_pathprox"
  check_units(units)
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay)
  check_number("b1", b1, 0.0, 1.0)
  check_number("b2", b2, 0.0, 1.0)
  check_number("eps", eps, 0.0, lo_open=True)
  check_number("min_norm", min_norm)
  check_number("dead_threshold", dead_threshold)
  if layer_metric not in ("none", "outputs", "all"):
    raise ValueError(f"adaptive_pathprox: layer_metric must be 'none', "
                     f"'outputs' or 'all'; got {layer_metric!r}.")

  def init_fn(params):
    refuse_schedule_free(name)
    units.check(params)
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    state = adam_init(params)
    if amsgrad:
      return optax.ScaleByAmsgradState(state.count, state.mu, state.nu,
                                       jax.tree.map(jnp.zeros_like, params))
    return state

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    check_update_args(units, updates, params, name)
    lr = scalar_at(learning_rate, state.count)
    ungrouped = units.mask(UNGROUPED_KERNEL)(params)
    grads = jax.tree.map(lambda g, p, u: g + weight_decay * p if u else g,
                         updates, params, ungrouped)
    mu, nu, m_hat, v_hat, count_inc = adam_moments(grads, state, b1, b2,
                                                   bias_correction)
    if freeze_dead:
      nu = units.scatter(nu, [
          where_units(unit_norms(x)[1] > 0, new,
                      jax.tree.map(jnp.maximum, new, old))
          for x, new, old in zip(units.gather(params), units.gather(nu),
                                 units.gather(state.nu))])
      v_hat = (optax.tree_utils.tree_bias_correction(nu, b2, count_inc)
               if bias_correction else nu)
    if amsgrad:
      v_hat = nu_max = jax.tree.map(jnp.maximum, state.nu_max, v_hat)
    if layer_metric != "none":
      roles = ((OUTPUT_KERNEL,) if layer_metric == "outputs" else
               (OUTPUT_KERNEL, INPUT_KERNEL, INPUT_BIAS, OUTPUT_BIAS))
      which = units.mask(*roles)(params)
      v_hat = jax.tree.map(lambda v, m: jnp.full_like(v, jnp.mean(v)) if m
                           else v, v_hat, which)
    z = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps),
                     params, m_hat, v_hat)
    groups = units.gather(z)
    v_groups = units.gather(v_hat)
    norms = [unit_norms(x) for x in groups]
    if balance:
      groups, norms, (c_in, c_out) = balance_groups(groups, norms,
                                                    dead_threshold, units.links)
      if rescale_moments:
        mu = units.scatter(mu, _scale_moments(units.gather(mu), c_in, c_out, 1))
        nu = units.scatter(nu, _scale_moments(units.gather(nu), c_in, c_out, 2))
        v_groups = _scale_moments(v_groups, c_in, c_out, 2)
        if amsgrad:
          nu_max = units.scatter(nu_max, v_groups)

    active = lr > 0
    safe_lr = jnp.where(active, lr, 1.0)
    new = []
    for x, vg, n in zip(groups, v_groups, norms):
      scaling = tuple(safe_lr / (jnp.sqrt(v) + eps) for v in vg.v)
      if rescale_v:
        x, n = _rescale_v(x, n, min_norm)
      y = prox_path_norm(x, weight_decay, scaling,
                         include_bias_in_norm=include_bias_in_norm,
                         min_norm=min_norm, norms=n)
      new.append(y.replace(v=tuple(jnp.where(active, a, b)
                                   for a, b in zip(y.v, x.v))))
    z = units.scatter(z, new)
    out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), z, params)
    if amsgrad:
      return out, optax.ScaleByAmsgradState(count_inc, mu, nu, nu_max)
    return out, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
