"""pathprox_jax.prox.group: group norms, unit norms, shrink factors and the group lasso prox.

``prox_group_lasso`` (one array) and ``group_lasso_slices`` (a group spread
over several arrays), in the Euclidean metric (closed-form group soft
threshold) and in a diagonal metric. References are independent of the
implementation under test (``tests/reference.py``): scipy's generic
minimiser on the prox objective, a float64 bracketing root finder (brentq)
on the optimality condition, and the closed form written with loops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx
from tests import reference

prox_jit = jax.jit(
    ppx.prox.prox_group_lasso, static_argnames=("axis", "newton_steps")
)
objective = reference.group_prox_objective
generic_min = reference.group_prox_generic
root_ref = reference.group_prox_root


def rows(fn, x, reg, s):
  """Applies a one-group reference to every row (groups on axis 0)."""
  return np.stack([fn(x[k], reg, s[k]) for k in range(x.shape[0])])


def rng_arrays(seed, *shapes):
  r = np.random.default_rng(seed)
  return [r.normal(size=s).astype(np.float32) for s in shapes]


# ---------------------------------------------------------------------------
# Norms and shrink factors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axis",
    [((5, 7), 0), ((5, 7), 1), ((3, 3, 4, 6), 2), ((3, 3, 4, 6), -1)],
)
def test_group_norms(shape, axis):
  (x,) = rng_arrays(0, shape)
  got = jax.jit(ppx.prox.group_norms, static_argnums=1)(x, axis)
  exp = reference.unit_norms([x], [axis % x.ndim])
  np.testing.assert_allclose(got, exp, rtol=1e-6)


def test_group_norms_low_precision_accumulates_in_float32():
  x = jnp.full((4096, 2), 0.01, jnp.bfloat16)
  n = ppx.prox.group_norms(x, 1)
  assert n.dtype == jnp.float32
  np.testing.assert_allclose(
      n, np.sqrt(4096) * float(jnp.bfloat16(0.01)), rtol=1e-6
  )


def test_group_norms_gradient_is_zero_not_nan_at_a_zero_group():
  x = jnp.zeros((3, 2)).at[:, 1].set(jnp.array([3.0, 0.0, 4.0]))
  g = jax.jit(jax.grad(lambda x: jnp.sum(ppx.prox.group_norms(x, 1))))(x)
  np.testing.assert_array_equal(g[:, 0], 0.0)
  np.testing.assert_allclose(g[:, 1], [0.6, 0.0, 0.8], rtol=1e-6)


def test_unit_norms_sum_over_every_slice_and_skip_biases():
  w1, w2, b, v1, v2 = rng_arrays(1, (3, 5), (5, 2, 2), (5,), (5, 4), (2, 5, 3))
  x = ppx.units.UnitWeights((w1, w2), (b,), (v1, v2), (), (1, 0), (0,), (0, 1))
  nw, nv = jax.jit(ppx.prox.unit_norms)(x)
  np.testing.assert_allclose(
      nw, reference.unit_norms([w1, w2], [1, 0]), rtol=1e-6
  )
  np.testing.assert_allclose(
      nv, reference.unit_norms([v1, v2], [0, 1]), rtol=1e-6
  )
  pn = ppx.prox.group_path_norms([(nw, nv), (nv, nv)])
  np.testing.assert_allclose(
      pn,
      [np.sum(np.asarray(nw) * np.asarray(nv)), np.sum(np.asarray(nv) ** 2)],
      rtol=1e-6,
  )


def test_shrink_factors():
  norms = jnp.array([0.0, 0.5, 1.0, 2.0, 4.0])
  np.testing.assert_allclose(
      jax.jit(ppx.prox.shrink_factors)(norms, 1.0), [0.0, 0.0, 0.0, 0.5, 0.75]
  )
  np.testing.assert_array_equal(
      ppx.prox.shrink_factors(norms, 0.0), [0.0, 1.0, 1.0, 1.0, 1.0]
  )


# ---------------------------------------------------------------------------
# Euclidean metric (scalar scaling): the group soft threshold
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.5, 2.0, 1e6])
def test_group_soft_threshold_matches_numpy(tau):
  (v,) = rng_arrays(3, (8, 4))
  v[1] = 0.0
  v[2] *= 1e-3
  got = jax.jit(lambda v, t: ppx.prox.prox_group_lasso(v, t, 1.0, axis=0))(
      v, tau
  )
  (exp,) = reference.group_soft_threshold([v], [0], tau)
  np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(got))


def test_threshold_is_reg_times_scaling():
  (v,) = rng_arrays(4, (6, 3))
  a = prox_jit(v, 0.2, 3.0, axis=0)
  (exp,) = reference.group_soft_threshold([v], [0], 0.6)
  np.testing.assert_allclose(a, exp, rtol=1e-5, atol=1e-7)


def test_precomputed_norms_are_used():
  (v,) = rng_arrays(5, (4, 3))
  fake = jnp.array([100.0, 100.0, 100.0, 100.0])  # every group "large"
  got = ppx.prox.prox_group_lasso(v, 1.0, 1.0, axis=0, norms=fake)
  np.testing.assert_allclose(got, v * 0.99, rtol=1e-6)


def test_group_lasso_slices_two_arrays_scalar_scaling_closed_form():
  """Unit i's group is column i of a (3, n) array and block i of a (n, 2, 2) one."""
  a, b = rng_arrays(6, (3, 6), (6, 2, 2))
  b[2] = 0.0
  a[:, 2] = 0.0  # an all-zero group
  norms = reference.unit_norms([a, b], [1, 0])
  reg = 0.5
  lr = float(np.median(norms)) / reg  # tau = reg * lr kills about half
  got = jax.jit(
      lambda a, b: ppx.prox.group_lasso_slices((a, b), reg, lr, axes=(-1, 0))
  )(a, b)
  exp = reference.group_soft_threshold([a, b], [1, 0], reg * lr)
  for g, e in zip(got, exp):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
  dead = [i for i in range(6) if np.all(np.asarray(got[0])[:, i] == 0)]
  assert 2 in dead and 0 < len(dead) < 6
  # groups die together: a unit is zero in both arrays or in neither
  for i in range(6):
    assert np.all(np.asarray(got[0])[:, i] == 0) == np.all(
        np.asarray(got[1])[i] == 0
    )


@pytest.mark.parametrize(
    "solver",
    [reference.group_prox_generic, reference.group_prox_root],
    ids=["scipy_minimize", "brentq"],
)
def test_group_lasso_slices_two_arrays_metric(solver):
  r = np.random.default_rng(7)
  a, b = r.normal(size=(3, 5)), r.normal(size=(5, 4))
  sa = 10 ** r.uniform(-1, 1, size=a.shape)
  sb = 10 ** r.uniform(-1, 1, size=(5, 1))  # broadcast along the outputs
  crit = np.array([
      np.linalg.norm(np.concatenate([a[:, i] / sa[:, i], b[i] / sb[i]]))
      for i in range(5)
  ])
  reg = float(np.median(crit))
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got = jax.jit(
      lambda a, b, sa, sb: ppx.prox.group_lasso_slices(
          (a, b), reg, (sa, sb), axes=(1, 0)
      )
  )(f32(a), f32(b), f32(sa), f32(sb))
  exp = reference.group_prox_slices([a, b], [1, 0], reg, [sa, sb], solver)
  for g, e in zip(got, exp):
    np.testing.assert_allclose(
        np.asarray(g, np.float64), e, rtol=2e-4, atol=2e-5
    )
  zero = np.all(np.asarray(got[0]) == 0, axis=0)
  np.testing.assert_array_equal(zero, crit <= reg)
  np.testing.assert_array_equal(zero, np.all(np.asarray(got[1]) == 0, axis=1))


def test_group_lasso_slices_array_scaling_must_be_a_tuple():
  a, b = rng_arrays(8, (3, 5), (5, 4))
  with pytest.raises(ValueError, match="tuple with one array per input"):
    ppx.prox.group_lasso_slices((a, b), 0.1, jnp.ones((3, 5)), axes=(1, 0))


# ---------------------------------------------------------------------------
# Correctness against independent references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_prox_matches_generic_minimiser(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(6, 5))
  s = 10 ** rng.uniform(-1.5, 1.5, size=x.shape)
  reg = float(np.median(np.linalg.norm(x / s, axis=1)))  # half the groups die
  y = np.asarray(
      prox_jit(
          jnp.asarray(x, jnp.float32), reg, jnp.asarray(s, jnp.float32), axis=0
      ),
      np.float64,
  )
  ref = rows(generic_min, x, reg, s)
  np.testing.assert_allclose(y, ref, rtol=2e-4, atol=2e-5)
  for k in range(x.shape[0]):  # and never worse than the generic minimiser
    assert objective(y[k], x[k], reg, s[k]) <= (
        objective(ref[k], x[k], reg, s[k]) + 1e-5
    )
  assert 0 < np.sum(np.all(y == 0, axis=1)) < x.shape[0]


def test_zero_condition_is_weighted_norm():
  """y_k = 0 exactly iff ||d * x_k|| <= reg, d = 1 / scaling."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 4))
  s = 10 ** rng.uniform(-1, 1, size=x.shape)
  crit = np.linalg.norm(x / s, axis=1)
  reg = float(np.median(crit))
  y = np.asarray(
      prox_jit(
          jnp.asarray(x, jnp.float32), reg, jnp.asarray(s, jnp.float32), axis=0
      )
  )
  zero = np.all(y == 0, axis=1)
  np.testing.assert_array_equal(zero, crit <= reg)
  # just below / just above the critical value of one group
  k = 0
  for factor, expect_zero in ((1.001, True), (0.999, False)):
    yk = prox_jit(
        jnp.asarray(x[k : k + 1], jnp.float32),
        crit[k] * factor,
        jnp.asarray(s[k : k + 1], jnp.float32),
        axis=0,
    )
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
    np.testing.assert_allclose(
        np.asarray(metric), np.asarray(euclid), rtol=2e-6, atol=1e-7
    )


def test_conv_output_kernel_groups_on_axis_minus_2():
  """Conv output kernel (kh, kw, n, out): unit i is v[:, :, i, :]."""
  rng = np.random.default_rng(6)
  v = rng.normal(size=(3, 3, 5, 4))
  s = 10 ** rng.uniform(-1, 1, size=v.shape)
  reg = 3.0
  y = np.asarray(
      prox_jit(
          jnp.asarray(v, jnp.float32), reg, jnp.asarray(s, jnp.float32), axis=-2
      )
  )
  for i in range(v.shape[2]):
    ref = root_ref(v[:, :, i, :].ravel(), reg, s[:, :, i, :].ravel())
    np.testing.assert_allclose(y[:, :, i, :].ravel(), ref, rtol=1e-5, atol=1e-6)


def test_broadcast_scaling_and_dtype():
  x = jnp.asarray(np.random.default_rng(7).normal(size=(4, 6)), jnp.bfloat16)
  s = jnp.asarray([[0.5], [1.0], [2.0], [4.0]], jnp.float32)  # per-group scale
  y = prox_jit(x, 0.3, s, axis=0)
  assert y.dtype == jnp.bfloat16 and y.shape == x.shape
  ref = rows(
      root_ref,
      np.asarray(x, np.float64),
      0.3,
      np.broadcast_to(np.asarray(s, np.float64), x.shape),
  )
  np.testing.assert_allclose(
      np.asarray(y, np.float64), ref, rtol=1e-2, atol=1e-2
  )


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
    ref = rows(
        root_ref, np.asarray(x, np.float64), 0.1, np.asarray(st, np.float64)
    )
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
  one = lambda xk, rk, sk: ppx.prox.prox_group_lasso(
      xk[None], rk, sk[None], axis=0, newton_steps=newton_steps
  )[0]
  return jax.vmap(one)(x, reg, s)


def _worst_rel_err(cases, newton_steps=20, width=40):
  """One batched call: each case padded to `width` with x = 0 and s = s[0]
  (zeros change neither ||d x||, f(r) nor the bracket)."""
  xs = np.zeros((len(cases), width))
  ss = np.ones((len(cases), width))
  for c, (x, s, _) in enumerate(cases):
    xs[c, : len(x)], ss[c, :], ss[c, : len(x)] = x, s[0], s
  regs = np.array([reg for _, _, reg in cases])
  y = np.asarray(
      _batched_rows(
          jnp.asarray(xs, jnp.float32),
          jnp.asarray(regs, jnp.float32),
          jnp.asarray(ss, jnp.float32),
          newton_steps,
      )
  )
  worst = 0.0
  for c, (x, s, reg) in enumerate(cases):
    ref = root_ref(x, reg, s)
    assert np.all(y[c, len(x) :] == 0)
    worst = max(
        worst, np.linalg.norm(y[c, : len(x)] - ref) / np.linalg.norm(ref)
    )
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
