"""pathprox_jax.balance: layer-wise and neuron balancing, normalisation.

Function preserved (NumPy forward pass), norms equalised, dead groups finite;
layer-wise balancing against the sequential walk of Appendix B in
``tests/reference.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx
from pathprox_jax import (
    UnitSpec,
    balance_layers,
    balance_neurons,
    normalize_units,
    path_norm_penalty,
    path_norms,
    unit_path_norms,
    weight_decay_penalty,
)
from pathprox_jax.balance import layer_scales
from tests import reference

LAYERS = ["l0", "l1", "l2", "l3", "l4", "l5", "head"]
PAIRS = [("l0", "l1"), ("l2", "l3"), ("l4", "l5")]
RELU_AFTER = {0, 1, 2, 3, 4, 5}  # plain MLP: ReLU everywhere but the head


def mlp_params(seed=0, sizes=(6, 8, 7, 9, 5, 8, 4, 3)):
  r = np.random.default_rng(seed)
  p = {}
  for name, a, b in zip(LAYERS, sizes[:-1], sizes[1:]):
    # very different scales per layer, so balancing has work to do
    s = r.uniform(0.2, 3.0)
    p[name] = {
        "kernel": (s * r.normal(size=(a, b))).astype(np.float32),
        "bias": r.normal(size=b).astype(np.float32),
    }
  return p


def as_jnp(p):
  return jax.tree.map(jnp.asarray, p)


def rel_diff(a, b):
  return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def test_layer_balancing_preserves_function_and_equalises():
  p = mlp_params()
  spec = UnitSpec.from_pairs(p, PAIRS)
  x = np.random.default_rng(1).normal(size=(32, 6))
  out = jax.jit(balance_layers, static_argnums=1)(as_jnp(p), spec)
  before = reference.forward(p, LAYERS, x, RELU_AFTER)
  after = reference.forward(
      jax.tree.map(np.asarray, out), LAYERS, x, RELU_AFTER
  )
  assert rel_diff(after, before) <= 1e-5
  pn = np.asarray(path_norms(out, spec))
  np.testing.assert_allclose(pn, pn[0], rtol=1e-5)
  # The product of the group path norms is invariant.
  np.testing.assert_allclose(
      np.prod(pn), np.prod(path_norms(as_jnp(p), spec)), rtol=1e-4
  )


def test_layer_balancing_matches_sequential_numpy_walk():
  p = mlp_params(3)
  spec = UnitSpec.from_pairs(p, PAIRS)
  got = jax.jit(balance_layers, static_argnums=1)(as_jnp(p), spec)
  exp = reference.balance_walk(p, PAIRS)
  for layer in LAYERS:
    for n in ("kernel", "bias"):
      np.testing.assert_allclose(
          got[layer][n], exp[layer][n], rtol=2e-5, atol=1e-6
      )


@pytest.mark.parametrize("dead", [0, 1, 2])
def test_dead_group_stays_finite_and_live_groups_balance(dead):
  p = mlp_params(4)
  a, b = PAIRS[dead]
  p[b]["kernel"][:] = 0.0  # every unit of this group is dead
  spec = UnitSpec.from_pairs(p, PAIRS)
  x = np.random.default_rng(2).normal(size=(16, 6))
  out = jax.jit(balance_layers, static_argnums=1)(as_jnp(p), spec)
  for leaf in jax.tree.leaves(out):
    assert np.all(np.isfinite(leaf))
  pn = np.asarray(path_norms(out, spec))
  assert pn[dead] == 0
  live = np.delete(pn, dead)
  np.testing.assert_allclose(live, live[0], rtol=1e-5)
  before = reference.forward(p, LAYERS, x, RELU_AFTER)
  after = reference.forward(
      jax.tree.map(np.asarray, out), LAYERS, x, RELU_AFTER
  )
  np.testing.assert_allclose(
      after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max()
  )
  exp = reference.balance_walk(p, PAIRS)
  for layer in LAYERS:
    np.testing.assert_allclose(
        out[layer]["kernel"], exp[layer]["kernel"], rtol=2e-5, atol=1e-6
    )


def test_all_groups_dead_is_identity():
  p = mlp_params(5)
  for _, b in PAIRS:
    p[b]["kernel"][:] = 0.0
  spec = UnitSpec.from_pairs(p, PAIRS)
  out = balance_layers(as_jnp(p), spec)
  for layer in LAYERS:
    np.testing.assert_array_equal(out[layer]["kernel"], p[layer]["kernel"])
    np.testing.assert_array_equal(out[layer]["bias"], p[layer]["bias"])


def test_layer_scales_extremes_stay_finite():
  c_in, c_out = layer_scales(jnp.array([1e-30, 0.0, 1e30, 3.0]))
  assert np.all(np.isfinite(c_in)) and np.all(np.isfinite(c_out))
  assert c_out[-1] == 1.0 and c_in[0] == 1.0


@pytest.mark.parametrize(
    "p", [[2.0, 8.0], [1.0, 0.0, 4.0, 0.5], [0.0, 3.0, 5.0], [0.0, 0.0], [7.0]]
)
def test_layer_scales_match_the_walk(p):
  c_in, c_out = jax.jit(layer_scales)(jnp.asarray(p))
  e_in, e_out = reference.layer_scales_walk(p)
  np.testing.assert_allclose(c_in, e_in, rtol=1e-6)
  np.testing.assert_allclose(c_out, e_out, rtol=1e-6)
  # every live group but the last ends at the geometric mean
  new = np.asarray(p) * e_out / e_in
  live = np.asarray(p) > 0
  if live[:-1].any():
    target = np.exp(np.mean(np.log(np.asarray(p)[live])))
    np.testing.assert_allclose(new[:-1][live[:-1]], target, rtol=1e-6)


def test_balance_groups_returns_scaled_norms_without_recomputing():
  p = mlp_params(8)
  spec = UnitSpec.from_pairs(p, PAIRS)
  groups, _ = spec.split(as_jnp(p))
  norms = [ppx.prox.unit_norms(x) for x in groups]
  new, new_norms, (c_in, c_out) = jax.jit(ppx.balance.balance_layers_groups)(
      groups, norms
  )
  for x, (nw, nv) in zip(new, new_norms):
    fresh_w, fresh_v = ppx.prox.unit_norms(x)
    np.testing.assert_allclose(nw, fresh_w, rtol=1e-6)
    np.testing.assert_allclose(nv, fresh_v, rtol=1e-5)
  e_in, e_out = reference.layer_scales_walk(
      np.asarray(ppx.prox.group_path_norms(norms), np.float64)
  )
  np.testing.assert_allclose(c_in, e_in, rtol=1e-5)
  np.testing.assert_allclose(c_out, e_out, rtol=1e-5)
  # the output biases (of layers l1, l3, l5) scale with c_out
  for g, (_, b) in enumerate(PAIRS):
    np.testing.assert_allclose(
        new[g].c[0], p[b]["bias"] * float(e_out[g]), rtol=1e-5
    )


def test_balance_neurons_preserves_function_and_balances_units():
  p = mlp_params(6)
  p["l1"]["kernel"][2] = 0.0  # a dead unit (v = 0)
  spec = UnitSpec.from_pairs(p, PAIRS)
  x = np.random.default_rng(3).normal(size=(32, 6))
  out = jax.jit(balance_neurons, static_argnums=1)(as_jnp(p), spec)
  before = reference.forward(p, LAYERS, x, RELU_AFTER)
  after = reference.forward(
      jax.tree.map(np.asarray, out), LAYERS, x, RELU_AFTER
  )
  assert rel_diff(after, before) <= 1e-5
  for a, b in PAIRS:
    nw = np.linalg.norm(np.asarray(out[a]["kernel"], np.float64), axis=0)
    nv = np.linalg.norm(np.asarray(out[b]["kernel"], np.float64), axis=1)
    ok = nv > 0
    np.testing.assert_allclose(nw[ok], nv[ok], rtol=1e-5)
  # The unit with v = 0 is balanced to w = b = 0 (same function).
  assert (
      np.all(np.asarray(out["l0"]["kernel"][:, 2]) == 0)
      and out["l0"]["bias"][2] == 0
  )
  # Balanced weight decay penalty == path-norm penalty (Theorem 4.1).
  np.testing.assert_allclose(
      weight_decay_penalty(out), path_norm_penalty(as_jnp(p), spec), rtol=1e-5
  )
  np.testing.assert_allclose(
      np.concatenate(unit_path_norms(out, spec)),
      np.concatenate(unit_path_norms(as_jnp(p), spec)),
      rtol=1e-5,
      atol=1e-7,
  )


def test_normalize_units_preserves_function_and_puts_w_on_sphere():
  p = mlp_params(7)
  p["l0"]["kernel"][:, 1] = 0.0  # a zero column is left alone
  spec = UnitSpec.from_pairs(p, PAIRS)
  x = np.random.default_rng(4).normal(size=(16, 6))
  out = jax.jit(normalize_units, static_argnums=1)(as_jnp(p), spec)
  before = reference.forward(p, LAYERS, x, RELU_AFTER)
  after = reference.forward(
      jax.tree.map(np.asarray, out), LAYERS, x, RELU_AFTER
  )
  assert rel_diff(after, before) <= 1e-5
  for a, _ in PAIRS:
    n = np.linalg.norm(np.asarray(out[a]["kernel"], np.float64), axis=0)
    live = np.linalg.norm(p[a]["kernel"], axis=0) > 0
    np.testing.assert_allclose(n[live], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(out["l0"]["kernel"][:, 1], 0.0)
