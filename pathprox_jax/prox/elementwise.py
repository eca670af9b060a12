"""Elementwise (separable) proximal operators in a diagonal metric.

Every operator here has the same signature, modelled on jaxopt's
``prox(x, hyperparams, scaling)``::

    prox_xxx(x, weight_decay, scaling=1.0)
        = argmin_y  sum_i (y_i - x_i)^2 / (2 * scaling_i) + weight_decay * R(y)

with a separable regulariser ``R(y) = sum_i r(y_i)``. ``scaling`` is a scalar
or an array broadcastable to ``x``; in ProxGen (Yun, Lozano & Yang, "A General
Family of Stochastic Proximal Gradient Methods for Deep Learning") it is the
inverse diagonal metric ``lr / (C_t + delta)``. Because the problem separates,
each coordinate solves the scalar problem

    argmin_y  0.5 * (y - x_i)^2 + mu_i * r(y),      mu_i = weight_decay * scaling_i,

so a per-coordinate ``scaling`` is exactly the scalar prox applied with its own
``mu_i`` (ProxGen, Sec. 2, "Examples of Proximal Mappings for ProxGen").

For ``r(y) = |y|^q`` with ``0 <= q < 1`` the prox is zero for ``|x| <= tau_q``
and jumps to magnitude ``y_q`` just above it (``scalar_threshold`` and
``scalar_jump``)::

    tau_q = (2 - q) / (2 (1 - q)) * (2 mu (1 - q))^(1 / (2 - q))
    y_q   = (2 mu (1 - q))^(1 / (2 - q))

    q = 0   : tau = sqrt(2 mu),               jump = sqrt(2 mu)
    q = 1/2 : tau = 1.5 mu^(2/3),             jump = mu^(2/3)
    q = 2/3 : tau = 2 (2 mu / 3)^(3/4),       jump = (2 mu / 3)^(3/4)
    q = 1   : tau = mu (soft threshold),      no jump

At ``|x| == tau`` (q < 1) both 0 and the jump value are minimisers; these
functions return 0 there.

Numerics shared by all operators:

* computation happens in ``promote_types(x.dtype, float32)`` (so bfloat16 and
  float16 are computed in float32, float64 stays float64) and the result is
  cast back to ``x.dtype`` (integer inputs give the default float dtype);
* ``mu = weight_decay * scaling`` is broadcast to ``x.shape``; negative values are
  clipped to 0 and coordinates with ``mu == 0`` return ``x`` unchanged
  (bit for bit);
* the closed forms for q in {1/2, 2/3} are evaluated in units of
  ``s = mu^(1 / (2 - q))`` on ``|x|`` clipped up to the threshold, the
  ``arccos`` argument is clipped to [-1, 1], the ``arccosh`` is evaluated in
  log space, and the branches are combined with ``jnp.where``. Hence no NaN or
  inf for ``x = 0``, ``-0.0``, ``mu = 0``, ``mu = 1e30`` or ``|x|`` near the
  dtype's maximum;
* ``weight_decay`` and ``scaling`` may be traced; everything is vectorised and
  jit-able. Only the exponent ``q`` of ``prox_binary`` must be static.
"""

from __future__ import annotations

import math
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from pathprox_jax._checks import prox_function

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
ProxFn = Callable[..., Array]

# Exponents q with a closed-form prox of mu * |y|^q.
SUPPORTED_Q: Tuple[float, ...] = (0.0, 0.5, 2.0 / 3.0, 1.0)

# Unit-mu constants (mu = 1, i.e. after rescaling by s = mu^(1/(2-q))).
_TAU_HALF = 1.5  # threshold of 0.5 (u - w)^2 + |u|^(1/2)
_TAU_TWO_THIRDS = (
    2.0 * (2.0 / 3.0) ** 0.75
)  # threshold of 0.5 (u - w)^2 + |u|^(2/3)
_LOG_TAU_TWO_THIRDS = math.log(_TAU_TWO_THIRDS)
# l_{2/3} closed form with lt = 2 mu = 2 (unit mu):
#   c = (27/16) w^2 lt^(-3/2) = K w^2,   A = (2 / sqrt 3) lt^(1/4) sqrt(cosh(arccosh(c) / 3)).
_LOG_K_TWO_THIRDS = math.log(27.0 / 16.0) - 1.5 * math.log(2.0)
_A_CONST_TWO_THIRDS = 2.0 / math.sqrt(3.0) * 2.0**0.25


# --------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------


def _prepare(x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike):
  """Returns (z, mu, out_dtype): x and mu = max(weight_decay * scaling, 0) in compute dtype."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(
        f"Elementwise prox operators need real inputs, got {x.dtype}."
    )
  if jnp.issubdtype(x.dtype, jnp.floating):
    out_dtype = x.dtype
  else:  # integers / bools: return the default float dtype
    out_dtype = jnp.result_type(float)
  compute_dtype = jnp.promote_types(out_dtype, jnp.float32)
  z = x.astype(compute_dtype)
  mu = jnp.asarray(weight_decay, compute_dtype) * jnp.asarray(
      scaling, compute_dtype
  )
  mu = jnp.broadcast_to(jnp.maximum(mu, 0), z.shape)
  return z, mu, out_dtype


def _safe_mu(mu: Array) -> Array:
  """mu with exact zeros replaced by 1 (those coordinates are overridden later)."""
  return jnp.where(mu == 0, jnp.ones_like(mu), mu)


def _l1_core(z: Array, mu: Array) -> Array:
  return jnp.sign(z) * jnp.maximum(jnp.abs(z) - mu, 0)


def _l0_core(z: Array, mu: Array) -> Array:
  # |z| > sqrt(2 mu)  <=>  0.5 z^2 > mu (objective of y = z vs y = 0). Comparing the
  # objective values resolves exact ties to 0 without rounding in sqrt; an overflow of
  # z^2 to inf still gives the right answer for every finite mu.
  az = jnp.abs(z)
  return jnp.where(0.5 * az * az > mu, z, jnp.zeros_like(z))


def _l_half_core(z: Array, mu: Array) -> Array:
  s = _safe_mu(mu) ** (2.0 / 3.0)  # natural scale; jump value = s
  tau = _TAU_HALF * s
  az = jnp.abs(z)
  w = jnp.maximum(az, tau) / s  # >= 1.5 (up to rounding); may be +inf
  # arccos((mu / 4) (|z| / 3)^(-3/2)) == arccos((1/4) (w / 3)^(-3/2)).
  arg = jnp.clip(0.25 * (w / 3.0) ** -1.5, -1.0, 1.0)
  phi = jnp.arccos(arg)
  ratio = (2.0 / 3.0) * (1.0 + jnp.cos(2.0 * jnp.pi / 3.0 - 2.0 * phi / 3.0))
  return jnp.where(az > tau, z * ratio, jnp.zeros_like(z))


def _l_two_thirds_core(z: Array, mu: Array) -> Array:
  mu_s = _safe_mu(mu)
  s = mu_s**0.75  # natural scale
  tau = _TAU_TWO_THIRDS * s
  az = jnp.abs(z)
  # lw = log(w), w = |z| / s clipped up to the unit threshold.
  lw = jnp.log(jnp.maximum(az, tau)) - 0.75 * jnp.log(mu_s)
  lw = jnp.maximum(lw, _LOG_TAU_TWO_THIRDS)
  # phi = arccosh(c), c = K w^2 >= 3 sqrt(3) / 4 > 1 on the clipped range:
  #   phi = log c + log1p(sqrt(1 - c^-2)),  g := phi - 2 lw.
  logc = _LOG_K_TWO_THIRDS + 2.0 * lw
  g = _LOG_K_TWO_THIRDS + jnp.log1p(
      jnp.sqrt(jnp.maximum(1.0 - jnp.exp(-2.0 * logc), 0.0))
  )
  # a = A / w^(1/3);  cosh(phi / 3) w^(-2/3) = (exp(g / 3) + exp(-(g + 4 lw) / 3)) / 2.
  a = _A_CONST_TWO_THIRDS * jnp.sqrt(
      0.5 * (jnp.exp(g / 3.0) + jnp.exp(-(g + 4.0 * lw) / 3.0))
  )
  # y = ((A + sqrt(2 w / A - A^2)) / 2)^3 = w * ((a + sqrt(2 / a - a^2)) / 2)^3.
  ratio = ((a + jnp.sqrt(jnp.maximum(2.0 / a - a * a, 0.0))) / 2.0) ** 3
  return jnp.where(az > tau, z * ratio, jnp.zeros_like(z))


_CORES = {
    0.0: _l0_core,
    0.5: _l_half_core,
    2.0 / 3.0: _l_two_thirds_core,
    1.0: _l1_core,
}


def _apply(
    core, x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike
) -> Array:
  z, mu, out_dtype = _prepare(x, weight_decay, scaling)
  y = core(z, mu)
  return jnp.where(mu == 0, z, y).astype(out_dtype)


def _canonical_q(q, allowed=SUPPORTED_Q) -> float:
  """Validates a static exponent q and returns the matching entry of ``allowed``."""
  if isinstance(q, bool):
    raise ValueError(f"q must be a number in {allowed}, got bool {q!r}.")
  try:
    qf = float(q)
  except Exception as e:  # tracers, strings, arrays with >1 element, ...
    raise ValueError(
        f"q must be a static Python number in {allowed} (not a traced or array"
        f" value); got {q!r}."
    ) from e
  for cand in allowed:
    if math.isclose(qf, cand, rel_tol=0.0, abs_tol=1e-9):
      return cand
  raise ValueError(
      f"Unsupported q={q!r}: closed-form prox available only for q in"
      f" {allowed}."
  )


# --------------------------------------------------------------------------
# Public operators
# --------------------------------------------------------------------------


@prox_function
def prox_l1(
    x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike = 1.0
) -> Array:
  r"""Soft thresholding: prox of ``weight_decay * ||y||_1`` in the metric ``1 / scaling``.

  Implements ProxGen Sec. 2, Eq. (3), coordinate-wise::

      y_i = sign(x_i) * max(|x_i| - mu_i, 0),     mu_i = weight_decay * scaling_i,

  the minimiser of ``sum_i (y_i - x_i)^2 / (2 scaling_i) + weight_decay * sum_i |y_i|``.
  Threshold ``mu_i`` (``y_i = 0`` iff ``|x_i| <= mu_i``); continuous, no jump.

  Args:
    x: input array (any real dtype; computed in at least float32).
    weight_decay: regularisation strength ``lambda`` (scalar, may be traced), >= 0.
    scaling: scalar or array broadcastable to ``x``: the inverse diagonal
      metric, e.g. ``lr / (C_t + delta)`` for ProxGen-Adam. >= 0.

  Returns:
    Array with the shape and dtype of ``x``.

  Examples:
    >>> import jax.numpy as jnp
    >>> prox_l1(jnp.array([-3.0, 0.5, 2.0]), 1.0)
    Array([-2.,  0.,  1.], dtype=float32)
    >>> prox_l1(jnp.array([2.0, 2.0]), 1.0, scaling=jnp.array([0.5, 3.0]))
    Array([1.5, 0. ], dtype=float32)
  """
  return _apply(_l1_core, x, weight_decay, scaling)


@prox_function
def prox_l0(
    x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike = 1.0
) -> Array:
  r"""Hard thresholding: prox of ``weight_decay * ||y||_0`` in the metric ``1 / scaling``.

  Implements ProxGen Sec. 2, Eq. (4), coordinate-wise::

      y_i = x_i  if |x_i| > sqrt(2 mu_i)  else 0,     mu_i = weight_decay * scaling_i.

  Threshold and jump are both ``sqrt(2 mu_i)``. At ``|x_i| == sqrt(2 mu_i)``
  Eq. (4) allows ``{0, x_i}``; this function returns 0.

  Args and returns: as :func:`prox_l1`.

  Examples:
    >>> import jax.numpy as jnp
    >>> prox_l0(jnp.array([-1.5, 1.0, 1.5]), 0.5)  # threshold sqrt(2 * 0.5) = 1
    Array([-1.5,  0. ,  1.5], dtype=float32)
  """
  return _apply(_l0_core, x, weight_decay, scaling)


@prox_function
def prox_l_half(
    x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike = 1.0
) -> Array:
  r"""Half thresholding: prox of ``weight_decay * sum_i |y_i|^(1/2)`` in the metric ``1 / scaling``.

  Closed form for q = 1/2 (ProxGen Sec. 2, "Examples of Proximal Mappings";
  the paper defers the formula to its appendix / ref. [37]). With
  ``mu = weight_decay * scaling_i``::

      tau = 1.5 * mu^(2/3)
      phi = arccos((mu / 4) * (|x| / 3)^(-3/2))
      y   = (2/3) * x * (1 + cos(2 pi / 3 - 2 phi / 3))   if |x| > tau
      y   = 0                                             otherwise

  Threshold ``1.5 mu^(2/3)``; just above it ``|y|`` jumps from 0 to
  ``mu^(2/3)`` (= 2/3 of the threshold). Ties at ``|x| == tau`` return 0.

  Args and returns: as :func:`prox_l1`.

  Examples:
    >>> import jax.numpy as jnp
    >>> y = prox_l_half(jnp.array([-3.0, 1.4, 1.6, 3.0]), 1.0)  # tau = 1.5
    >>> [round(float(v), 4) for v in y]
    [-2.6955, 0.0, 1.1295, 2.6955]
  """
  return _apply(_l_half_core, x, weight_decay, scaling)


@prox_function
def prox_l_two_thirds(
    x: ArrayLike, weight_decay: ArrayLike, scaling: ArrayLike = 1.0
) -> Array:
  r"""Prox of ``weight_decay * sum_i |y_i|^(2/3)`` in the metric ``1 / scaling``.

  Closed form for q = 2/3 (ProxGen Sec. 2, "Examples of Proximal Mappings";
  formula deferred to the paper's appendix / ref. [37]). With
  ``mu = weight_decay * scaling_i`` and ``lt = 2 mu``::

      tau = (2/3) * (3 lt^3)^(1/4)            (= 2 (2 mu / 3)^(3/4))
      phi = arccosh((27/16) * x^2 * lt^(-3/2))
      A   = (2 / sqrt(3)) * lt^(1/4) * sqrt(cosh(phi / 3))
      y   = sign(x) * ((A + sqrt(2 |x| / A - A^2)) / 2)^3   if |x| > tau
      y   = 0                                               otherwise

  Threshold ``2 (2 mu / 3)^(3/4)``; just above it ``|y|`` jumps from 0 to
  ``(2 mu / 3)^(3/4)`` (= half the threshold). Ties return 0. The formula is
  evaluated in units of ``mu^(3/4)`` with ``arccosh`` in log space, which is
  algebraically identical but cannot overflow (``lt^3`` and ``x^2`` would).

  Args and returns: as :func:`prox_l1`.

  Examples:
    >>> import jax.numpy as jnp
    >>> y = prox_l_two_thirds(jnp.array([-3.0, 1.4, 1.6, 3.0]), 1.0)  # tau ~ 1.4755
    >>> [round(float(v), 4) for v in y]
    [-2.5094, 0.0, 0.9127, 2.5094]
  """
  return _apply(_l_two_thirds_core, x, weight_decay, scaling)


@prox_function
def prox_binary(
    x: ArrayLike,
    weight_decay: ArrayLike,
    scaling: ArrayLike = 1.0,
    q: float = 1.0,
) -> Array:
  r"""Revised ProxQuant: prox of ``weight_decay * sum_i ||y_i| - 1|^q`` in the metric ``1 / scaling``.

  ProxGen Sec. 2, "Revised ProxQuant" and Table 2 (bottom row): the binary
  regulariser ``R_bin^q(y) = ||y - sign(y)||_q^q`` has the coordinate-wise prox::

      y_i = sign(x_i) + T_q(x_i - sign(x_i); mu_i),     mu_i = weight_decay * scaling_i,

  where ``T_q`` is the scalar prox of ``mu |.|^q`` (``prox_l1`` for q = 1,
  ``prox_l_half`` for q = 1/2, ``prox_l_two_thirds`` for q = 2/3,
  ``prox_l0`` for q = 0, with ``0^0 := 0``, i.e. ``R`` counts non-binary
  entries). This is exact: ``R`` is even, so a minimiser has the sign of
  ``x``, and on that half-line ``||y| - 1| = |y - sign(x)|``.

  Thresholds / jumps are those of ``T_q`` measured from ``sign(x)``: ``y_i``
  snaps to ``sign(x_i)`` iff ``|x_i - sign(x_i)| <= tau_q(mu_i)``
  (``mu`` for q = 1, ``sqrt(2 mu)`` for q = 0, ``1.5 mu^(2/3)`` for q = 1/2,
  ``2 (2 mu / 3)^(3/4)`` for q = 2/3), and for q < 1 it leaves ``sign(x)`` by
  at least ``scalar_jump(q, mu)``.

  ``sign(0)``: at ``x_i = 0`` (including ``-0.0``) the objective is even in
  ``y`` and ``+y*`` / ``-y*`` are both minimisers; we use ``sign(0) := +1``
  (not 0 as ``jnp.sign`` would: ``y = 0`` is generally *not* a minimiser).

  Args:
    x, weight_decay, scaling: as in :func:`prox_l1`.
    q: static exponent, one of 1, 0.5, 2/3 or 0 (2/3 is an extension beyond
      the paper's {1, 1/2, 0}).

  Returns:
    Array with the shape and dtype of ``x``.

  Raises:
    ValueError: if ``q`` is not a static value in {0, 1/2, 2/3, 1}.

  Examples:
    >>> import jax.numpy as jnp
    >>> prox_binary(jnp.array([-0.2, 0.0, 0.7, 1.5]), 0.25)
    Array([-0.45,  0.25,  0.95,  1.25], dtype=float32)
    >>> prox_binary(jnp.array([-0.25, 0.5, 1.5]), 0.25, q=0)  # snap iff |x - sign x| <= 1/sqrt(2)
    Array([-0.25,  1.  ,  1.  ], dtype=float32)
  """
  core = _CORES[_canonical_q(q)]
  z, mu, out_dtype = _prepare(x, weight_decay, scaling)
  sgn = jnp.where(
      z >= 0, jnp.ones_like(z), -jnp.ones_like(z)
  )  # -0.0 >= 0 is True
  y = sgn + core(z - sgn, mu)
  return jnp.where(mu == 0, z, y).astype(out_dtype)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _check_q_interval(q) -> float:
  if isinstance(q, bool):
    raise ValueError(f"q must be a number in [0, 1], got bool {q!r}.")
  try:
    qf = float(q)
  except Exception as e:
    raise ValueError(
        f"q must be a static Python number in [0, 1]; got {q!r}."
    ) from e
  if not 0.0 <= qf <= 1.0:
    raise ValueError(f"q must lie in [0, 1], got {q!r}.")
  return qf


def scalar_threshold(q: float, mu: ArrayLike) -> Array:
  r"""Threshold ``tau_q`` of the scalar prox of ``mu |y|^q``: output is 0 iff ``|x| <= tau_q``.

  For ``0 <= q < 1`` (general check of the closed forms)::

      tau_q = (2 - q) / (2 (1 - q)) * (2 mu (1 - q))^(1 / (2 - q))

  which gives ``sqrt(2 mu)`` (q = 0), ``1.5 mu^(2/3)`` (q = 1/2),
  ``2 (2 mu / 3)^(3/4)`` (q = 2/3); for q = 1 it is the limit ``mu``.
  It is where ``0.5 x^2`` equals the smallest non-zero local minimum value.

  Args:
    q: static exponent in [0, 1].
    mu: threshold parameter ``weight_decay * scaling`` (array or scalar, may be traced).

  Returns:
    ``tau_q`` with the shape of ``mu`` (at least float32).

  Examples:
    >>> round(float(scalar_threshold(0.5, 1.0)), 6)
    1.5
  """
  qf, mu, jump = _q_mu_jump(q, mu)
  return mu if qf == 1.0 else (2.0 - qf) / (2.0 * (1.0 - qf)) * jump


def scalar_jump(q: float, mu: ArrayLike) -> Array:
  r"""Jump ``y_q`` of the scalar prox of ``mu |y|^q`` at its threshold.

  For ``|x|`` just above ``scalar_threshold(q, mu)`` the output magnitude is
  (in the limit) ``y_q = (2 mu (1 - q))^(1 / (2 - q))``; no non-zero output is
  smaller. ``sqrt(2 mu)`` for q = 0, ``mu^(2/3)`` for q = 1/2,
  ``(2 mu / 3)^(3/4)`` for q = 2/3 and 0 (continuous) for q = 1.

  Args and returns: as :func:`scalar_threshold` (``y_q`` instead of ``tau_q``).

  Examples:
    >>> round(float(scalar_jump(0.5, 8.0)), 6)
    4.0
  """
  return _q_mu_jump(q, mu)[2]


def _q_mu_jump(q, mu) -> tuple[float, Array, Array]:
  """``(q, mu, (2 mu (1 - q))^(1 / (2 - q)))``, ``mu`` in at least float32."""
  qf = _check_q_interval(q)
  mu = jnp.asarray(mu)
  mu = mu.astype(jnp.promote_types(mu.dtype, jnp.float32))
  return qf, mu, (2.0 * (1.0 - qf) * mu) ** (1.0 / (2.0 - qf))


def get_lq_prox(q: float) -> ProxFn:
  """Returns the elementwise prox of ``weight_decay * sum_i |y_i|^q`` for static ``q`` in {0, 1/2, 2/3, 1}.

  Examples:
    >>> get_lq_prox(0.5) is prox_l_half
    True
  """
  return _PUBLIC[_canonical_q(q)]


_PUBLIC = {
    0.0: prox_l0,
    0.5: prox_l_half,
    2.0 / 3.0: prox_l_two_thirds,
    1.0: prox_l1,
}
