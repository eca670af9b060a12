"""Tests for pathprox_jax.prox.group.prox_group_lasso (Euclidean and diagonal metric).

References are independent of the implementation under test: scipy's generic
minimiser on the prox objective, a float64 bracketing root finder (brentq) on
the optimality condition, and the closed-form group soft threshold.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from pathprox_jax.prox.group import prox_group_lasso

prox_jit = jax.jit(prox_group_lasso, static_argnames=("axis", "newton_steps"))


def objective(y, x, reg, s):
  """sum (y - x)^2 / (2 s) + reg ||y|| for one group (float64)."""
  return np.sum((y - x) ** 2 / (2 * s)) + reg * np.linalg.norm(y)


def generic_min(x, reg, s):
  """scipy.optimize on the prox objective of one group (float64)."""
  x, s = np.asarray(x, np.float64), np.asarray(s, np.float64)
  fun = lambda y: objective(y, x, reg, s)
  def grad(y):
    n = np.linalg.norm(y)
    return (y - x) / s + (reg * y / n if n > 0 else 0.0)
  best = optimize.minimize(fun, x, jac=grad, method="L-BFGS-B",
                           options=dict(ftol=1e-15, gtol=1e-13, maxiter=10000))
  y = best.x
  # the only non-smooth point is 0: compare with it explicitly
  return np.zeros_like(x) if fun(np.zeros_like(x)) <= fun(y) else y


def root_ref(x, reg, s):
  """Float64 solution via the optimality condition (brentq on ||y||)."""
  x, s = np.asarray(x, np.float64), np.asarray(s, np.float64)
  d = 1.0 / s
  ndx = np.linalg.norm(d * x)
  if ndx <= reg:
    return np.zeros_like(x)
  f = lambda r: np.sum((d * x / (d * r + reg)) ** 2) - 1.0
  lo, hi = (ndx - reg) / d.max(), (ndx - reg) / d.min()
  r = optimize.brentq(f, lo * (1 - 1e-12), hi * (1 + 1e-12), xtol=1e-300,
                      rtol=1e-15, maxiter=1000)
  return x * d * r / (d * r + reg)


def rows(fn, x, reg, s):
  """Applies a one-group reference to every row (groups on axis 0)."""
  return np.stack([fn(x[k], reg, s[k]) for k in range(x.shape[0])])


# ---------------------------------------------------------------------------
# Correctness against independent references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_prox_matches_generic_minimiser(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(6, 5))
  s = 10 ** rng.uniform(-1.5, 1.5, size=x.shape)
  reg = float(np.median(np.linalg.norm(x / s, axis=1)))  # half the groups die
  y = np.asarray(prox_jit(jnp.asarray(x, jnp.float32), reg,
                          jnp.asarray(s, jnp.float32), axis=0), np.float64)
  ref = rows(generic_min, x, reg, s)
  np.testing.assert_allclose(y, ref, rtol=2e-4, atol=2e-5)
  for k in range(x.shape[0]):  # and never worse than the generic minimiser
    assert objective(y[k], x[k], reg, s[k]) <= (
        objective(ref[k], x[k], reg, s[k]) + 1e-5)
  assert 0 < np.sum(np.all(y == 0, axis=1)) < x.shape[0]


def test_zero_condition_is_weighted_norm():
  """y_k = 0 exactly iff ||d * x_k|| <= reg, d = 1 / scaling."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 4))
  s = 10 ** rng.uniform(-1, 1, size=x.shape)
  crit = np.linalg.norm(x / s, axis=1)
  reg = float(np.median(crit))
  y = np.asarray(prox_jit(jnp.asarray(x, jnp.float32), reg,
                          jnp.asarray(s, jnp.float32), axis=0))
  zero = np.all(y == 0, axis=1)
  np.testing.assert_array_equal(zero, crit <= reg)
  # just below / just above the critical value of one group
  k = 0
  for factor, expect_zero in ((1.001, True), (0.999, False)):
    yk = prox_jit(jnp.asarray(x[k:k + 1], jnp.float32), crit[k] * factor,
                  jnp.asarray(s[k:k + 1], jnp.float32), axis=0)
    assert bool(jnp.all(yk == 0)) == expect_zero


def test_scalar_scaling_is_group_soft_threshold():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 7, 5)).astype(np.float32)
  norms = np.linalg.norm(x, axis=(0, 2), keepdims=True)
  lr = 1.3
  reg = float(np.median(norms)) / lr
  y = prox_jit(jnp.asarray(x), reg, lr, axis=1)
  tau = reg * lr
  ref = np.where(norms > tau, x * (1 - tau / np.maximum(norms, 1e-30)), 0.0)
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-6)
  assert np.any(np.all(np.asarray(y) == 0, axis=(0, 2)))


def test_constant_metric_equals_euclidean():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(6, 9)), jnp.float32)
  for c in (1e-3, 0.37, 1.0, 25.0):
    euclid = prox_jit(x, 0.8, c, axis=1)
    metric = prox_jit(x, 0.8, jnp.full(x.shape, c, jnp.float32), axis=1)
    np.testing.assert_allclose(np.asarray(metric), np.asarray(euclid),
                               rtol=2e-6, atol=1e-7)


def test_conv_output_kernel_groups_on_axis_minus_2():
  """Conv output kernel (kh, kw, n, out): unit i is v[:, :, i, :]."""
  rng = np.random.default_rng(6)
  v = rng.normal(size=(3, 3, 5, 4))
  s = 10 ** rng.uniform(-1, 1, size=v.shape)
  reg = 3.0
  y = np.asarray(prox_jit(jnp.asarray(v, jnp.float32), reg,
                          jnp.asarray(s, jnp.float32), axis=-2))
  for i in range(v.shape[2]):
    ref = root_ref(v[:, :, i, :].ravel(), reg, s[:, :, i, :].ravel())
    np.testing.assert_allclose(y[:, :, i, :].ravel(), ref, rtol=1e-5,
                               atol=1e-6)


def test_broadcast_scaling_and_dtype():
  x = jnp.asarray(np.random.default_rng(7).normal(size=(4, 6)), jnp.bfloat16)
  s = jnp.asarray([[0.5], [1.0], [2.0], [4.0]], jnp.float32)  # per-group scale
  y = prox_jit(x, 0.3, s, axis=0)
  assert y.dtype == jnp.bfloat16 and y.shape == x.shape
  ref = rows(root_ref, np.asarray(x, np.float64), 0.3,
             np.broadcast_to(np.asarray(s, np.float64), x.shape))
  np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=1e-2,
                             atol=1e-2)


# ---------------------------------------------------------------------------
# Edge cases: no NaN, exact identities
# ---------------------------------------------------------------------------


def _finite(y):
  return bool(jnp.all(jnp.isfinite(y)))


def test_edge_cases_are_finite_and_exact():
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
  s = jnp.asarray(10 ** rng.uniform(-2, 2, size=(5, 4)), jnp.float32)
  zeros = jnp.zeros_like(x)
  # z = 0 -> 0
  y = prox_jit(zeros, 0.5, s, axis=0)
  assert _finite(y) and bool(jnp.all(y == 0))
  # reg = 0 -> identity
  y = prox_jit(x, 0.0, s, axis=0)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6)
  # huge reg -> 0
  for reg in (1e30, jnp.inf):
    y = prox_jit(x, reg, s, axis=0)
    assert _finite(y) and bool(jnp.all(y == 0))
  # zero groups mixed with live ones
  xz = x.at[1].set(0.0).at[3].set(0.0)
  y = prox_jit(xz, 0.1, s, axis=0)
  assert _finite(y)
  assert bool(jnp.all(y[1] == 0)) and bool(jnp.all(y[3] == 0))
  assert bool(jnp.any(y[0] != 0))
  # tiny and huge entries in the scaling
  for tiny in (1e-6, 1e-12, 1e-16):
    st = s.at[0, 0].set(tiny).at[2].set(tiny)
    y = prox_jit(x, 0.1, st, axis=0)
    assert _finite(y)
    ref = rows(root_ref, np.asarray(x, np.float64), 0.1,
               np.asarray(st, np.float64))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-6)
  y = prox_jit(x, 0.1, s.at[0, 1].set(1e20), axis=0)
  assert _finite(y)


@pytest.mark.parametrize("tiny", [1e-20, 0.0])
def test_tiny_scaling_overflow(tiny):
  x = jnp.asarray([[1.0, 2.0, 0.5]], jnp.float32)
  y = prox_jit(x, 0.1, jnp.full(x.shape, tiny, jnp.float32), axis=0)
  assert _finite(y)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6)


# ---------------------------------------------------------------------------
# Float32 accuracy of the fixed number of Newton steps
# ---------------------------------------------------------------------------


def _accuracy_cases(kappa, frac, seed, n_cases=24):
  """Groups with metric condition number kappa and reg = frac * ||d x||.

  Half the cases are random (log-uniform d); half are adversarial: one
  coordinate with the smallest d carries almost all of x, so the Newton
  start (||dx|| - reg) / max d is a factor ~kappa below the root.
  """
  rng = np.random.default_rng(seed)
  out = []
  for c in range(n_cases):
    k = int(rng.integers(2, 40))
    if c % 2:
      x = rng.normal(size=k) * 1e-2 / kappa
      x[0] = 1.0
      d = np.full(k, kappa)
      d[0] = 1.0
    else:
      x = rng.normal(size=k)
      d = 10 ** rng.uniform(0, np.log10(kappa), size=k)
    s = 1.0 / d
    out.append((x, s, frac * np.linalg.norm(d * x)))
  return out


@functools.partial(jax.jit, static_argnums=3)
def _batched_rows(x, reg, s, newton_steps):
  """Row k is one group with its own reg."""
  one = lambda xk, rk, sk: prox_group_lasso(xk[None], rk, sk[None], axis=0,
                                            newton_steps=newton_steps)[0]
  return jax.vmap(one)(x, reg, s)


def _worst_rel_err(cases, newton_steps=20, width=40):
  """One batched call: each case padded to `width` with x = 0 and s = s[0]
  (zeros change neither ||d x||, f(r) nor the bracket)."""
  xs = np.zeros((len(cases), width))
  ss = np.ones((len(cases), width))
  for c, (x, s, _) in enumerate(cases):
    xs[c, :len(x)], ss[c, :], ss[c, :len(x)] = x, s[0], s
  regs = np.array([reg for _, _, reg in cases])
  y = np.asarray(_batched_rows(jnp.asarray(xs, jnp.float32),
                               jnp.asarray(regs, jnp.float32),
                               jnp.asarray(ss, jnp.float32), newton_steps))
  worst = 0.0
  for c, (x, s, reg) in enumerate(cases):
    ref = root_ref(x, reg, s)
    assert np.all(y[c, len(x):] == 0)
    worst = max(worst, np.linalg.norm(y[c, :len(x)] - ref) / np.linalg.norm(ref))
  return worst


@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4, 1e6, 1e8])
@pytest.mark.parametrize("frac", [0.9, 0.1, 1e-2])
def test_newton_float32_accuracy(kappa, frac):
  """20 Newton steps reach float32 accuracy when reg >= 1e-2 ||d x||."""
  err = _worst_rel_err(_accuracy_cases(kappa, frac, seed=int(kappa) % 97))
  assert err < 2e-6, f"kappa={kappa:g}, reg/||dx||={frac:g}: rel err {err:.2e}"


@pytest.mark.parametrize("kappa,frac", [(1e4, 1e-5), (1e6, 1e-5), (1e8, 1e-5)])
def test_newton_float32_accuracy_small_reg(kappa, frac):
  err = _worst_rel_err(_accuracy_cases(kappa, frac, seed=11))
  assert err < 2e-6, f"kappa={kappa:g}, reg/||dx||={frac:g}: rel err {err:.2e}"
