"""pathprox_jax.prox.path: the PathProx proximal step on one group (project w, shrink v).

Against NumPy loops (``tests/reference.py``), under ``jax.jit``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx
from pathprox_jax.units import UnitWeights
from tests import reference

prox = jax.jit(
    ppx.prox.prox_path_norm,
    static_argnames=("include_bias_in_norm", "min_norm"),
)


def rng_arrays(seed, *shapes):
  r = np.random.default_rng(seed)
  return [r.normal(size=s).astype(np.float32) for s in shapes]


def flax_pair(w, b, v):
  return {"a": {"kernel": w, "bias": b}, "b": {"kernel": v}}


@pytest.mark.parametrize(
    "shapes",
    [((5, 4), (4,), (4, 6)), ((3, 3, 2, 4), (4,), (3, 3, 4, 5))],
    ids=["dense", "conv"],
)
def test_prox_path_norm_matches_numpy(shapes):
  w, b, v = rng_arrays(5, *shapes)
  v[..., 1, :] *= 1e-3  # this unit gets pruned
  w[..., 3] = 0.0  # a zero column: not projected
  tau, reg = 0.05, 0.5
  y = prox(UnitWeights.from_arrays(w, v, b), reg, tau / reg)
  exp = reference.prox_step(flax_pair(w, b, v), [("a", "b")], tau)
  np.testing.assert_allclose(y.w[0], exp["a"]["kernel"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.b[0], exp["a"]["bias"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.v[0], exp["b"]["kernel"], rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(y.v[0][..., 1, :]) == 0)
  assert np.any(np.asarray(y.v[0]) != 0)


def test_include_bias_in_norm():
  w, b, v = rng_arrays(6, (5, 4), (4,), (4, 3))
  y = prox(
      UnitWeights.from_arrays(w, v, b), 0.1, 1.0, include_bias_in_norm=True
  )
  exp = reference.prox_step(
      flax_pair(w, b, v), [("a", "b")], 0.1, include_bias_in_norm=True
  )
  np.testing.assert_allclose(y.w[0], exp["a"]["kernel"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.b[0], exp["a"]["bias"], rtol=1e-5, atol=1e-7)


def test_several_input_and_output_slices():
  """w_i over two input slices, v_i over two heads: one norm each."""
  w1, w2, v1, v2 = rng_arrays(7, (3, 6), (6, 2), (6, 4), (5, 6))
  v1[4] *= 1e-2
  v2[:, 4] *= 1e-2
  x = UnitWeights((w1, w2), (), (v1, v2), (), (1, 0), (), (0, 1))
  tau = 0.3
  y = prox(x, tau, 1.0)
  nw = reference.unit_norms([w1, w2], [1, 0])
  np.testing.assert_allclose(y.w[0], w1 / nw, rtol=1e-5)
  np.testing.assert_allclose(y.w[1], w2 / nw[:, None], rtol=1e-5)
  ev1, ev2 = reference.group_soft_threshold([v1, v2], [0, 1], tau)
  np.testing.assert_allclose(y.v[0], ev1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(y.v[1], ev2, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(y.v[0][4]) == 0) and np.all(
      np.asarray(y.v[1][:, 4]) == 0
  )


def test_array_scaling_is_the_group_prox_in_that_metric():
  w, v = rng_arrays(8, (4, 5), (5, 3))
  s = 10 ** np.random.default_rng(9).uniform(-1, 1, size=v.shape)
  reg = float(np.median([np.linalg.norm(v[i] / s[i]) for i in range(5)]))
  f32 = jnp.asarray(s, jnp.float32)
  for scaling in ((f32,), f32):  # a tuple, or one array alone
    y = prox(UnitWeights.from_arrays(w, v), reg, scaling)
    (exp,) = reference.group_prox_slices([v], [0], reg, [s])
    np.testing.assert_allclose(y.v[0], exp, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(y.w[0]), axis=0), 1.0, rtol=1e-6
    )
  assert 0 < np.sum(np.all(np.asarray(y.v[0]) == 0, axis=1)) < 5


def test_v_is_not_rescaled_by_the_norm_of_w():
  """A projection, not a function-preserving rescaling."""
  w = np.array([[3.0], [4.0]], np.float32)
  v = np.array([[2.0, 0.0]], np.float32)
  y = prox(UnitWeights.from_arrays(w, v), 0.0, 1.0)
  np.testing.assert_allclose(y.w[0], [[0.6], [0.8]], rtol=1e-6)
  np.testing.assert_array_equal(y.v[0], v)


def test_zero_everything_is_finite():
  x = UnitWeights.from_arrays(
      jnp.zeros((3, 4)), jnp.zeros((4, 2)), jnp.zeros(4)
  )
  for reg in (0.0, 1.0):
    y = prox(x, reg, 1.0)
    for leaf in jax.tree.leaves(y):
      assert np.all(np.asarray(leaf) == 0)


def test_lambda_zero_is_projection_only():
  w, v = rng_arrays(10, (5, 3), (3, 2))
  y = prox(UnitWeights.from_arrays(w, v), 0.0, 1.0)
  np.testing.assert_array_equal(y.v[0], v)
  np.testing.assert_allclose(np.linalg.norm(y.w[0], axis=0), 1.0, rtol=1e-6)


def test_precomputed_norms_are_used():
  w, v = rng_arrays(11, (3, 2), (2, 2))
  x = UnitWeights.from_arrays(w, v)
  norms = (jnp.array([1.0, 2.0]), jnp.array([10.0, 0.05]))
  y = ppx.prox.prox_path_norm(x, 0.1, 1.0, norms=norms)
  np.testing.assert_allclose(y.w[0], w / np.array([1.0, 2.0]), rtol=1e-6)
  np.testing.assert_allclose(y.v[0][0], v[0] * 0.99, rtol=1e-6)
  np.testing.assert_array_equal(y.v[0][1], 0.0)
