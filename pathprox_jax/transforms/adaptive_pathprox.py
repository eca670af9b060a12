"""Adaptive PathProx: the PathProx step taken in Adam's diagonal metric.

No published method does this: the PathProx paper lists adaptive variants as
future work, and ProxGen (Yun, Lozano & Yang) supplies the tool, a proximal
step in the preconditioner metric. This module combines them
(``docs/algorithms.md``, "Adaptive PathProx").
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from pathprox_jax._checks import (
    ScalarOrSchedule,
    check_float_params,
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
from pathprox_jax.transforms.proxgen import adam_init, adam_moments
from pathprox_jax.units import (
    UNGROUPED_KERNEL,
    UnitSpec,
    UnitWeights,
    scale_units,
)

__all__ = ["adaptive_pathprox", "adaptive_prox_groups", "scale_moments"]


def scale_moments(
    groups: Sequence[UnitWeights], c_in: jax.Array, c_out: jax.Array, power: int
) -> list[UnitWeights]:
  """Transforms moments like gradients under the balancing reparametrisation.

  Balancing multiplies a leaf by ``f`` (input bias ``c_in``, output kernel
  ``c_out / c_in``, output bias ``c_out``) without changing the network
  function, so the loss gradient with respect to that leaf is multiplied by
  ``1 / f``. Scaling the first moment (``power=1``) by ``f^-1`` and the
  second (``power=2``) by ``f^-2`` gives the moments Adam would hold had the
  whole gradient history been computed in the new coordinates.

  Examples:
    >>> from pathprox_jax.units import UnitWeights
    >>> m = UnitWeights.from_arrays(jnp.ones((1, 1)), jnp.ones((1, 1)))
    >>> scale_moments([m], jnp.array([1.0]), jnp.array([2.0]), 2)[0].v[0]
    Array([[0.25]], dtype=float32)
  """
  f_in, f_out = c_in**-power, c_out**-power
  return [
      scale_units(x, b=f_in[g], v=f_out[g] / f_in[g], c=f_out[g])
      for g, x in enumerate(groups)
  ]


def adaptive_prox_groups(
    groups: Sequence[UnitWeights],
    v_groups: Sequence[UnitWeights],
    learning_rate,
    weight_decay,
    eps,
    *,
    norms=None,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
) -> list[UnitWeights]:
  r"""The PathProx prox on split groups in Adam's metric ``d = sqrt(v^) + eps``.

  Every unit: ``w_i`` projected on the sphere, ``v_i`` shrunk by the group
  prox with ``scaling = learning_rate / d`` (``v_groups`` holds ``v^`` split
  like ``groups``). A zero learning rate leaves ``v`` unchanged.

  Examples:
    >>> from pathprox_jax.units import UnitWeights
    >>> x = UnitWeights.from_arrays(jnp.array([[3.], [4.]]), jnp.array([[0.5]]))
    >>> v_hat = UnitWeights.from_arrays(jnp.ones((2, 1)), jnp.full((1, 1), 4.0))
    >>> y = adaptive_prox_groups([x], [v_hat], 0.1, 1.0, 1e-8)[0]   # tau = 0.1 / 2
    >>> y.w[0].ravel(), y.v[0]
    (Array([0.6, 0.8], dtype=float32), Array([[0.45]], dtype=float32))
  """
  active = learning_rate > 0
  safe_lr = jnp.where(active, learning_rate, 1.0)
  norms = [unit_norms(x) for x in groups] if norms is None else norms
  out = []
  for x, vg, n in zip(groups, v_groups, norms):
    scaling = tuple(safe_lr / (jnp.sqrt(v) + eps) for v in vg.v)
    y = prox_path_norm(
        x,
        weight_decay,
        scaling,
        include_bias_in_norm=include_bias_in_norm,
        min_norm=min_norm,
        norms=n,
    )
    out.append(
        y.replace(v=tuple(jnp.where(active, a, b) for a, b in zip(y.v, x.v)))
    )
  return out


def adaptive_pathprox(
    learning_rate: ScalarOrSchedule,
    weight_decay: float,
    units: UnitSpec,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float | None = None,
    bias_correction: bool = True,
    balance: bool = True,
    include_bias_in_norm: bool = False,
    min_norm: float = MIN_NORM,
    dead_threshold: float = DEAD_THRESHOLD,
) -> optax.GradientTransformationExtraArgs:
  r"""PathProx with Adam's step and Adam's metric for the group shrinkage.

  Not a published method: the PathProx paper lists adaptive variants as
  future work; this combines its Algorithm 4.1 with ProxGen's proximal step
  in a preconditioner metric (``docs/algorithms.md``, "Adaptive PathProx"). Treat it as an
  experiment (see ``benchmarks/RESULTS.md`` for measurements).

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
  steps). The moments are therefore
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
    eps: ``delta > 0`` added to ``sqrt(v^)``; ``None`` (default) is the
      recommended ``max(weight_decay / 10, 1e-8)``. With Adam's ``1e-8`` the
      effective step ``lr / (sqrt(v^) + eps)`` grows as the data loss
      vanishes and every dead unit can revive at once; ``weight_decay / 10``
      delays that, and a decaying learning rate stops it
      (``docs/algorithms.md``, "The revival cascade"): pass a schedule such
      as ``optax.warmup_cosine_decay_schedule(0, peak, n // 20, n, 1e-5)``.
    bias_correction: Adam's bias correction.
    balance: layer-wise balancing before the prox each step.
    include_bias_in_norm: project ``[w_i; b_i]`` instead of ``w_i``.
    min_norm: units with ``||w_i|| <= min_norm`` are not projected.
    dead_threshold: group path norms at or below this count as dead in
      balancing.

  Moments are kept in at least float32, so float16 and bfloat16 params
  neither underflow ``eps`` nor divide zero by zero.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    ``optax.ScaleByAdamState``; ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax import UnitSpec, adaptive_pathprox
    >>> params = {"fc1": {"kernel": jnp.array([[3.0, 1.0], [4.0, 0.0]])},
    ...           "fc2": {"kernel": jnp.array([[1.0], [1e-3]])}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = adaptive_pathprox(1e-3, 0.5, spec, eps=1e-8, balance=False)
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
  if eps is not None:
    check_number("eps", eps, 0.0, lo_open=True)
  check_number("min_norm", min_norm)
  check_number("dead_threshold", dead_threshold)

  def init_fn(params):
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    return adam_init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = scalar_at(learning_rate, state.count)
    delta = (
        jnp.maximum(weight_decay / 10, 1e-8)
        if eps is None
        else jnp.asarray(eps)
    )
    ungrouped = units.mask(UNGROUPED_KERNEL)(params)
    grads = jax.tree.map(
        lambda g, p, u: g + weight_decay * p if u else g,
        updates,
        params,
        ungrouped,
    )
    mu, nu, m_hat, v_hat, count_inc = adam_moments(
        grads, state, b1, b2, bias_correction
    )
    z = jax.tree.map(
        lambda p, m, v: p - lr * m / (jnp.sqrt(v) + delta), params, m_hat, v_hat
    )
    groups, rest = units.split(z)
    v_groups, _ = units.split(v_hat)
    norms = [unit_norms(x) for x in groups]
    if balance:
      groups, norms, (c_in, c_out) = balance_layers_groups(
          groups, norms, links=units.links, dead_threshold=dead_threshold
      )
      (mu_g, mu_rest), (nu_g, nu_rest) = units.split(mu), units.split(nu)
      mu = units.merge(scale_moments(mu_g, c_in, c_out, 1), mu_rest)
      nu = units.merge(scale_moments(nu_g, c_in, c_out, 2), nu_rest)
      v_groups = scale_moments(v_groups, c_in, c_out, 2)
    z = units.merge(
        adaptive_prox_groups(
            groups,
            v_groups,
            lr,
            weight_decay,
            delta,
            norms=norms,
            include_bias_in_norm=include_bias_in_norm,
            min_norm=min_norm,
        ),
        rest,
    )
    out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), z, params)
    return out, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

  return checked(
      name, units, optax.GradientTransformationExtraArgs(init_fn, update_fn)
  )
