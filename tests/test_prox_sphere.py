"""pathprox_jax.prox.sphere: projection of every unit's input weights onto the unit sphere.

Compared with a NumPy loop over units (float64), under ``jax.jit``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx
from pathprox_jax.units import UnitWeights
from tests import reference

project = jax.jit(
    ppx.prox.project_unit_sphere,
    static_argnames=("include_bias_in_norm", "min_norm"),
)


def rng_arrays(seed, *shapes):
  r = np.random.default_rng(seed)
  return [r.normal(size=s).astype(np.float32) for s in shapes]


def test_projection_matches_numpy_and_keeps_zero_columns():
  k, v, b = rng_arrays(1, (6, 5), (5, 3), (5,))
  k[:, 2] = 0.0
  x = UnitWeights.from_arrays(k, v, b)
  y = project(x)
  (ew,), (eb,) = reference.project_units([k], [1], [b], [0])
  np.testing.assert_allclose(y.w[0], ew, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.b[0], eb, rtol=1e-5)
  assert np.all(np.asarray(y.w[0][:, 2]) == 0) and y.b[0][2] == b[2]
  np.testing.assert_array_equal(y.v[0], v)  # output weights untouched
  live = np.arange(5) != 2
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(y.w[0]), axis=0)[live], 1.0, rtol=1e-6
  )


def test_projection_with_bias_in_norm_and_conv():
  k, b = rng_arrays(2, (3, 3, 4, 6), (6,))
  x = UnitWeights.from_arrays(k, jnp.zeros((3, 3, 6, 2)), b)
  y = project(x, include_bias_in_norm=True)
  (ew,), (eb,) = reference.project_units([k], [3], [b], [0], include_bias=True)
  np.testing.assert_allclose(y.w[0], ew, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.b[0], eb, rtol=1e-5)
  total = (
      np.sum(np.asarray(y.w[0], np.float64) ** 2, axis=(0, 1, 2))
      + np.asarray(y.b[0], np.float64) ** 2
  )
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_projection_of_a_unit_spread_over_two_input_slices():
  """A pre-activation A1 x1 + A2 x2: ||w_i||^2 sums over both kernels."""
  w1, w2, b, v = rng_arrays(3, (3, 4), (4, 2, 2), (4, 1, 1), (4, 5))
  x = UnitWeights((w1, w2), (b,), (v,), (), (1, 0), (0,), (0,))
  y = project(x)
  (e1, e2), (eb,) = reference.project_units([w1, w2], [1, 0], [b], [0])
  np.testing.assert_allclose(y.w[0], e1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.w[1], e2, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.b[0], eb, rtol=1e-5)
  # neither slice alone is on the sphere, together they are
  n1 = np.sum(np.asarray(y.w[0], np.float64) ** 2, axis=0)
  n2 = np.sum(np.asarray(y.w[1], np.float64) ** 2, axis=(1, 2))
  np.testing.assert_allclose(n1 + n2, 1.0, rtol=1e-5)
  assert np.all(n1 < 0.999)


def test_min_norm_guards_small_units():
  k = np.array([[3.0, 1e-3, 0.0], [4.0, 0.0, 0.0]], np.float32)
  x = UnitWeights.from_arrays(k, jnp.ones((3, 1)), jnp.array([1.0, 2.0, 3.0]))
  y = project(x, min_norm=1e-2)
  np.testing.assert_allclose(y.w[0][:, 0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(y.w[0][:, 1:], k[:, 1:])  # at or below min_norm
  np.testing.assert_allclose(y.b[0], [0.2, 2.0, 3.0], rtol=1e-6)
  z = project(x)  # default 1e-12: the 1e-3 unit is projected
  np.testing.assert_allclose(z.w[0][:, 1], [1.0, 0.0], rtol=1e-6)


def test_precomputed_norms_are_used():
  k, v = rng_arrays(4, (3, 2), (2, 2))
  x = UnitWeights.from_arrays(k, v)
  y = ppx.prox.project_unit_sphere(x, norms=jnp.array([2.0, 4.0]))
  np.testing.assert_allclose(y.w[0], k / np.array([2.0, 4.0]), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_keeps_dtype_and_is_normalised(dtype):
  k, v = rng_arrays(5, (64, 3), (3, 2))
  x = UnitWeights.from_arrays(jnp.asarray(k, dtype), jnp.asarray(v, dtype))
  y = project(x)
  assert y.w[0].dtype == dtype and y.v[0].dtype == dtype
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(y.w[0], np.float64), axis=0), 1.0, rtol=1e-2
  )


def test_weight_decay_and_scaling_are_ignored():
  """The package's prox signature; an indicator has no strength and no step."""
  k, v, b = rng_arrays(6, (3, 4), (4, 2), (4,))
  x = UnitWeights.from_arrays(k, v, b)
  plain = project(x)
  for y in (
      jax.jit(ppx.prox.project_unit_sphere)(x, 0.7, 3.0),
      project(x, weight_decay=5.0, scaling=jnp.ones(4)),
  ):
    for a, e in zip(jax.tree.leaves(y), jax.tree.leaves(plain)):
      np.testing.assert_array_equal(a, e)
