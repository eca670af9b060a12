"""ProxGen: stochastic proximal gradient steps in a diagonal preconditioner metric.

ProxGen replaces the subgradient of a non-smooth regulariser by an exact
proximal step in the metric of the optimizer's preconditioner
``D_t = C_t + delta``::

    theta_{t+1} = argmin_y  sum_i (y_i - z_i)^2 / (2 s_i) + lambda R(y),
    z = theta_t - alpha_t m_t / D_t,        s = alpha_t / D_t.

With the uniform signature ``prox(x, reg, scaling)`` of
:mod:`pathprox_jax.prox` this is ``prox(z, lambda, s)`` leaf by leaf, which
covers every separable regulariser (``prox_l1``, ``prox_l0``,
``prox_l_half``, ``prox_l_two_thirds``, ``prox_binary``). A *structured*
prox, whose groups span several leaves (:func:`group_prox_from_units`: one
group per hidden unit), acts on the whole tree at once.

The transforms own the moments (the prox needs the preconditioner) and
return ``theta_{t+1} - theta_t``, so ``optax.apply_updates`` applies them.

References:
  Yun, Lozano and Yang, "A General Family of Stochastic Proximal Gradient
  Methods for Deep Learning", arXiv:2007.07484 (NeurIPS 2021: "Adaptive
  Proximal Gradient Methods for Structured Neural Networks"), Algorithm 1
  and eq. 2; ``docs/algorithms.md``, "ProxGen".
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pathprox_jax import _deprecation
from pathprox_jax._checks import (ScalarOrSchedule, check_float_params,
                                  check_number, check_schedule, check_units,
                                  require_params, scalar_at,
                                  refuse_schedule_free)
from pathprox_jax.prox.group import group_lasso_slices
from pathprox_jax.units import UnitSpec, kernel_mask, path_str
from pathprox_jax.units.paths import is_params_placeholder

ProxFn = Callable[..., jax.Array]
MaskOrFn = Any  # bool pytree (or a prefix of one), params -> bool pytree, or None
_MISSING = object()

__all__ = ["ProxGenSGDState", "UnitGroupProx", "group_prox_from_units",
           "proxgen_adam", "proxgen_sgd"]


# --------------------------------------------------------------------------
# Structured proxes and masks
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitGroupProx:
  r"""Group lasso over every hidden unit's output weights, ``lambda sum_i ||v_i||``.

  A structured prox: unit ``i``'s group is entry ``i`` of every output
  slice of its :class:`~pathprox_jax.UnitGroup` (several leaves when a
  hidden layer feeds several heads), so it acts on the whole params tree:
  ``UnitGroupProx(units).apply(z, reg, scaling)`` with ``scaling`` a scalar
  or a tree shaped like ``z`` (the inverse metric). In Adam's metric there
  is no closed form and the diagonal-metric group prox is used.
  """
  units: UnitSpec

  def apply(self, z: Any, reg: Any, scaling: Any) -> Any:
    s_groups = None if _is_scalar(scaling) else self.units.gather(scaling)
    out = []
    for k, x in enumerate(self.units.gather(z)):
      s = scaling if s_groups is None else tuple(s_groups[k].v)
      out.append(x.replace(v=group_lasso_slices(x.v, x.v_axes, reg, s)))
    return self.units.scatter(z, out)


def _is_scalar(tree: Any) -> bool:
  """A scalar (number or 0-d array), as opposed to a tree of arrays."""
  if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(tree)):
    return False
  return getattr(tree, "ndim", None) == 0 or isinstance(tree, (int, float))


def _accepts_one_arg(fn: Callable) -> bool:
  try:
    inspect.signature(fn).bind(0)
    return True
  except (TypeError, ValueError):
    return False


def _is_prox(obj: Any) -> bool:
  """A prox (structured, or ``prox(x, reg, scaling)``), not a schedule."""
  return isinstance(obj, UnitGroupProx) or (callable(obj)
                                            and not _accepts_one_arg(obj))


def resolve_prox_args(name: str, weight_decay: Any, prox: Any, reg: Any):
  """``(weight_decay, prox)`` from the 0.2 order ``(learning_rate,
  weight_decay, prox)`` or, with a ``DeprecationWarning``, the 0.1 order
  ``(learning_rate, prox, reg)`` / ``reg=`` keyword."""
  old = False
  if reg is not _MISSING:
    old = True
    if prox is _MISSING and _is_prox(weight_decay):
      prox, weight_decay = weight_decay, reg
    elif weight_decay is _MISSING:
      weight_decay = reg
    else:
      raise TypeError(f"{name}: pass weight_decay (reg is its 0.1 name), not both.")
  elif prox is not _MISSING and _is_prox(weight_decay) and not _is_prox(prox):
    old, (weight_decay, prox) = True, (prox, weight_decay)
  if old:
    _deprecation.warn(f"{name}(learning_rate, prox, reg) is now {name}("
                      "learning_rate, weight_decay, prox)", stacklevel=4)
  if weight_decay is _MISSING or prox is _MISSING:
    raise TypeError(f"{name}(learning_rate, weight_decay, prox) needs both "
                    "weight_decay and prox.")
  if not _is_prox(prox):
    raise TypeError(f"{name}: `prox` must be prox(x, reg, scaling) or "
                    f"group_prox_from_units(units); got {prox!r}.")
  return weight_decay, prox


def mask_leaves(mask: MaskOrFn, params: Any, name: str) -> list[bool]:
  """Resolves ``mask`` to one Python bool per leaf of ``params`` (flatten order).

  ``mask`` is ``None`` (every kernel, :func:`~pathprox_jax.kernel_mask`), a
  callable ``params -> bool pytree`` (as ``optax.masked`` accepts) or a bool
  pytree. Matching is by path, and a mask leaf also covers everything below
  it, so a prefix tree like ``{"encoder": True, "head": False}`` works.
  """
  tree = (mask or kernel_mask)(params) if mask is None or callable(mask) else mask
  table = {}
  for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.core.Tracer):
      raise ValueError(f"{name}: mask entries must be static Python bools; "
                       f"'{path_str(kp)}' is traced.")
    table[path_str(kp)] = bool(leaf)
  out = []
  for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = path_str(kp)
    parts = path.split("/")
    for cut in range(len(parts), -1, -1):
      key = "/".join(parts[:cut])
      if key in table:
        out.append(table[key])
        break
    else:
      raise ValueError(f"{name}: the mask does not cover parameter '{path}'. "
                       f"Mask paths: {sorted(table)}.")
  return out


def check_prox(prox, weight_decay, mask, params, name: str) -> None:
  """Traces the prox abstractly at ``init`` on every leaf it will see, so a
  wrong signature or a shape change fails there, naming the path."""
  if is_params_placeholder(params):
    return        # optax.tree_map_params probes init with a placeholder
  reg0 = jnp.zeros([], jnp.float32) if callable(weight_decay) else weight_decay
  if isinstance(prox, UnitGroupProx):
    if mask is not None:
      raise ValueError(f"{name}: group_prox_from_units acts on the units' "
                       "output weights; do not pass a mask with it.")
    prox.units.check(params, where=f"params passed to {name}.init")
    jax.eval_shape(prox.apply, params, reg0, params)
    return
  on = mask_leaves(mask, params, name)
  for (kp, leaf), use in zip(jax.tree_util.tree_flatten_with_path(params)[0], on):
    if not use:
      continue
    try:
      out = jax.eval_shape(prox, leaf, reg0, leaf)
    except Exception as e:  # noqa: BLE001 - re-raised with context
      raise ValueError(
          f"{name}: prox failed on parameter '{path_str(kp)}' of shape "
          f"{jnp.shape(leaf)}; it must accept (x, reg, scaling) with an array "
          f"scaling shaped like x. Error: {e}") from e
    if getattr(out, "shape", None) != jnp.shape(leaf):
      raise ValueError(f"{name}: prox returned shape "
                       f"{getattr(out, 'shape', None)} for parameter "
                       f"'{path_str(kp)}' of shape {jnp.shape(leaf)}.")


def prox_tree(prox, z: Any, weight_decay, scaling: Any, mask, active) -> Any:
  """``prox(z, weight_decay, scaling)`` on the masked leaves of ``z`` (or the
  structured prox on the whole tree); ``z`` itself where ``active`` is False
  (a zero step: the prox is the identity, returned exactly).

  ``scaling`` is a scalar or a tree shaped like ``z``.
  """
  if isinstance(prox, UnitGroupProx):
    shrunk = prox.apply(z, weight_decay, scaling)
  else:
    leaves, treedef = jax.tree.flatten(z)
    s = ([scaling] * len(leaves) if _is_scalar(scaling)
         else treedef.flatten_up_to(scaling))
    on = mask_leaves(mask, z, "prox")
    shrunk = jax.tree.unflatten(treedef, [
        prox(x, weight_decay, si) if use else x
        for x, si, use in zip(leaves, s, on)])
  return jax.tree.map(lambda a, b: jnp.where(active, a, b), shrunk, z)


# --------------------------------------------------------------------------
# Adam's moments
# --------------------------------------------------------------------------


def adam_moments(grads: Any, state: optax.ScaleByAdamState, b1, b2,
                 bias_correction: bool):
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
  return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                mu=jax.tree.map(jnp.zeros_like, params),
                                nu=jax.tree.map(jnp.zeros_like, params))


def check_adam_args(name, learning_rate, weight_decay, b1, b2, eps) -> None:
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay, schedule=True)
  check_number("b1", b1, 0.0, 1.0)
  check_number("b2", b2, 0.0, 1.0)
  check_number("eps", eps, 0.0, lo_open=True)


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


def adam_family(name: str, learning_rate, weight_decay, prox, b1, b2, eps,
                bias_correction, mask, *, rule: str = "proxgen"
                ) -> optax.GradientTransformationExtraArgs:
  """ProxGen-Adam and its two comparison rules (see ``baselines.py``).

  * ``"proxgen"``: ``theta+ = prox(theta - lr m/d; lambda, lr/d)`` (ProxGen eq. 2);
  * ``"uniform"``: ``prox(theta - lr m/d; lambda, lr)`` (original ProxQuant);
  * ``"two_stage"``: ``theta_hat = prox(theta - m/d; lambda, 1/d)``,
    ``theta+ = theta + lr (theta_hat - theta)`` (Prox-SGD, eqs. 5-6).
  """
  check_adam_args(name, learning_rate, weight_decay, b1, b2, eps)

  def init_fn(params):
    refuse_schedule_free(name)
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    check_schedule("weight_decay", weight_decay)
    check_prox(prox, weight_decay, mask, params, name)
    return adam_init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, name)
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(weight_decay, state.count)
    mu, nu, m_hat, v_hat, count_inc = adam_moments(updates, state, b1, b2,
                                                   bias_correction)
    inv_d = jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v) + eps), v_hat)
    if rule == "two_stage":
      # Prox-SGD: the quadratic subproblem without the learning rate, then a
      # step of length lr towards its solution.
      z = jax.tree.map(lambda p, m, i: p - i * m, params, m_hat, inv_d)
      target = prox_tree(prox, z, lam, inv_d, mask, True)
      out = jax.tree.map(lambda t, p: (lr * (t - p)).astype(p.dtype), target,
                         params)
    else:
      if rule == "uniform":
        scaling = lr
        z = jax.tree.map(lambda p, m, i: p - lr * m * i, params, m_hat, inv_d)
      else:
        scaling = jax.tree.map(lambda i: lr * i, inv_d)
        z = jax.tree.map(lambda p, m, s: p - s * m, params, m_hat, scaling)
      new = prox_tree(prox, z, lam, scaling, mask, lr > 0)
      out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new, params)
    return out, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def proxgen_adam(learning_rate: ScalarOrSchedule,
                 weight_decay: ScalarOrSchedule = _MISSING, prox=_MISSING, *,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 bias_correction: bool = True, mask: MaskOrFn = None,
                 reg=_MISSING) -> optax.GradientTransformationExtraArgs:
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
    prox: ``prox(x, reg, scaling)`` returning ``argmin_y sum (y - x)^2 /
      (2 scaling) + reg R(y)`` with an array ``scaling`` shaped like ``x``
      (:func:`~pathprox_jax.prox_l1`, ...), or :func:`group_prox_from_units`.
    b1: first-moment decay in ``[0, 1)``.
    b2: second-moment decay in ``[0, 1)``.
    eps: ``delta > 0``, added to ``sqrt(v^)``.
    bias_correction: Adam's bias correction of both moments.
    mask: which leaves an elementwise prox regularises: ``None`` (every
      kernel), a bool pytree (or a prefix of one) or a callable
      ``params -> bool pytree``. Unmasked leaves get the plain Adam step.
    reg: deprecated name of ``weight_decay``.

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
    >>> tx = ppx.proxgen_adam(0.01, 2.0, ppx.prox_l1)
    >>> state = tx.init(params)
    >>> grads = {"fc": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.ones(2)}}
    >>> updates, state = tx.update(grads, state, params)
    >>> new = optax.apply_updates(params, updates)   # threshold lr * reg / d = 0.02
    >>> new["fc"]["kernel"].round(4), new["fc"]["bias"].round(4)
    (Array([[0.47, 0.  ]], dtype=float32), Array([-0.01, -0.01], dtype=float32))

  References:
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, Algorithm 1, eqs. 2-4.
  """
  weight_decay, prox = resolve_prox_args("proxgen_adam", weight_decay, prox,
                                         reg)
  return adam_family("proxgen_adam", learning_rate, weight_decay, prox, b1, b2,
                     eps, bias_correction, mask)


class ProxGenSGDState(NamedTuple):
  """State of :func:`proxgen_sgd`: step count and momentum trace (``None`` without)."""
  count: jax.Array
  trace: Any


def proxgen_sgd(learning_rate: ScalarOrSchedule,
                weight_decay: ScalarOrSchedule = _MISSING, prox=_MISSING, *,
                momentum: float = 0.0, nesterov: bool = False,
                mask: MaskOrFn = None, reg=_MISSING
                ) -> optax.GradientTransformationExtraArgs:
  r"""Proximal SGD (ProxGen with ``C_t = 0, delta = 1``): ``prox(theta - lr m, lambda, lr)``.

  ``m`` is the gradient, or with ``momentum`` the heavy-ball trace of
  ``optax.sgd`` (``m_t = g_t + momentum m_{t-1}``; Nesterov uses
  ``g_t + momentum m_t``). The prox scaling is the scalar ``lr_t``: with
  :func:`group_prox_from_units` this is the stochastic proximal gradient
  method on the units' output weights.

  Args:
    learning_rate: float or optax schedule.
    weight_decay: ``lambda`` (float or schedule).
    prox: as in :func:`proxgen_adam` (a scalar ``scaling`` here).
    momentum: heavy-ball momentum in ``[0, 1)``; 0 keeps no trace.
    nesterov: Nesterov momentum.
    mask: as in :func:`proxgen_adam`.
    reg: deprecated name of ``weight_decay``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import pathprox_jax as ppx
    >>> params = {"kernel": jnp.array([[1.0, 0.05]])}
    >>> tx = ppx.proxgen_sgd(0.1, 1.0, ppx.prox_l1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"kernel": jnp.zeros((1, 2))}, state, params)
    >>> optax.apply_updates(params, updates)["kernel"]
    Array([[0.9, 0. ]], dtype=float32)

  References:
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, Algorithm 1.
  """
  name = "proxgen_sgd"
  weight_decay, prox = resolve_prox_args(name, weight_decay, prox, reg)
  check_number("learning_rate", learning_rate, schedule=True)
  check_number("weight_decay", weight_decay, schedule=True)
  check_number("momentum", momentum, 0.0, 1.0)
  use_trace = not (isinstance(momentum, (int, float)) and momentum == 0)

  def init_fn(params):
    refuse_schedule_free(name)
    check_float_params(params, name)
    check_schedule("learning_rate", learning_rate)
    check_schedule("weight_decay", weight_decay)
    check_prox(prox, weight_decay, mask, params, name)
    trace = jax.tree.map(jnp.zeros_like, params) if use_trace else None
    return ProxGenSGDState(count=jnp.zeros([], jnp.int32), trace=trace)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, name)
    lr = scalar_at(learning_rate, state.count)
    lam = scalar_at(weight_decay, state.count)
    trace, direction = None, updates
    if use_trace:
      trace = jax.tree.map(lambda g, t: g + momentum * t, updates, state.trace)
      direction = (jax.tree.map(lambda g, t: g + momentum * t, updates, trace)
                   if nesterov else trace)
    z = jax.tree.map(lambda p, d: p - lr * d, params, direction)
    new = prox_tree(prox, z, lam, lr, mask, lr > 0)
    out = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new, params)
    return out, ProxGenSGDState(count=optax.safe_increment(state.count),
                                trace=trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def group_prox_from_units(units: UnitSpec) -> UnitGroupProx:
  r"""Unit-wise group sparsity for the ProxGen transforms: ``lambda sum_i ||v_i||``.

  Every hidden unit's output weights form one group, so a unit is removed
  exactly when its group is zeroed. Only ``v`` is penalised: with a
  homogeneous activation the network can move scale from ``v_i`` into
  ``w_i`` at no cost, so pair this with weight decay on the input kernels,
  or use :func:`~pathprox_jax.adaptive_pathprox`, which fixes ``||w_i|| = 1``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = ppx.proxgen_adam(1e-3, 1e-4, ppx.group_prox_from_units(spec))
    >>> state = tx.init(params)
  """
  check_units(units)
  return UnitGroupProx(units)
