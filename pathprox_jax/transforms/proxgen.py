"""ProxGen: stochastic proximal gradient steps in a diagonal preconditioner metric.

ProxGen (Yun, Lozano & Yang, "A General Family of Stochastic Proximal Gradient
Methods for Deep Learning", Algorithm 1 and eq. 2) replaces the subgradient of
a non-smooth regulariser by an exact proximal step in the metric of the
optimizer's preconditioner ``D_t = C_t + delta``::

    theta_{t+1} = prox^{D_t}_{alpha_t lambda R}(theta_t - alpha_t D_t^{-1} m_t)
                = argmin_y  sum_i (y_i - z_i)^2 / (2 s_i) + lambda R(y),
    z = theta_t - alpha_t m_t / D_t,        s = alpha_t / D_t.

With the uniform prox signature ``prox(x, reg, scaling)`` of
:mod:`pathprox_jax.prox` this is ``prox(z, lambda, s)`` leaf by leaf, which
covers every separable regulariser (``prox_l1``, ``prox_l0``, ``prox_l_half``,
``prox_l_two_thirds``, ``prox_binary``) and the group lasso
(``prox_group_lasso`` with an array ``scaling``; see
:func:`group_prox_from_units`).

The transforms here are complete optimizers (they own the moments, because
the prox needs the preconditioner); like :func:`~pathprox_jax.path_prox` they
return ``prox(z) - params`` so the usual ``optax.apply_updates`` applies them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pathprox_jax.prox.group import prox_group_lasso
from pathprox_jax.transforms._common import (
  ScalarOrSchedule,
  check_hyperparam,
  check_schedule,
  check_units,
  require_params,
  scalar_at,
)
from pathprox_jax.units import OUTPUT_KERNEL, UnitSpec, fmt, normalize_path

ProxFn = Callable[..., jax.Array]
MaskOrFn = (
  Any  # bool pytree (or prefix of one), callable params -> bool pytree, or None
)

__all__ = [
  "ProxGenSGDState",
  "UnitGroupProx",
  "group_prox_from_units",
  "kernel_mask",
  "proxgen_adam",
  "proxgen_sgd",
]


# --------------------------------------------------------------------------
# Validation and masks (shared with adaptive_pathprox and the baselines)
# --------------------------------------------------------------------------


def is_static_number(value: Any) -> bool:
  """True for Python / NumPy numbers and concrete arrays (not tracers or schedules)."""
  return not callable(value) and not isinstance(value, jax.core.Tracer)


def check_interval(
  name: str,
  value: Any,
  lo: float,
  hi: float,
  *,
  lo_open: bool = False,
  hi_open: bool = True,
) -> None:
  """Raises ``ValueError`` unless a static scalar ``value`` lies in the interval.

  Traced values (``optax.inject_hyperparams`` under ``jit``) pass unchecked.
  """
  if not is_static_number(value):
    return
  if jnp.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(value)}.")
  v = float(value)
  bad = (
    math.isnan(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi)
  )
  if bad:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}; got {v}.")


def check_float_params(params: Any, name: str) -> None:
  """Raises ``ValueError`` naming the first non-floating leaf of ``params``."""
  for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
        f"{name}: parameter '{fmt(normalize_path(kp))}' has dtype {dtype} "
        f"and shape {jnp.shape(leaf)}; only floating-point parameters can be "
        "optimised. Filter them out (e.g. nnx.Optimizer(..., wrt=nnx.Param))."
      )


def kernel_mask(params: Any) -> Any:
  """The default regularisation mask: ``True`` for every leaf named ``kernel``.

  Examples:
    >>> import jax.numpy as jnp
    >>> kernel_mask({"fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
    {'fc': {'bias': False, 'kernel': True}}
  """
  return jax.tree_util.tree_map_with_path(
    lambda kp, _: (normalize_path(kp) or ("",))[-1] == "kernel", params
  )


def mask_leaves(mask: MaskOrFn, params: Any, name: str) -> list[bool]:
  """Resolves ``mask`` to one Python bool per leaf of ``params`` (flatten order).

  ``mask`` is ``None`` (every ``kernel`` leaf), a callable ``params -> bool
  pytree`` (as ``optax.masked`` accepts, e.g. ``spec.mask("output_kernel")``)
  or a bool pytree. Matching is by normalised path, and a mask leaf also
  covers every parameter below it, so a prefix tree like
  ``{"encoder": True, "head": False}`` works, and masks built on an
  ``nnx.State`` of Variables match the pure arrays optax sees.
  """
  if mask is None:
    mask = kernel_mask
  tree = mask(params) if callable(mask) else mask
  table = {}
  for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.core.Tracer):
      raise ValueError(
        f"{name}: mask entries must be static Python bools; "
        f"'{fmt(normalize_path(kp))}' is traced."
      )
    table[normalize_path(kp)] = bool(leaf)
  out = []
  for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = normalize_path(kp)
    for cut in range(len(path), -1, -1):
      if path[:cut] in table:
        out.append(table[path[:cut]])
        break
    else:
      raise ValueError(
        f"{name}: the mask does not cover parameter '{fmt(path)}'. Mask "
        f"paths: {sorted(fmt(p) for p in table)}."
      )
  return out


def check_prox(
  prox: ProxFn, reg: Any, params: Any, mask: list[bool], name: str
) -> None:
  """Traces ``prox(leaf, reg, leaf)`` abstractly on every masked leaf at init.

  Catches a wrong signature or a shape-changing prox at ``init`` with the
  offending path and shape instead of deep inside ``update``.
  """
  reg0 = jnp.zeros([], jnp.float32) if callable(reg) else reg
  for (kp, leaf), on in zip(jax.tree_util.tree_flatten_with_path(params)[0], mask):
    if not on:
      continue
    try:
      out = jax.eval_shape(prox, leaf, reg0, leaf)
    except Exception as e:  # noqa: BLE001 - re-raised with context
      raise ValueError(
        f"{name}: prox failed on parameter '{fmt(normalize_path(kp))}' of "
        f"shape {jnp.shape(leaf)}; it must accept (x, reg, scaling) with an "
        f"array scaling shaped like x. Error: {e}"
      ) from e
    if getattr(out, "shape", None) != jnp.shape(leaf):
      raise ValueError(
        f"{name}: prox returned shape {getattr(out, 'shape', None)} for "
        f"parameter '{fmt(normalize_path(kp))}' of shape {jnp.shape(leaf)}."
      )


def check_common(name: str, prox: ProxFn, learning_rate, reg) -> None:
  if not callable(prox):
    raise TypeError(
      f"{name}: `prox` must be a function prox(x, reg, scaling); got {type(prox)}."
    )
  check_hyperparam("learning_rate", learning_rate)
  check_hyperparam("reg", reg)


# --------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------


def proximal_step(
  param: jax.Array,
  direction: jax.Array,
  scaling: jax.Array,
  prox: ProxFn | None,
  reg: Any,
  step_size: jax.Array,
) -> jax.Array:
  r"""One ProxGen step for one leaf; returns the update ``theta_{t+1} - theta_t``.

  ``z = theta - scaling * direction`` then ``prox(z, reg, scaling)`` (eq. 2 with
  ``scaling = alpha_t / (C_t + delta)`` and ``direction = m_t``). ``prox=None``
  means no regulariser on this leaf. A zero ``step_size`` makes the prox the
  identity (the metric is infinite), which is returned exactly instead of
  evaluating the operator at an infinite metric.
  """
  z = param - scaling * direction
  if prox is not None:
    shrunk = prox(z, reg, scaling)
    z = jnp.where(step_size > 0, shrunk, z)
  return (z - param).astype(param.dtype)


def adam_moments(
  grads: Any, state: optax.ScaleByAdamState, b1, b2, bias_correction: bool
):
  """Adam's moment update; returns ``(mu, nu, m_hat, v_hat, count + 1)``."""
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
  zeros = jax.tree.map(jnp.zeros_like, params)
  return optax.ScaleByAdamState(
    count=jnp.zeros([], jnp.int32), mu=zeros, nu=jax.tree.map(jnp.zeros_like, params)
  )


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


def _adam_like(
  name: str,
  learning_rate,
  prox,
  reg,
  b1,
  b2,
  eps,
  bias_correction,
  mask,
  *,
  two_stage: bool = False,
  uniform_prox_metric: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ProxGen-Adam and its two comparison variants (see ``baselines.py``).

  * default: ``theta+ = prox(theta - lr m/d; lambda, lr/d)`` (ProxGen, eq. 2);
  * ``uniform_prox_metric``: ``prox(theta - lr m/d; lambda, lr)`` (original
    ProxQuant, ProxGen Table 2 top row);
  * ``two_stage``: ``theta_hat = prox(theta - m/d; lambda, 1/d)``,
    ``theta+ = theta + lr (theta_hat - theta)`` (Prox-SGD, ProxGen eqs. 5-6).
  """
  check_common(name, prox, learning_rate, reg)
  check_interval("b1", b1, 0.0, 1.0)
  check_interval("b2", b2, 0.0, 1.0)
  check_interval("eps", eps, 0.0, math.inf, lo_open=True)

  def init_fn(params):
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    check_schedule("reg", reg)
    check_prox(prox, reg, params, mask_leaves(mask, params, name), name)
    return adam_init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, name)
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(reg, state.count)
    on = mask_leaves(mask, params, name)
    mu, nu, m_hat, v_hat, count_inc = adam_moments(
      updates, state, b1, b2, bias_correction
    )
    p_leaves, treedef = jax.tree.flatten(params)
    m_leaves = treedef.flatten_up_to(m_hat)
    v_leaves = treedef.flatten_up_to(v_hat)
    out = []
    for p, m, v, use in zip(p_leaves, m_leaves, v_leaves, on):
      inv_d = 1.0 / (jnp.sqrt(v) + eps)
      if two_stage:
        # Prox-SGD: the quadratic subproblem without the learning rate, then
        # a step of length lr towards its solution.
        direction = proximal_step(p, m, inv_d, prox if use else None, lam, jnp.ones([]))
        out.append((lr * direction).astype(p.dtype))
      elif uniform_prox_metric:
        z = p - lr * m * inv_d
        if use:
          z = jnp.where(lr > 0, prox(z, lam, lr), z)
        out.append((z - p).astype(p.dtype))
      else:
        out.append(proximal_step(p, m, lr * inv_d, prox if use else None, lam, lr))
    updates = jax.tree.unflatten(treedef, out)
    return updates, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def proxgen_adam(
  learning_rate: ScalarOrSchedule,
  prox: ProxFn,
  reg: ScalarOrSchedule,
  *,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  bias_correction: bool = True,
  mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal Adam (ProxGen, Algorithm 1 with Adam's preconditioner, eq. 2-4).

  Each step, with ``t`` counted from 1 and ``alpha_t = learning_rate(t - 1)``
  (the step count optax's own schedules see)::

      m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
      m^_t = m_t / (1 - b1^t)                  v^_t = v_t / (1 - b2^t)   (if bias_correction)
      d_t = sqrt(v^_t) + eps                   s_t = alpha_t / d_t
      theta_{t+1} = prox(theta_t - s_t m^_t, lambda, s_t)     on masked leaves
      theta_{t+1} = theta_t - s_t m^_t                       elsewhere (plain Adam)

  i.e. the minimiser of ``<m^_t, theta> + lambda R(theta) + ||theta -
  theta_t||^2_{D_t} / (2 alpha_t)``. For ``prox_l1`` this is eq. 3
  (soft threshold at ``alpha_t lambda / d_t``), for ``prox_l0`` eq. 4.
  ``update`` returns ``theta_{t+1} - theta_t``; the gradient must be that of
  the loss alone (the regulariser enters only through the prox). The paper's
  Algorithm 1 has no bias correction (``bias_correction=False`` reproduces
  it); with it, the first steps have the same scale as later ones. A zero
  learning rate (e.g. the first step of a warm-up) makes the prox the
  identity. A coordinate whose gradients have all been zero has ``d_t =
  eps`` and hence the huge threshold ``alpha_t lambda / eps``: the prox
  zeroes it, as eq. 2 prescribes (e.g. input weights of dead ReLU units).

  Args:
    learning_rate: ``alpha_t``, a float or an optax schedule.
    prox: ``prox(x, reg, scaling)`` returning ``argmin_y sum (y - x)^2 /
      (2 scaling) + reg R(y)`` with an array ``scaling`` shaped like ``x``, e.g.
      :func:`~pathprox_jax.prox.elementwise.prox_l1` or
      ``functools.partial(prox_group_lasso, axis=-2)``.
    reg: ``lambda`` (float or schedule), non-negative.
    b1: first-moment decay ``rho`` in ``[0, 1)``.
    b2: second-moment decay ``beta`` in ``[0, 1)``.
    eps: ``delta > 0``, added to ``sqrt(v^)``.
    bias_correction: Adam's bias correction of both moments.
    mask: which leaves are regularised: ``None`` (every leaf named
      ``kernel``; a prox with a ``default_mask`` attribute, such as
      :func:`group_prox_from_units`, supplies its own), a bool pytree (or a
      prefix of one) or a callable ``params -> bool pytree``, e.g.
      ``spec.mask("input_kernel", "output_kernel")``. Unmasked leaves get the
      plain Adam step.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is
    ``optax.ScaleByAdamState``; ``update`` needs ``params``. With
    ``optax.inject_hyperparams`` pass ``static_args=("prox", "mask")`` (optax
    would otherwise treat these callables as schedules).

  Raises:
    ValueError: at construction for negative or NaN hyper-parameters,
      ``b1``/``b2`` outside ``[0, 1)`` or ``eps <= 0``; at ``init`` for
      non-floating parameters or a prox that fails on a masked leaf (naming
      the path); at ``update`` without ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax.prox.elementwise import prox_l1
    >>> from pathprox_jax.transforms.proxgen import proxgen_adam
    >>> params = {"fc": {"kernel": jnp.array([0.5, 0.001]), "bias": jnp.zeros(2)}}
    >>> tx = proxgen_adam(0.01, prox_l1, reg=2.0)
    >>> state = tx.init(params)
    >>> grads = {"fc": {"kernel": jnp.array([1.0, -1.0]), "bias": jnp.ones(2)}}
    >>> updates, state = tx.update(grads, state, params)
    >>> new = optax.apply_updates(params, updates)   # threshold lr * reg / d = 0.02
    >>> new["fc"]["kernel"].round(4), new["fc"]["bias"].round(4)
    (Array([0.47, 0.  ], dtype=float32), Array([-0.01, -0.01], dtype=float32))
  """
  if mask is None:
    mask = getattr(prox, "default_mask", None)
  return _adam_like(
    "proxgen_adam", learning_rate, prox, reg, b1, b2, eps, bias_correction, mask
  )


class ProxGenSGDState(NamedTuple):
  """State of :func:`proxgen_sgd`: step count and momentum trace (``None`` without)."""

  count: jax.Array
  trace: Any


def proxgen_sgd(
  learning_rate: ScalarOrSchedule,
  prox: ProxFn,
  reg: ScalarOrSchedule,
  *,
  momentum: float = 0.0,
  nesterov: bool = False,
  mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal SGD (ProxGen with ``C_t = 0, delta = 1``): ``prox(theta - lr m, lambda, lr)``.

  ``m`` is the gradient, or with ``momentum`` the heavy-ball trace of
  ``optax.sgd`` (``m_t = g_t + momentum m_{t-1}``; Nesterov uses
  ``g_t + momentum m_t``). The paper's Algorithm 1 writes momentum as an
  average ``(1 - rho) sum rho^k g``; that is this trace times ``1 - rho``, so
  it corresponds to a gradient step ``(1 - rho)`` times shorter with the same
  prox threshold. The prox scaling is the scalar ``lr_t``: every coordinate
  gets the same threshold (``lambda lr_t`` for l1), which makes this the
  stochastic proximal gradient method of the PathProx paper when used with
  the group prox.

  Args:
    learning_rate: float or optax schedule.
    prox: ``prox(x, reg, scaling)`` (scalar ``scaling`` here).
    reg: ``lambda`` (float or schedule).
    momentum: heavy-ball momentum in ``[0, 1)``; 0 keeps no trace.
    nesterov: Nesterov momentum.
    mask: as in :func:`proxgen_adam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pathprox_jax.prox.elementwise import prox_l1
    >>> from pathprox_jax.transforms.proxgen import proxgen_sgd
    >>> params = {"kernel": jnp.array([1.0, 0.05])}
    >>> tx = proxgen_sgd(0.1, prox_l1, reg=1.0)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"kernel": jnp.zeros(2)}, state, params)
    >>> optax.apply_updates(params, updates)["kernel"]
    Array([0.9, 0. ], dtype=float32)
  """
  name = "proxgen_sgd"
  check_common(name, prox, learning_rate, reg)
  check_interval("momentum", momentum, 0.0, 1.0)
  if mask is None:
    mask = getattr(prox, "default_mask", None)
  use_trace = not (isinstance(momentum, (int, float)) and momentum == 0)

  def init_fn(params):
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    check_schedule("reg", reg)
    check_prox(prox, reg, params, mask_leaves(mask, params, name), name)
    trace = jax.tree.map(jnp.zeros_like, params) if use_trace else None
    return ProxGenSGDState(count=jnp.zeros([], jnp.int32), trace=trace)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, name)
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(reg, state.count)
    on = mask_leaves(mask, params, name)
    trace = None
    direction = updates
    if use_trace:
      trace = jax.tree.map(lambda g, t: g + momentum * t, updates, state.trace)
      direction = (
        jax.tree.map(lambda g, t: g + momentum * t, updates, trace)
        if nesterov
        else trace
      )
    p_leaves, treedef = jax.tree.flatten(params)
    d_leaves = treedef.flatten_up_to(direction)
    out = [
      proximal_step(p, d, lr, prox if use else None, lam, lr)
      for p, d, use in zip(p_leaves, d_leaves, on)
    ]
    return (
      jax.tree.unflatten(treedef, out),
      ProxGenSGDState(count=optax.safe_increment(state.count), trace=trace),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------
# Group sparsity over homogeneous units
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitGroupProx:
  r"""Group lasso over units' output weights, as a prox with its own mask.

  ``UnitGroupProx(units)(x, reg, scaling)`` is ``prox_group_lasso(x, reg,
  scaling, axis=-2)``: the groups are the slices ``v_i = x[..., i, :]``, the
  output weights of unit ``i`` (Dense ``(n, out)`` or Conv ``(kh, kw, n,
  out)``). In the Adam metric (array ``scaling``) there is no closed form and
  the diagonal-metric group prox (ALGORITHMS.md section 4) is used.
  ``default_mask`` selects the output kernels of ``units``, which
  :func:`proxgen_adam` and :func:`proxgen_sgd` use when ``mask`` is ``None``.
  """

  units: UnitSpec
  axis: int = -2

  def __call__(self, x: jax.Array, reg: Any, scaling: Any = 1.0) -> jax.Array:
    return prox_group_lasso(x, reg, scaling, axis=self.axis)

  @property
  def default_mask(self) -> Callable[[Any], Any]:
    return self.units.mask(OUTPUT_KERNEL)


def group_prox_from_units(units: UnitSpec) -> UnitGroupProx:
  r"""Unit-wise group sparsity for :func:`proxgen_adam`: ``lambda sum_i ||v_i||``.

  Every hidden unit's output weights form one group, so a unit is removed
  exactly when its group is zeroed. Only ``v`` is penalised: with a
  homogeneous activation the network can move scale from ``v_i`` into
  ``w_i`` at no cost, so pair this with weight decay on the input kernels or
  use :func:`~pathprox_jax.transforms.adaptive_pathprox.adaptive_pathprox`,
  which fixes ``||w_i|| = 1``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax import UnitSpec
    >>> from pathprox_jax.transforms.proxgen import group_prox_from_units, proxgen_adam
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = proxgen_adam(1e-3, group_prox_from_units(spec), reg=1e-4)
    >>> state = tx.init(params)
  """
  check_units(units)
  return UnitGroupProx(units)
