"""Baselines ProxGen is compared with: subgradient Adam, Prox-SGD, original ProxQuant.

* **Subgradient Adam** ("Sub-Adam" in the ProxGen paper): Adam on the gradient
  of ``loss + lambda R``, what autodiff frameworks do with a penalty added to
  the loss. For ``R = sum |theta|^q``:

  - ``q = 1``: ``sign(theta)`` (0 at 0, as autodiff returns);
  - ``0 < q < 1``: ``q sign(theta) max(|theta|, guard)^(q - 1)``: the true
    derivative away from 0, capped near 0 (it is unbounded there), and 0 at
    exactly 0 (autodiff of ``|theta|**q`` returns NaN at 0);
  - ``q = 0``: ``||theta||_0`` is piecewise constant, its gradient is 0
    wherever it exists, so "subgradient Adam on l0" is plain Adam. The
    ProxGen paper therefore compares l0 against a different method (hard
    concrete ``l0_hc``), which is not implemented here; :func:`lq_subgradient`
    rejects ``q = 0`` and the benchmark labels its l0 baseline "Adam".

* **Prox-SGD** (ProxGen section 5, eqs. 5-6, the ICLR 2020 method the paper
  compares with): a two-stage update, the preconditioned prox *without*
  learning rate, ``theta_hat = prox^{D}_{lambda R}(theta - m / D)``, then a
  step of length ``alpha_t`` towards it, ``theta + alpha_t (theta_hat -
  theta)``. For ``alpha_t < 1`` the iterate is a convex combination of
  ``theta`` and ``theta_hat``, so it is never exactly zero unless
  ``theta`` already is (ProxGen, Study 1). Moments and preconditioner are
  Adam's, as in the paper's comparison (``rho = 0.9``).

* **Original ProxQuant** (ProxGen Table 2, top row): the Adam step followed by
  the prox with the uniform scaling ``alpha_t`` (no preconditioner).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from pathprox_jax._checks import (
    ScalarOrSchedule,
    check_float_params,
    check_number,
    check_schedule,
    require_params,
    scalar_at,
)
from pathprox_jax.prox.elementwise import get_lq_prox, prox_binary
from pathprox_jax.prox.tree import MaskOrFn, mask_leaves
from pathprox_jax.transforms.proxgen import adam_family, check_adam_args

__all__ = [
    "lq_subgradient",
    "subgradient_adam",
    "prox_sgd_two_stage",
    "proxquant",
]


def lq_subgradient_value(x: jax.Array, q: float, guard: float) -> jax.Array:
  r"""A subgradient of ``sum |x|^q`` (``0 < q <= 1``), guarded near 0.

  ``sign(x)`` for ``q = 1``; ``q sign(x) max(|x|, guard)^(q-1)`` otherwise;
  0 at ``x = 0``.

  Examples:
    >>> lq_subgradient_value(jnp.array([-4.0, 0.0, 1e-12]), 0.5, 1e-8)
    Array([-2.5e-01,  0.0e+00,  5.0e+03], dtype=float32)
  """
  if q == 1.0:
    return jnp.sign(x)
  mag = jnp.maximum(jnp.abs(x), guard)
  return q * jnp.sign(x) * mag ** (q - 1.0)


def lq_subgradient(
    weight_decay: ScalarOrSchedule,
    q: float = 1.0,
    *,
    mask: MaskOrFn = None,
    guard: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""Adds ``weight_decay * d/dtheta sum |theta|^q`` to the updates (like ``add_decayed_weights``).

  Place it before the optimizer, e.g. ``chain(lq_subgradient(1e-4, 0.5),
  optax.adam(1e-3))``. See the module docstring for the choice at 0.

  Args:
    weight_decay: ``lambda`` (float or schedule, evaluated at this
      transform's count).
    q: exponent in ``(0, 1]`` (static). ``q = 0`` raises: the l0 penalty has
      zero gradient almost everywhere.
    mask: leaves to penalise (default every ``kernel``), as in
      :func:`~pathprox_jax.transforms.proxgen.proxgen_adam`.
    guard: ``|theta|`` is clipped up to this inside ``|theta|^(q-1)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.chain(lq_subgradient(0.1), optax.sgd(1.0))
    >>> params = {"kernel": jnp.array([2.0, -3.0, 0.0])}
    >>> state = tx.init(params)
    >>> tx.update({"kernel": jnp.zeros(3)}, state, params)[0]["kernel"]
    Array([-0.1,  0.1, -0. ], dtype=float32)
  """
  check_number("weight_decay", weight_decay, schedule=True)
  check_number("guard", guard, 0.0, lo_open=True)
  q = float(q)
  if not 0.0 < q <= 1.0:
    raise ValueError(
        f"lq_subgradient needs 0 < q <= 1; got q={q}. The l0 penalty has zero "
        "gradient wherever it is differentiable, so its 'subgradient method' "
        "is the unregularised optimizer; use proxgen_adam(..., prox_l0, ...)."
    )

  def init_fn(params):
    check_float_params(params, "lq_subgradient")
    check_schedule("weight_decay", weight_decay)
    mask_leaves(mask, params, "lq_subgradient")
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    require_params(params, "lq_subgradient")
    lam = scalar_at(weight_decay, state.count)
    on = mask_leaves(mask, params, "lq_subgradient")
    p_leaves, treedef = jax.tree.flatten(params)
    u_leaves = treedef.flatten_up_to(updates)
    out = [
        (u + lam * lq_subgradient_value(p, q, guard)).astype(u.dtype)
        if use
        else u
        for u, p, use in zip(u_leaves, p_leaves, on)
    ]
    return (
        jax.tree.unflatten(treedef, out),
        optax.ScaleByScheduleState(count=optax.safe_increment(state.count)),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def subgradient_adam(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    q: float = 1.0,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mask: MaskOrFn = None,
    guard: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam on ``loss + weight_decay * sum |theta|^q`` via its subgradient ("Sub-Adam").

  ``chain(lq_subgradient(weight_decay, q, mask=mask, guard=guard),
  optax.adam(...))``:
  the penalty's subgradient enters both Adam moments, exactly like adding
  the penalty to the loss and differentiating.

  Examples:
    >>> import jax.numpy as jnp
    >>> tx = subgradient_adam(1e-3, 1e-4, q=0.5)
    >>> state = tx.init({"kernel": jnp.ones((2, 2))})
  """
  check_adam_args("subgradient_adam", learning_rate, weight_decay, b1, b2, eps)
  return optax.chain(
      lq_subgradient(weight_decay, q, mask=mask, guard=guard),
      optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
  )


def prox_sgd_two_stage(
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
  r"""Prox-SGD's two-stage update (ProxGen eqs. 5-6) with Adam's moments.

  ::

      d = sqrt(v^) + eps
      theta_hat = prox(theta - m^ / d, weight_decay, 1 / d)   # no learning rate
      theta+ = theta + alpha_t (theta_hat - theta)

  Unmasked leaves get ``theta - alpha_t m^ / d`` (plain Adam). The moments,
  bias correction and mask are those of
  :func:`~pathprox_jax.transforms.proxgen.proxgen_adam`, so the two differ
  only in the update rule, as in the paper's comparison.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from pathprox_jax.prox import prox_l1
    >>> tx = prox_sgd_two_stage(0.5, 0.6, prox_l1)
    >>> params = {"kernel": jnp.array([0.5, 2.0])}
    >>> state = tx.init(params)
    >>> u, state = tx.update({"kernel": jnp.array([1.0, 1.0])}, state, params)
    >>> # theta_hat = prox_l1([-0.5, 1.0], 0.6) = [0, 0.4]; halfway towards it:
    >>> [round(float(v), 4) for v in optax.apply_updates(params, u)["kernel"]]
    [0.25, 1.2]
  """
  return adam_family(
      "prox_sgd_two_stage",
      learning_rate,
      weight_decay,
      prox,
      b1,
      b2,
      eps,
      bias_correction,
      mask,
      rule="two_stage",
  )


def proxquant(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    *,
    q: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correction: bool = True,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Original ProxQuant with Adam (ProxGen Table 2, top row).

  ``theta+ = prox_{alpha_t lambda R_bin}(theta - alpha_t m^ / d)`` with the
  binary regulariser ``R_bin = sum ||theta| - 1|^q`` and a *uniform*
  threshold ``alpha_t lambda`` (``lambda = weight_decay``). Revised
  ProxQuant is ``proxgen_adam(lr, weight_decay, functools.partial(prox_binary, q=q))``.

  Examples:
    >>> import jax.numpy as jnp
    >>> tx = proxquant(1e-3, 1e-4)
    >>> state = tx.init({"kernel": jnp.ones((2, 2))})
  """
  get_lq_prox(q)  # validates q (ValueError unless one of 0, 1/2, 2/3, 1)

  def binary(x, weight_decay, scaling):
    return prox_binary(x, weight_decay, scaling, q=q)

  return adam_family(
      "proxquant",
      learning_rate,
      weight_decay,
      binary,
      b1,
      b2,
      eps,
      bias_correction,
      mask,
      rule="uniform",
  )
