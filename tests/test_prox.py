"""Pure PathProx operators against NumPy: projection, group soft-threshold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pathprox_jax import (UnitWeights, group_norms, project_unit_sphere,
                          prox_group_lasso, prox_path_norm)


def rng_arrays(seed, *shapes):
  r = np.random.default_rng(seed)
  return [r.normal(size=s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("shape, axis", [((5, 7), 0), ((5, 7), 1),
                                         ((3, 3, 4, 6), 2), ((3, 3, 4, 6), -1)])
def test_group_norms(shape, axis):
  (x,) = rng_arrays(0, shape)
  got = jax.jit(group_norms, static_argnums=1)(x, axis)
  moved = np.moveaxis(x.astype(np.float64), axis, 0).reshape(shape[axis], -1)
  np.testing.assert_allclose(got, np.linalg.norm(moved, axis=1), rtol=1e-6)


def test_group_norms_low_precision_accumulates_in_float32():
  x = jnp.full((4096, 2), 0.01, jnp.bfloat16)
  n = group_norms(x, 1)
  assert n.dtype == jnp.float32
  np.testing.assert_allclose(n, np.sqrt(4096) * float(jnp.bfloat16(0.01)), rtol=1e-6)


def test_projection_matches_numpy_and_keeps_zero_columns():
  k, b = rng_arrays(1, (6, 5), (5,))
  k[:, 2] = 0.0
  kk, bb = jax.jit(project_unit_sphere)(k, b)
  for i in range(5):
    n = np.linalg.norm(k[:, i].astype(np.float64))
    exp_k = k[:, i] / n if n > 0 else k[:, i]
    exp_b = b[i] / n if n > 0 else b[i]
    np.testing.assert_allclose(kk[:, i], exp_k, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bb[i], exp_b, rtol=1e-5)
  assert np.all(np.isfinite(kk)) and np.all(kk[:, 2] == 0)


def test_projection_with_bias_in_norm_and_conv():
  k, b = rng_arrays(2, (3, 3, 4, 6), (6,))
  kk, bb = jax.jit(lambda k, b: project_unit_sphere(k, b, include_bias=True))(k, b)
  for i in range(6):
    n = np.sqrt(np.sum(k[..., i].astype(np.float64) ** 2) + b[i] ** 2)
    np.testing.assert_allclose(kk[..., i], k[..., i] / n, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        np.sum(np.asarray(kk[..., i], np.float64) ** 2) + float(bb[i]) ** 2, 1.0,
        rtol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 0.5, 2.0, 1e6])
def test_group_soft_threshold_matches_numpy(tau):
  (v,) = rng_arrays(3, (8, 4))
  v[1] = 0.0
  v[2] *= 1e-3
  got = jax.jit(lambda v, t: prox_group_lasso(v, t, 1.0, axis=0))(v, tau)
  for i in range(8):
    n = np.linalg.norm(v[i].astype(np.float64))
    exp = np.zeros(4) if n <= tau else v[i] * (1 - tau / n)
    np.testing.assert_allclose(got[i], exp, rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(got))


def test_threshold_is_reg_times_scaling():
  (v,) = rng_arrays(4, (6, 3))
  a = prox_group_lasso(v, 0.2, 3.0, axis=0)
  b = prox_group_lasso(v, 0.6, 1.0, axis=0)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_prox_path_norm_dense_and_conv_units():
  w, b, v = rng_arrays(5, (3, 3, 2, 4), (4,), (3, 3, 4, 5))
  v[:, :, 1, :] *= 1e-3          # this unit gets pruned
  x = UnitWeights(jnp.asarray(w), jnp.asarray(b), jnp.asarray(v))
  tau = 0.05
  y = jax.jit(prox_path_norm)(x, tau)
  for i in range(4):
    nw = np.linalg.norm(w[..., i].astype(np.float64))
    np.testing.assert_allclose(y.w[..., i], w[..., i] / nw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.b[i], b[i] / nw, rtol=1e-5)
    nv = np.linalg.norm(v[..., i, :].astype(np.float64))
    exp = 0 * v[..., i, :] if nv <= tau else v[..., i, :] * (1 - tau / nv)
    np.testing.assert_allclose(y.v[..., i, :], exp, rtol=1e-5, atol=1e-7)
  assert np.all(y.v[:, :, 1, :] == 0)


def test_zero_everything_is_finite():
  x = UnitWeights(jnp.zeros((3, 4)), jnp.zeros(4), jnp.zeros((4, 2)))
  for reg in (0.0, 1.0):
    y = jax.jit(prox_path_norm)(x, reg)
    for leaf in y:
      assert np.all(np.asarray(leaf) == 0)


def test_lambda_zero_is_projection_only():
  w, v = rng_arrays(6, (5, 3), (3, 2))
  y = prox_path_norm(UnitWeights(w, None, v), 0.0)
  np.testing.assert_array_equal(y.v, v)
  np.testing.assert_allclose(np.linalg.norm(y.w, axis=0), 1.0, rtol=1e-6)
