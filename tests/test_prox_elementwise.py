"""pathprox_jax.prox.elementwise: the l1, l0, l1/2, l2/3 and binary proxes.

Reference values come from brute-force minimisation of the scalar objective
0.5 (y - x)^2 + mu r(y) on a fine float64 numpy grid (plus exact candidate
points), never from the closed forms under test.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx

Q_FNS = {
    0.0: ppx.prox.prox_l0,
    0.5: ppx.prox.prox_l_half,
    2.0 / 3.0: ppx.prox.prox_l_two_thirds,
    1.0: ppx.prox.prox_l1,
}
Q_IDS = ["l0", "l_half", "l_two_thirds", "l1"]
BINARY_QS = [1.0, 0.5, 0.0, 2.0 / 3.0]
MUS = [0.01, 0.3, 1.0, 2.5]

_jit_binary = jax.jit(ppx.prox.prox_binary, static_argnames="q")


def _jit(fn):
  return jax.jit(fn)


# ----------------------------------------------------------------------------
# numpy float64 reference
# ----------------------------------------------------------------------------


def _r_lq(y, q):
  if q == 0.0:
    return (y != 0).astype(np.float64)
  return np.abs(y) ** q


def _r_binary(y, q):
  d = np.abs(np.abs(y) - 1.0)
  if q == 0.0:
    return (d != 0).astype(np.float64)
  return d**q


def _brute(xs, mus, reg_fn, half_width, n=200_001, extra=(0.0, 1.0, -1.0)):
  """Grid minimisation of 0.5 (y - x)^2 + mu r(y) for each (x, mu) pair.

  The grid is [-half_width, half_width] with n points (so it contains 0 and,
  for an integer-friendly half_width, +-1) plus the candidates ``extra`` and,
  per row, y = x itself. Returns (argmin, min value) per row.
  """
  grid = np.concatenate(
      [np.linspace(-half_width, half_width, n), np.asarray(extra, np.float64)]
  )
  r_grid = reg_fn(grid)
  best_y = np.empty(len(xs))
  best_f = np.empty(len(xs))
  for i, (x, mu) in enumerate(zip(xs, mus)):
    f = 0.5 * (grid - x) ** 2 + mu * r_grid
    j = int(np.argmin(f))
    fx = mu * reg_fn(np.array([x]))[0]  # candidate y = x
    if fx < f[j]:
      best_y[i], best_f[i] = x, fx
    else:
      best_y[i], best_f[i] = grid[j], f[j]
  return best_y, best_f


def _threshold(q, mu):
  """Independent (numpy) thresholds tau_q, as stated in the module docs."""
  mu = np.asarray(mu, np.float64)
  if q == 1.0:
    return mu
  if q == 0.0:
    return np.sqrt(2 * mu)
  if q == 0.5:
    return 1.5 * mu ** (2 / 3)
  lt = 2 * mu
  return (2 / 3) * (3 * lt**3) ** 0.25  # the form of the module docstring


def _cases(q, taus_at):
  """(x, mu) pairs: a regular sweep plus points around the thresholds."""
  xs, mus = [], []
  for mu in MUS:
    sweep = list(np.linspace(-3.9, 3.9, 27))
    for t in taus_at(q, mu):
      for rel in (1 - 1e-3, 1 - 1e-5, 1 + 1e-5, 1 + 1e-3, 1.1):
        sweep += [t * rel, -t * rel]
    sweep = [x for x in sweep if abs(x) <= 3.95]
    xs += sweep
    mus += [mu] * len(sweep)
  return np.array(xs), np.array(mus)


# ----------------------------------------------------------------------------
# scalar lq proxes vs brute force
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("q", list(Q_FNS), ids=Q_IDS)
def test_lq_prox_matches_brute_force_float64(q):
  xs, mus = _cases(q, lambda q, mu: [float(_threshold(q, mu))])
  with jax.enable_x64(True):
    y = np.asarray(_jit(Q_FNS[q])(jnp.asarray(xs), jnp.asarray(mus)))
    assert y.dtype == np.float64
  y_ref, f_ref = _brute(xs, mus, lambda t: _r_lq(t, q), half_width=4.0)
  f = 0.5 * (y - xs) ** 2 + mus * _r_lq(y, q)
  # The prox is the exact minimiser: never worse than any grid point, and the
  # grid optimum is within its discretisation error (h^2/2 ~ 1e-10) of it.
  assert np.all(f <= f_ref + 1e-12), np.max(f - f_ref)
  assert np.all(f >= f_ref - 1e-8), np.min(f - f_ref)
  # Argmins wherever they are unique (away from the tie |x| == tau).
  tau = _threshold(q, mus)
  clear = np.abs(np.abs(xs) - tau) > 1e-6 * tau
  h = 8.0 / 200_000
  np.testing.assert_allclose(y[clear], y_ref[clear], rtol=0, atol=2 * h)
  # The prox shrinks towards 0 and keeps the sign.
  assert np.all(np.abs(y) <= np.abs(xs) + 1e-15)
  assert np.all(y * xs >= 0)
  # Sharp check: non-zero outputs satisfy y - x + mu q sign(y) |y|^(q-1) = 0.
  nz = y != 0
  res = y[nz] - xs[nz] + mus[nz] * q * np.sign(y[nz]) * np.abs(y[nz]) ** (q - 1)
  assert np.max(np.abs(res) / (1 + np.abs(xs[nz]))) < 1e-12


def _notes_formula(q, z, mu):
  """The closed forms as the ProxGen paper states them, transcribed literally
  (numpy float64, moderate inputs)."""
  z = np.asarray(z, np.float64)
  if q == 0.5:
    tau = 1.5 * mu ** (2 / 3)
    zc = np.maximum(np.abs(z), tau)
    phi = np.arccos(np.clip((mu / 4) * (zc / 3) ** -1.5, -1, 1))
    return np.where(
        np.abs(z) > tau,
        (2 / 3) * z * (1 + np.cos(2 * np.pi / 3 - 2 * phi / 3)),
        0.0,
    )
  lt = 2 * mu
  tau = (2 / 3) * (3 * lt**3) ** 0.25
  zc = np.maximum(np.abs(z), tau)
  phi = np.arccosh((27 / 16) * zc**2 * lt**-1.5)
  a = (2 / np.sqrt(3)) * lt**0.25 * np.sqrt(np.cosh(phi / 3))
  return np.where(
      np.abs(z) > tau,
      np.sign(z) * ((a + np.sqrt(2 * zc / a - a**2)) / 2) ** 3,
      0.0,
  )


@pytest.mark.parametrize("q", [0.5, 2.0 / 3.0], ids=["l_half", "l_two_thirds"])
def test_notes_closed_forms_are_correct(q):
  # The published closed forms, evaluated literally, agree with
  # brute force and with the (rescaled, log-space) implementation.
  xs, mus = _cases(q, lambda q, mu: [float(_threshold(q, mu))])
  y_notes = _notes_formula(q, xs, mus)
  _, f_ref = _brute(xs, mus, lambda t: _r_lq(t, q), half_width=4.0)
  f = 0.5 * (y_notes - xs) ** 2 + mus * _r_lq(y_notes, q)
  assert np.all(np.abs(f - f_ref) < 1e-8)
  with jax.enable_x64(True):
    y = np.asarray(_jit(Q_FNS[q])(jnp.asarray(xs), jnp.asarray(mus)))
  np.testing.assert_allclose(y, y_notes, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("q", list(Q_FNS), ids=Q_IDS)
def test_lq_prox_matches_brute_force_float32(q):
  xs, mus = _cases(q, lambda q, mu: [float(_threshold(q, mu))])
  xs32, mus32 = xs.astype(np.float32), mus.astype(np.float32)
  y = _jit(Q_FNS[q])(jnp.asarray(xs32), jnp.asarray(mus32))
  assert y.dtype == jnp.float32
  y = np.asarray(y, np.float64)
  xs64, mus64 = xs32.astype(np.float64), mus32.astype(np.float64)
  _, f_ref = _brute(xs64, mus64, lambda t: _r_lq(t, q), half_width=4.0)
  f = 0.5 * (y - xs64) ** 2 + mus64 * _r_lq(y, q)
  assert np.all(f <= f_ref + 2e-6 * (1 + f_ref)), np.max(f - f_ref)


# ----------------------------------------------------------------------------
# thresholds and jumps
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q", [0.0, 0.5, 2.0 / 3.0], ids=["l0", "l_half", "l_two_thirds"]
)
@pytest.mark.parametrize("mu", [1e-4, 0.02, 1.0, 7.0, 300.0])
def test_threshold_and_jump(q, mu):
  tau = ppx.prox.scalar_threshold(q, mu)
  jump = ppx.prox.scalar_jump(q, mu)
  closed = {
      0.0: (np.sqrt(2 * mu), np.sqrt(2 * mu)),
      0.5: (1.5 * mu ** (2 / 3), mu ** (2 / 3)),
      2.0 / 3.0: (2 * (2 * mu / 3) ** 0.75, (2 * mu / 3) ** 0.75),
  }[q]
  np.testing.assert_allclose([float(tau), float(jump)], closed, rtol=1e-6)
  np.testing.assert_allclose(float(tau), _threshold(q, mu), rtol=1e-6)
  with jax.enable_x64(True):
    tau64 = float(_threshold(q, mu))
    x = jnp.array([
        tau64 * (1 - 1e-7),
        -tau64 * (1 - 1e-7),
        tau64 * (1 + 1e-9),
        -tau64 * (1 + 1e-9),
    ])
    y = np.asarray(_jit(Q_FNS[q])(x, mu))
  assert y[0] == 0 and y[1] == 0
  np.testing.assert_allclose(y[2:], [float(jump), -float(jump)], rtol=1e-6)
  # float32: a relative margin of 1e-4 either side is resolved correctly.
  x32 = jnp.array([tau64 * (1 - 1e-4), tau64 * (1 + 1e-4)], jnp.float32)
  y32 = np.asarray(_jit(Q_FNS[q])(x32, jnp.float32(mu)))
  assert y32[0] == 0
  np.testing.assert_allclose(y32[1], float(jump), rtol=2e-3 if q else 2e-4)


def test_l1_threshold_is_continuous():
  mu = 0.7
  with jax.enable_x64(True):
    y = np.asarray(
        _jit(ppx.prox.prox_l1)(
            jnp.array([mu * (1 - 1e-9), mu * (1 + 1e-9), -mu - 0.5]), mu
        )
    )
  assert y[0] == 0
  assert 0 < y[1] < 1e-8
  np.testing.assert_allclose(y[2], -0.5, rtol=1e-12)


@pytest.mark.parametrize("q", np.linspace(0.05, 0.95, 10))
def test_general_threshold_formula_is_a_tie(q):
  # At |x| = tau_q the non-zero stationary point y_q has the same objective as
  # y = 0, and y_q is a stationary point: y - tau + mu q y^(q-1) = 0.
  mu = 0.37
  tau = float(ppx.prox.scalar_threshold(q, mu))
  yq = float(ppx.prox.scalar_jump(q, mu))
  np.testing.assert_allclose(
      0.5 * (yq - tau) ** 2 + mu * yq**q, 0.5 * tau**2, rtol=1e-5
  )
  np.testing.assert_allclose(yq - tau + mu * q * yq ** (q - 1), 0.0, atol=1e-5)
  # Limits: q -> 0 gives the l0 threshold; q = 1 gives soft thresholding.
  np.testing.assert_allclose(
      float(ppx.prox.scalar_threshold(0.0, mu)), np.sqrt(2 * mu), rtol=1e-6
  )
  np.testing.assert_allclose(
      float(ppx.prox.scalar_threshold(1.0, mu)), mu, rtol=1e-6
  )
  assert float(ppx.prox.scalar_jump(1.0, mu)) == 0.0


# ----------------------------------------------------------------------------
# diagonal metric
# ----------------------------------------------------------------------------

ALL_FNS = [
    pytest.param(ppx.prox.prox_l1, id="l1"),
    pytest.param(ppx.prox.prox_l0, id="l0"),
    pytest.param(ppx.prox.prox_l_half, id="l_half"),
    pytest.param(ppx.prox.prox_l_two_thirds, id="l_two_thirds"),
    pytest.param(
        functools.partial(ppx.prox.prox_binary, q=1.0), id="binary_q1"
    ),
    pytest.param(
        functools.partial(ppx.prox.prox_binary, q=0.5), id="binary_q0.5"
    ),
    pytest.param(
        functools.partial(ppx.prox.prox_binary, q=0.0), id="binary_q0"
    ),
    pytest.param(
        functools.partial(ppx.prox.prox_binary, q=2.0 / 3.0), id="binary_q2/3"
    ),
]


@pytest.mark.parametrize("prox", ALL_FNS)
def test_metric_prox_is_coordinatewise(prox):
  rng = np.random.default_rng(0)
  x = rng.normal(scale=2.0, size=(4, 6)).astype(np.float32)
  scaling = np.exp(rng.uniform(-4, 2, size=(4, 6))).astype(np.float32)
  scaling[0, 0] = 0.0  # mu_i = 0: identity on that coordinate
  reg = np.float32(0.3)
  f = _jit(prox)
  y = np.asarray(f(jnp.asarray(x), reg, jnp.asarray(scaling)))
  # coordinate-wise with its own scalar mu_i (scaling = 1)
  mu = reg * scaling
  y_coord = np.array([
      float(f(jnp.float32(xi), mi, 1.0))
      for xi, mi in zip(x.ravel(), mu.ravel())
  ])
  np.testing.assert_allclose(y.ravel(), y_coord, rtol=1e-6, atol=1e-7)
  assert y[0, 0] == x[0, 0]
  # scaling = 1 is the plain prox with mu = reg
  np.testing.assert_array_equal(
      np.asarray(f(jnp.asarray(x), reg, 1.0)),
      np.asarray(f(jnp.asarray(x), reg)),
  )
  np.testing.assert_array_equal(
      np.asarray(f(jnp.asarray(x), reg, jnp.ones_like(jnp.asarray(x)))),
      np.asarray(f(jnp.asarray(x), reg)),
  )
  # broadcasting a per-column scaling equals the explicit full array
  col = scaling[1]
  np.testing.assert_array_equal(
      np.asarray(f(jnp.asarray(x), reg, jnp.asarray(col))),
      np.asarray(
          f(jnp.asarray(x), reg, jnp.asarray(np.broadcast_to(col, x.shape)))
      ),
  )


def test_metric_shape_mismatch_raises():
  with pytest.raises(ValueError):
    ppx.prox.prox_l1(jnp.ones((3,)), 1.0, jnp.ones((2, 3)))


# ----------------------------------------------------------------------------
# revised ProxQuant
# ----------------------------------------------------------------------------


def _binary_tau(q, mu):
  return float(_threshold(q, mu))


@pytest.mark.parametrize("q", BINARY_QS, ids=["q1", "q0.5", "q0", "q2/3"])
def test_prox_binary_matches_brute_force(q):
  xs, mus = [], []
  for mu in [0.01, 0.2, 0.8]:
    t = _binary_tau(q, mu)
    sweep = list(np.linspace(-2.9, 2.9, 30)) + [0.0, 1.0, -1.0, 1e-3, -1e-3]
    for rel in (1 - 1e-3, 1 + 1e-3):  # around |x - sign(x)| = tau
      sweep += [1 + t * rel, -1 - t * rel, 1 - t * rel, -1 + t * rel]
    sweep = [x for x in sweep if abs(x) <= 2.95]
    xs += sweep
    mus += [mu] * len(sweep)
  xs, mus = np.array(xs), np.array(mus)
  with jax.enable_x64(True):
    y = np.asarray(_jit_binary(jnp.asarray(xs), jnp.asarray(mus), q=q))
  reg_fn = lambda t: _r_binary(t, q)
  y_ref, f_ref = _brute(xs, mus, reg_fn, half_width=4.0)
  f = 0.5 * (y - xs) ** 2 + mus * reg_fn(y)
  assert np.all(f <= f_ref + 1e-12), np.max(f - f_ref)
  assert np.all(f >= f_ref - 1e-8), np.min(f - f_ref)
  # argmins where unique: x != 0 (+-y* tie) and away from the snap threshold
  tau = np.array([_binary_tau(q, m) for m in mus])
  dist = np.abs(np.abs(xs - np.where(xs >= 0, 1.0, -1.0)) - tau)
  clear = (xs != 0) & (dist > 1e-6 * tau)
  np.testing.assert_allclose(y[clear], y_ref[clear], rtol=0, atol=1e-4)
  # stationarity of non-snapped outputs: y - x + mu q sign(d) |d|^(q-1) = 0, d = y - sign(x)
  d = y - np.where(xs >= 0, 1.0, -1.0)
  nz = d != 0
  res = y[nz] - xs[nz] + mus[nz] * q * np.sign(d[nz]) * np.abs(d[nz]) ** (q - 1)
  assert np.max(np.abs(res)) < 1e-12


def test_prox_binary_sign_of_zero_and_snap():
  f = functools.partial(_jit_binary, q=1.0)
  # sign(0) := +1, also for -0.0: y = 1 + T(-1; mu) = mu for mu < 1.
  y = np.asarray(f(jnp.array([0.0, -0.0, 0.5, -0.5, 1.05, -3.0]), 0.2))
  np.testing.assert_allclose(y, [0.2, 0.2, 0.7, -0.7, 1.0, -2.8], rtol=1e-6)
  # huge mu snaps every entry to sign(x) (+1 at zero)
  # (q = 1/2: threshold 1.5 mu^(2/3) = 1.5e20, so 1e15 snaps and 1e25 does not)
  y = np.asarray(
      _jit_binary(jnp.array([0.0, -0.0, 0.3, -7.0, 1e15, 1e25]), 1e30, q=0.5)
  )
  np.testing.assert_allclose(y, [1.0, 1.0, 1.0, -1.0, 1.0, 1e25], rtol=1e-6)


def test_q_validation():
  x = jnp.ones(3)
  for bad in (0.3, 2.0, -1.0, "half", True, None):
    with pytest.raises(ValueError):
      ppx.prox.prox_binary(x, 0.1, q=bad)
  with pytest.raises(ValueError, match="static"):
    jax.jit(lambda x, q: ppx.prox.prox_binary(x, 0.1, q=q))(x, 0.5)
  for good, fn in [
      (0, ppx.prox.prox_l0),
      (1, ppx.prox.prox_l1),
      (0.5, ppx.prox.prox_l_half),
      (2 / 3, ppx.prox.prox_l_two_thirds),
  ]:
    assert ppx.prox.get_lq_prox(good) is fn
  with pytest.raises(ValueError):
    ppx.prox.get_lq_prox(0.25)
  with pytest.raises(ValueError):
    ppx.prox.scalar_threshold(1.5, 1.0)


# ----------------------------------------------------------------------------
# numerics: edge cases, dtypes, mu = 0
# ----------------------------------------------------------------------------

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("prox", ALL_FNS)
def test_edge_cases_finite_and_dtype(prox, dtype):
  big = float(jnp.finfo(dtype).max)
  x = jnp.array([0.0, -0.0, 1.0, -1.0, 1e-3, big, -big, 0.5 * big], dtype)
  f = _jit(prox)
  for mu in (0.0, 1e-30, 1e-3, 1.0, 1e30):
    y = f(x, mu)
    assert y.dtype == dtype and y.shape == x.shape
    assert np.all(np.isfinite(np.asarray(y, np.float32))), (mu, y)
  # mu = 0 returns x bit for bit (also -0.0), with reg or scaling zero
  for reg, scaling in ((0.0, 1.0), (1.0, 0.0), (0.0, jnp.ones(x.shape, dtype))):
    y = f(x, reg, scaling)
    np.testing.assert_array_equal(
        np.asarray(y, np.float32), np.asarray(x, np.float32)
    )
    assert np.array_equal(
        np.signbit(np.asarray(y, np.float32)),
        np.signbit(np.asarray(x, np.float32)),
    )
  # huge |x| with moderate mu is (relatively) unchanged
  y = np.asarray(f(x, 1.0), np.float32)
  np.testing.assert_allclose(y[5:], np.asarray(x[5:], np.float32), rtol=1e-3)


@pytest.mark.parametrize("prox", ALL_FNS)
def test_edge_cases_float64(prox):
  with jax.enable_x64(True):
    big = float(jnp.finfo(jnp.float64).max)
    x = jnp.array([0.0, -0.0, 1.0, -2.0, big, -big, 1e-300], jnp.float64)
    f = _jit(prox)
    for mu in (0.0, 1e-300, 1e-30, 1.0, 1e30, 1e300):
      y = f(x, mu)
      assert y.dtype == jnp.float64
      assert np.all(np.isfinite(np.asarray(y))), (mu, y)
    np.testing.assert_array_equal(np.asarray(f(x, 0.0)), np.asarray(x))
    np.testing.assert_allclose(
        np.asarray(f(x, 1.0))[4:6], np.asarray(x)[4:6], rtol=1e-12
    )


@pytest.mark.parametrize("q", list(Q_FNS), ids=Q_IDS)
def test_huge_mu(q):
  # mu = 1e30: thresholds 1e30 (l1), 1.41e15 (l0), 1.5e20 (l1/2), 3.3e22 (l2/3).
  mu = 1e30
  x = jnp.array([0.0, -0.0, 3.0, -1e13, 1e14, 3e38, -3e38], jnp.float32)
  y = np.asarray(_jit(Q_FNS[q])(x, jnp.float32(mu)))
  np.testing.assert_array_equal(y[:5], np.zeros(5))
  expected_tail = np.asarray(x[5:]) * (1 - (mu / 3e38 if q == 1.0 else 0.0))
  np.testing.assert_allclose(y[5:], expected_tail, rtol=1e-5)
  if q < 1:  # just above the threshold: the documented jump, even at this scale
    tau = float(ppx.prox.scalar_threshold(q, mu))
    y = np.asarray(
        _jit(Q_FNS[q])(
            jnp.array([tau * 0.999, tau * 1.001], jnp.float32), jnp.float32(mu)
        )
    )
    assert y[0] == 0
    np.testing.assert_allclose(
        y[1], float(ppx.prox.scalar_jump(q, mu)), rtol=0.05
    )


@pytest.mark.parametrize("prox", ALL_FNS)
def test_low_precision_matches_float32(prox):
  # bf16 / f16 inputs are computed in float32 and rounded once at the end.
  x = jnp.linspace(-3.0, 3.0, 97)
  f = _jit(prox)
  for dtype in (jnp.bfloat16, jnp.float16):
    xl = x.astype(dtype)
    y_low = f(xl, 0.3, 0.7)
    y_ref = f(xl.astype(jnp.float32), 0.3, 0.7).astype(dtype)
    assert y_low.dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(y_low, np.float32), np.asarray(y_ref, np.float32)
    )


def test_integer_input_gives_float():
  y = _jit(ppx.prox.prox_l1)(jnp.array([-3, 0, 2]), 1.0)
  assert jnp.issubdtype(y.dtype, jnp.floating)
  np.testing.assert_array_equal(np.asarray(y), [-2.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "name",
    ["prox_l1", "prox_l0", "prox_l_half", "prox_l_two_thirds", "prox_binary"],
)
def test_strength_argument_is_named_weight_decay(name):
  f = getattr(ppx.prox, name)
  x = jnp.linspace(-2.0, 2.0, 9)
  np.testing.assert_array_equal(
      np.asarray(f(x, weight_decay=0.3, scaling=0.5)),
      np.asarray(f(x, 0.3, 0.5)),
  )
