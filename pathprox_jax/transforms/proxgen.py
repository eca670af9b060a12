"""ProxGen: stochastic proximal gradient steps in a diagonal preconditioner metric.

ProxGen replaces the subgradient of a non-smooth regulariser by an exact
proximal step in the metric of the optimizer's preconditioner
``D_t = C_t + delta``::

    theta_{t+1} = argmin_y  sum_i (y_i - z_i)^2 / (2 s_i) + lambda R(y),
    z = theta_t - alpha_t m_t / D_t,        s = alpha_t / D_t.

The transforms call a *tree prox* (:mod:`pathprox_jax.prox.tree`): an
elementwise ``prox(x, weight_decay, scaling)`` of :mod:`pathprox_jax.prox`
(``prox_l1``, ``prox_l0``, ``prox_l_half``, ``prox_l_two_thirds``,
``prox_binary``) is lifted to the masked leaves; a structured one, whose
groups span several leaves (``unit_group_lasso``: one group per hidden
unit), acts on the whole tree at once.

The transforms own the moments (the prox needs the preconditioner) and
return ``theta_{t+1} - theta_t``, so ``optax.apply_updates`` applies them.

References:
  Yun, Lozano and Yang, "A General Family of Stochastic Proximal Gradient
  Methods for Deep Learning", arXiv:2007.07484 (NeurIPS 2021: "Adaptive
  Proximal Gradient Methods for Structured Neural Networks"), Algorithm 1
  and eq. 2; ``docs/algorithms.md``, "ProxGen".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pathprox_jax._checks import (
    ScalarOrSchedule,
    check_float_params,
    check_number,
    check_schedule,
    checked,
    scalar_at,
)
from pathprox_jax._numerics import accumulation_dtype
from pathprox_jax.prox.tree import MaskOrFn, as_tree_prox

__all__ = ["ProxGenSGDState", "proxgen_adam", "proxgen_sgd"]


def init_checks(name, params, learning_rate, weight_decay, prox) -> None:
  """The ``init`` checks of every ProxGen transform: float params,
  schedules returning scalars, and a prox that acts on these params."""
  check_float_params(params, name)
  check_schedule("learning_rate", learning_rate)
  check_schedule("weight_decay", weight_decay)
  if any(hasattr(x, "shape") for x in jax.tree.leaves(params)):
    prox.check(params, name)


def identity_at_zero_step(learning_rate, new: Any, z: Any) -> Any:
  """``new`` where ``learning_rate > 0``, else ``z``: a zero step makes the
  prox the identity, returned exactly."""
  return jax.tree.map(lambda a, b: jnp.where(learning_rate > 0, a, b), new, z)


# --------------------------------------------------------------------------
# Adam's moments
# --------------------------------------------------------------------------


def adam_moments(
    grads: Any, state: optax.ScaleByAdamState, b1, b2, bias_correction: bool
):
  """Adam's moment update; returns ``(mu, nu, m_hat, v_hat, count + 1)``.

  Examples:
    >>> g = {"w": jnp.array([2.0])}
    >>> _, _, m_hat, v_hat, count = adam_moments(g, adam_init(g), 0.9, 0.999, True)
    >>> m_hat["w"].round(3), v_hat["w"].round(3), count
    (Array([2.], dtype=float32), Array([4.], dtype=float32), Array(1, dtype=int32))
  """
  mu = optax.tree_utils.tree_update_moment(grads, state.mu, b1, 1)
  nu = optax.tree_utils.tree_update_moment_per_elem_norm(grads, state.nu, b2, 2)
  count_inc = optax.safe_increment(state.count)
  if bias_correction:
    m_hat = optax.tree_utils.tree_bias_correction(mu, b1, count_inc)
    v_hat = optax.tree_utils.tree_bias_correction(nu, b2, count_inc)
  else:
    m_hat, v_hat = mu, nu
  return mu, nu, m_hat, v_hat, count_inc


def adam_init(params: Any) -> optax.ScaleByAdamState:
  """Zero moments in at least float32 (float16 would underflow ``eps``).

  Examples:
    >>> adam_init({"w": jnp.ones(2, jnp.float16)}).mu["w"].dtype
    dtype('float32')
  """

  def zeros(p):
    return jnp.zeros(jnp.shape(p), accumulation_dtype(jnp.result_type(p)))

  return optax.ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=jax.tree.map(zeros, params),
      nu=jax.tree.map(zeros, params),
  )


def check_adam_args(name, learning_rate, weight_decay, b1, b2, eps) -> None:
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay, schedule=True)
  check_number("b1", b1, 0.0, 1.0)
  check_number("b2", b2, 0.0, 1.0)
  check_number("eps", eps, 0.0, lo_open=True)


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


def adam_family(
    name: str,
    learning_rate,
    weight_decay,
    prox,
    b1,
    b2,
    eps,
    bias_correction,
    mask,
    *,
    rule: str = "proxgen",
) -> optax.GradientTransformationExtraArgs:
  """ProxGen-Adam and its two comparison rules (see ``baselines.py``).

  * ``"proxgen"``: ``theta+ = prox(theta - lr m/d; lambda, lr/d)`` (ProxGen eq. 2);
  * ``"uniform"``: ``prox(theta - lr m/d; lambda, lr)`` (original ProxQuant);
  * ``"two_stage"``: ``theta_hat = prox(theta - m/d; lambda, 1/d)``,
    ``theta+ = theta + lr (theta_hat - theta)`` (Prox-SGD, eqs. 5-6).
  """
  check_adam_args(name, learning_rate, weight_decay, b1, b2, eps)
  prox = as_tree_prox(prox, mask, name)

  def init_fn(params):
    init_checks(name, params, learning_rate, weight_decay, prox)
    return adam_init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(weight_decay, state.count)
    mu, nu, m_hat, v_hat, count_inc = adam_moments(
        updates, state, b1, b2, bias_correction
    )
    inv_d = jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v) + eps), v_hat)
    if rule == "two_stage":
      # Prox-SGD: the quadratic subproblem without the learning rate, then a
      # step of length lr towards its solution.
      z = jax.tree.map(lambda p, m, i: p - i * m, params, m_hat, inv_d)
      target = prox(z, lam, inv_d)
      out = jax.tree.map(
          lambda t, p: (lr * (t - p)).astype(p.dtype), target, params
      )
    else:
      if rule == "uniform":
        scaling = lr
        z = jax.tree.map(lambda p, m, i: p - lr * m * i, params, m_hat, inv_d)
      else:
        scaling = jax.tree.map(lambda i: lr * i, inv_d)
        z = jax.tree.map(lambda p, m, s: p - s * m, params, m_hat, scaling)
      new = identity_at_zero_step(lr, prox(z, lam, scaling), z)
      out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new, params)
    return out, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

  return checked(
      name, None, optax.GradientTransformationExtraArgs(init_fn, update_fn)
  )


def proxgen_adam(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    prox: Any,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correction: bool = True,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal Adam (ProxGen, Algorithm 1 with Adam's preconditioner).

  Each step, with ``t`` counted from 1 and ``alpha_t = learning_rate(t - 1)``::

      m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
      m^_t = m_t / (1 - b1^t)                  v^_t = v_t / (1 - b2^t)   (if bias_correction)
      d_t = sqrt(v^_t) + eps                   s_t = alpha_t / d_t
      theta_{t+1} = prox(theta_t - s_t m^_t, weight_decay, s_t)     on masked leaves
      theta_{t+1} = theta_t - s_t m^_t                              elsewhere

  i.e. the minimiser of ``<m^_t, theta> + lambda R(theta) + ||theta -
  theta_t||^2_{D_t} / (2 alpha_t)``. For ``prox_l1`` this is the soft
  threshold at ``alpha_t lambda / d_t``. The gradient must be that of the
  loss alone. The paper's Algorithm 1 has no bias correction
  (``bias_correction=False`` reproduces it). A zero learning rate makes the
  prox the identity. A coordinate whose gradients have all been zero has
  ``d_t = eps`` and the huge threshold ``alpha_t lambda / eps``: the prox
  zeroes it, as eq. 2 prescribes.

  Args:
    learning_rate: ``alpha_t``, a float or an optax schedule.
    weight_decay: ``lambda``, the strength of ``R`` (float or schedule).
    prox: ``prox(x, weight_decay, scaling)`` returning ``argmin_y sum (y -
      x)^2 / (2 scaling) + weight_decay R(y)`` with an array ``scaling``
      shaped like ``x`` (:func:`~pathprox_jax.prox.prox_l1`, ...), or a
      tree prox (:mod:`pathprox_jax.prox.tree`, e.g.
      ``ppx.prox.unit_group_lasso(units)``).
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``delta > 0``, added to ``sqrt(v^)``.
    bias_correction: Adam's bias correction of both moments.
    mask: which leaves an elementwise prox regularises: ``None`` (every
      kernel), a bool pytree (or a prefix of one) or a callable
      ``params -> bool pytree``. Unmasked leaves get the plain Adam step.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is
    ``optax.ScaleByAdamState``; ``update`` needs ``params``. With
    ``optax.inject_hyperparams`` pass ``static_args=("prox", "mask")``.

  Raises:
    ValueError: at construction for negative or NaN hyper-parameters,
      ``b1``/``b2`` outside ``[0, 1)`` or ``eps <= 0``; at ``init`` for
      non-floating parameters or a prox that fails on a masked leaf (naming
      the path); at ``update`` without ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {"fc": {"kernel": jnp.array([[0.5, 0.001]]), "bias": jnp.zeros(2)}}
    >>> tx = ppx.proxgen_adam(0.01, 2.0, ppx.prox.prox_l1)
    >>> state = tx.init(params)
    >>> grads = {"fc": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.ones(2)}}
    >>> updates, state = tx.update(grads, state, params)
    >>> new = optax.apply_updates(params, updates)   # threshold lr * weight_decay / d = 0.02
    >>> new["fc"]["kernel"].round(4), new["fc"]["bias"].round(4)
    (Array([[0.47, 0.  ]], dtype=float32), Array([-0.01, -0.01], dtype=float32))

  References:
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, Algorithm 1, eqs. 2-4.
  """
  return adam_family(
      "proxgen_adam",
      learning_rate,
      weight_decay,
      prox,
      b1,
      b2,
      eps,
      bias_correction,
      mask,
  )


class ProxGenSGDState(NamedTuple):
  """State of :func:`proxgen_sgd`: step count and momentum trace (``None`` without).

  Examples:
    >>> import jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> ppx.proxgen_sgd(0.1, 1e-3, ppx.prox.prox_l1).init({"w": jnp.ones(2)}).trace is None
    True
  """

  count: jax.Array
  trace: Any


def proxgen_sgd(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    prox: Any,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal SGD (ProxGen with ``C_t = 0, delta = 1``): ``prox(theta - lr m, lambda, lr)``.

  ``m`` is the gradient, or with ``momentum`` the heavy-ball trace of
  ``optax.sgd`` (``m_t = g_t + momentum m_{t-1}``; Nesterov uses
  ``g_t + momentum m_t``). The prox scaling is the scalar ``lr_t``: with
  ``ppx.prox.unit_group_lasso`` this is the stochastic proximal gradient
  method on the units' output weights.

  Args:
    learning_rate: float or optax schedule.
    weight_decay: ``lambda`` (float or schedule).
    prox: as in :func:`proxgen_adam` (a scalar ``scaling`` here).
    momentum: heavy-ball momentum in ``[0, 1)``; 0 keeps no trace.
    nesterov: Nesterov momentum.
    mask: as in :func:`proxgen_adam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {"kernel": jnp.array([[1.0, 0.05]])}
    >>> tx = ppx.proxgen_sgd(0.1, 1.0, ppx.prox.prox_l1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"kernel": jnp.zeros((1, 2))}, state, params)
    >>> optax.apply_updates(params, updates)["kernel"]
    Array([[0.9, 0. ]], dtype=float32)

  References:
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, Algorithm 1.
  """
  name = "proxgen_sgd"
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay, schedule=True)
  check_number("momentum", momentum, 0.0, 1.0)
  use_trace = not (isinstance(momentum, (int, float)) and momentum == 0)
  prox = as_tree_prox(prox, mask, name)

  def init_fn(params):
    init_checks(name, params, learning_rate, weight_decay, prox)
    trace = jax.tree.map(jnp.zeros_like, params) if use_trace else None
    return ProxGenSGDState(count=jnp.zeros([], jnp.int32), trace=trace)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(weight_decay, state.count)
    trace, direction = None, updates
    if use_trace:
      trace = jax.tree.map(lambda g, t: g + momentum * t, updates, state.trace)
      direction = (
          jax.tree.map(lambda g, t: g + momentum * t, updates, trace)
          if nesterov
          else trace
      )
    z = jax.tree.map(lambda p, d: p - lr * d, params, direction)
    new = identity_at_zero_step(lr, prox(z, lam, lr), z)
    out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new, params)
    return out, ProxGenSGDState(
        count=optax.safe_increment(state.count), trace=trace
    )

  return checked(
      name, None, optax.GradientTransformationExtraArgs(init_fn, update_fn)
  )
