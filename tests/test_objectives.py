"""pathprox_jax.objectives: penalties, path norms, active units, Jacobian norms against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np

from pathprox_jax import (
    UnitGroup,
    UnitSpec,
    active_units,
    jacobian_spectral_norms,
    path_norm_penalty,
    path_norms,
    unit_path_norms,
    weight_decay_penalty,
)


def params(seed=0):
  r = np.random.default_rng(seed)
  p = {
      "a": {"kernel": r.normal(size=(4, 6)), "bias": r.normal(size=6)},
      "b": {"kernel": r.normal(size=(6, 5)), "bias": r.normal(size=5)},
      "head": {"kernel": r.normal(size=(5, 3)), "bias": r.normal(size=3)},
  }
  p["b"]["kernel"][1] = 0.0
  p["b"]["kernel"][4] = 1e-7
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), p)


def test_penalties_match_numpy():
  p = params()
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  np_p = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
  wd = 0.5 * sum(np.sum(np_p[k]["kernel"] ** 2) for k in np_p)
  np.testing.assert_allclose(jax.jit(weight_decay_penalty)(p), wd, rtol=1e-6)
  units = np.linalg.norm(np_p["a"]["kernel"], axis=0) * np.linalg.norm(
      np_p["b"]["kernel"], axis=1
  )
  np.testing.assert_allclose(
      unit_path_norms(p, spec)[0], units, rtol=1e-5, atol=1e-12
  )
  np.testing.assert_allclose(path_norms(p, spec), [units.sum()], rtol=1e-6)
  exp = units.sum() + 0.5 * np.sum(np_p["head"]["kernel"] ** 2)
  got = jax.jit(path_norm_penalty, static_argnums=1)(p, spec)
  np.testing.assert_allclose(got, exp, rtol=1e-6)
  # AM-GM: the path-norm penalty never exceeds the weight decay penalty.
  assert got <= weight_decay_penalty(p)


def test_active_units_thresholds():
  p = params()
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  a0 = active_units(p, spec)
  assert int(a0.counts[0]) == 5 and a0.totals == (6,)
  np.testing.assert_allclose(a0.fraction, 5 / 6)
  a5 = active_units(p, spec, threshold=1e-5)
  assert int(a5.counts[0]) == 4


def test_jacobian_spectral_norm_of_small_relu_net():
  r = np.random.default_rng(1)
  w1, w2 = r.normal(size=(3, 7)), r.normal(size=(7, 2))
  f = lambda x: jnp.maximum(x @ w1, 0) @ w2
  x = r.normal(size=(5, 3))
  got = jax.jit(lambda x: jacobian_spectral_norms(f, x))(jnp.asarray(x))
  for n in range(5):
    active = (x[n] @ w1 > 0).astype(float)
    jac = (w1 * active).dot(w2).T  # (out, in)
    np.testing.assert_allclose(
        got[n], np.linalg.svd(jac, compute_uv=False)[0], rtol=1e-5
    )


def test_path_norm_penalty_gradient_is_finite_at_dead_units():
  p = params()
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  g = jax.jit(jax.grad(path_norm_penalty), static_argnums=1)(p, spec)
  for leaf in jax.tree.leaves(g):
    assert np.all(np.isfinite(leaf))
  # Unit 1 has v = 0: its input column gets no gradient (not NaN).
  np.testing.assert_array_equal(g["a"]["kernel"][:, 1], 0.0)


def test_weight_decay_penalty_counts_kernels_of_every_layout_only():
  r = np.random.default_rng(2)
  tree = {
      "flax": {"kernel": r.normal(size=(3, 4)), "bias": r.normal(size=4)},
      "mlp/~/linear_0": {"w": r.normal(size=(4, 2)), "b": r.normal(size=2)},
      "layers": [
          {"weight": r.normal(size=(2, 4))},
          {"weight": r.normal(size=4), "bias": r.normal(size=4)},
      ],
  }
  exp = 0.5 * sum(
      np.sum(a**2)
      for a in (
          tree["flax"]["kernel"],
          tree["mlp/~/linear_0"]["w"],
          tree["layers"][0]["weight"],
      )
  )
  got = weight_decay_penalty(
      jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)
  )
  np.testing.assert_allclose(got, exp, rtol=1e-6)


def test_path_norms_of_a_group_with_two_output_slices():
  r = np.random.default_rng(3)
  p = {
      "a": {"kernel": r.normal(size=(3, 4))},
      "h1": {"kernel": r.normal(size=(4, 2))},
      "h2": {"kernel": r.normal(size=(5, 4))},
  }
  spec = UnitSpec.from_groups(
      p,
      [
          UnitGroup(
              inputs=[("a/kernel", 1)],
              outputs=[("h1/kernel", 0), ("h2/kernel", 1)],
          )
      ],
  )
  nv = np.sqrt(
      np.sum(p["h1"]["kernel"] ** 2, axis=1)
      + np.sum(p["h2"]["kernel"] ** 2, axis=0)
  )
  units = np.linalg.norm(p["a"]["kernel"], axis=0) * nv
  jp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
  np.testing.assert_allclose(unit_path_norms(jp, spec)[0], units, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(path_norm_penalty, static_argnums=1)(jp, spec),
      units.sum(),
      rtol=1e-5,
  )
