"""Adaptive PathProx: the PathProx step taken in Adam's diagonal metric.

No published method does this: the PathProx paper lists adaptive variants as
future work, and ProxGen (Yun, Lozano & Yang) supplies the tool, a proximal
step in the preconditioner metric. This module combines them
(ALGORITHMS.md section 4, last item); it is an experiment, not a
reproduction.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from pathprox_jax.balance import apply_layer_scales, group_unit_norms, layer_scales
from pathprox_jax.prox.path import UnitWeights, prox_path_norm
from pathprox_jax.transforms._common import (ScalarOrSchedule, check_hyperparam,
                                             check_schedule, check_units,
                                             require_params, scalar_at)
from pathprox_jax.transforms.proxgen import (adam_init, adam_moments,
                                             check_float_params, check_interval)
from pathprox_jax.units import (INPUT_BIAS, INPUT_KERNEL, OUTPUT_KERNEL,
                                UNGROUPED_KERNEL, UnitSpec, group_leaves)

__all__ = ["adaptive_pathprox"]


def _scale_moments(leaves, positions, c_in, c_out, power):
  """Transforms moments like gradients under the balancing reparametrisation.

  Balancing multiplies a leaf by ``f`` (input bias ``c_in``, output kernel
  ``c_out / c_in``, output bias ``c_out``) without changing the network
  function, so the loss gradient with respect to that leaf is multiplied by
  ``1 / f``. Scaling the first moment by ``f^-1`` and the second by ``f^-2``
  gives the moments Adam would hold had the whole gradient history been
  computed in the new coordinates.
  """
  return apply_layer_scales(leaves, positions, c_in ** -power, c_out ** -power)


def adaptive_pathprox(learning_rate: ScalarOrSchedule, weight_decay: float,
                      units: UnitSpec, *, b1: float = 0.9, b2: float = 0.999,
                      eps: float = 1e-8, bias_correction: bool = True,
                      balance: bool = True, rescale_moments: bool = True,
                      include_bias_in_norm: bool = False,
                      dead_threshold: float = 1e-12
                      ) -> optax.GradientTransformationExtraArgs:
  r"""PathProx with Adam's step and Adam's metric for the group shrinkage.

  Not a published method: the PathProx paper lists adaptive variants as
  future work; this combines its Algorithm 4.1 with ProxGen's proximal step
  in a preconditioner metric (ALGORITHMS.md section 4). Treat it as an
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
    eps: ``delta > 0`` added to ``sqrt(v^)``.
    bias_correction: Adam's bias correction.
    balance: layer-wise balancing before the prox each step.
    rescale_moments: transform ``m, v`` with the balancing scales.
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    dead_threshold: group path norms at or below this count as dead in
      balancing.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    ``optax.ScaleByAdamState``; ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec
    >>> from pathprox_jax.transforms.adaptive_pathprox import adaptive_pathprox
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
  """
  name = "adaptive_pathprox"
  check_units(units)
  check_hyperparam("learning_rate", learning_rate)
  check_hyperparam("weight_decay", weight_decay, allow_schedule=False)
  check_interval("b1", b1, 0.0, 1.0)
  check_interval("b2", b2, 0.0, 1.0)
  check_interval("eps", eps, 0.0, math.inf, lo_open=True)

  def init_fn(params):
    units.check(params)
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    return adam_init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, name)
    lr = scalar_at(learning_rate, state.count)
    ungrouped = units.mask(UNGROUPED_KERNEL)(params)
    grads = jax.tree.map(lambda g, p, u: g + weight_decay * p if u else g,
                         updates, params, ungrouped)
    mu, nu, m_hat, v_hat, count_inc = adam_moments(grads, state, b1, b2,
                                                   bias_correction)

    p_leaves, treedef, positions = group_leaves(units, params)
    m_leaves = treedef.flatten_up_to(m_hat)
    v_leaves = treedef.flatten_up_to(v_hat)
    z = [p - lr * m / (jnp.sqrt(v) + eps)
         for p, m, v in zip(p_leaves, m_leaves, v_leaves)]

    if balance:
      norms = group_unit_norms(z, positions)
      pn = jnp.stack([jnp.sum(nw * nv) for nw, nv in norms])
      c_in, c_out = layer_scales(pn, dead_threshold)
      z = apply_layer_scales(z, positions, c_in, c_out)
      if rescale_moments:
        mu = jax.tree.unflatten(treedef, _scale_moments(
            treedef.flatten_up_to(mu), positions, c_in, c_out, 1))
        nu = jax.tree.unflatten(treedef, _scale_moments(
            treedef.flatten_up_to(nu), positions, c_in, c_out, 2))
        v_leaves = _scale_moments(v_leaves, positions, c_in, c_out, 2)

    active = lr > 0
    new = list(z)
    for pos in positions:
      v_idx = pos[OUTPUT_KERNEL]
      scaling = jnp.where(active, lr, 1.0) / (jnp.sqrt(v_leaves[v_idx]) + eps)
      b = z[pos[INPUT_BIAS]] if INPUT_BIAS in pos else None
      y = prox_path_norm(UnitWeights(z[pos[INPUT_KERNEL]], b, z[v_idx]),
                         weight_decay, scaling,
                         include_bias=include_bias_in_norm)
      new[pos[INPUT_KERNEL]] = y.w
      new[v_idx] = jnp.where(active, y.v, z[v_idx])
      if b is not None:
        new[pos[INPUT_BIAS]] = y.b

    out = [(n - p).astype(p.dtype) for n, p in zip(new, p_leaves)]
    return (jax.tree.unflatten(treedef, out),
            optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
