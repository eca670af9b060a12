"""pathprox_jax.transforms.adaptive_pathprox: PathProx in Adam's metric, against NumPy.

The NumPy side follows the docstring's algorithm step by step in float64
(coupled decay on ungrouped kernels, Adam moments, balancing with the moment
rescaling, sphere projection, group prox in Adam's metric by brentq).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from tests import reference
from tests.tree_utils import finite, grads_like, run

GROUPS = [("a", "b"), ("c", "d")]


def two_group_params(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s) * 0.5, jnp.float32)
  return {
      "a": {"kernel": f(3, 4), "bias": f(4)},
      "b": {"kernel": f(4, 5) * 3.0, "bias": f(5)},
      "c": {"kernel": f(5, 3), "bias": f(3)},
      "d": {"kernel": f(3, 2), "bias": f(2)},
      "head": {"kernel": f(2, 2), "bias": f(2)},
  }


def np_adaptive_pathprox(
    params, grads_seq, lr, lam, eps, balance, b1=0.9, b2=0.999
):
  p = reference.flat(params)
  adam = reference.Adam(p, b1, b2)
  for g in map(reference.flat, grads_seq):
    g["head/kernel"] = g["head/kernel"] + lam * p["head/kernel"]  # coupled
    m_hat, v_hat = adam.step(g)
    z = {k: p[k] - lr * m_hat[k] / (np.sqrt(v_hat[k]) + eps) for k in p}
    if balance:
      pn = [
          np.sum(
              np.linalg.norm(z[f"{a}/kernel"], axis=0)
              * np.linalg.norm(z[f"{b}/kernel"], axis=1)
          )
          for a, b in GROUPS
      ]
      c0 = np.sqrt(pn[0] * pn[1]) / pn[0]  # geometric mean / P_0
      factors = {
          "b/kernel": c0,
          "b/bias": c0,
          "c/bias": c0,
          "d/kernel": 1.0 / c0,
      }
      for k, f in factors.items():  # moments transformed with the params
        z[k] = z[k] * f
        adam.mu[k] /= f
        adam.nu[k] /= f * f
        v_hat[k] = v_hat[k] / (f * f)
    for a, b in GROUPS:
      w = z[f"{a}/kernel"]
      n = np.linalg.norm(w, axis=0)
      z[f"{a}/kernel"], z[f"{a}/bias"] = w / n, z[f"{a}/bias"] / n
      s = lr / (np.sqrt(v_hat[f"{b}/kernel"]) + eps)
      v = z[f"{b}/kernel"]
      z[f"{b}/kernel"] = np.stack([
          reference.group_prox_root(v[i], lam, s[i]) for i in range(v.shape[0])
      ])
    p = z
  return p, adam


@pytest.mark.parametrize("balance", [False, True])
def test_adaptive_pathprox_matches_numpy(balance):
  params = two_group_params()
  params["b"]["kernel"] = params["b"]["kernel"].at[0].multiply(0.01)
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  grads = grads_like(params, 2, seed=7)
  lr, lam, eps = 0.05, 3.0, 1e-8
  tx = ppx.adaptive_pathprox(lr, lam, spec, eps=eps, balance=balance)
  out, state = run(tx, params, grads)
  assert isinstance(state, optax.ScaleByAdamState) and int(state.count) == 2
  p, adam = np_adaptive_pathprox(params, grads, lr, lam, eps, balance)
  got = reference.flat(jax.tree.map(np.asarray, out))
  for k in p:  # float32 vs float64 through two group proxes near threshold
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-5, err_msg=k)
  mu = reference.flat(jax.tree.map(np.asarray, state.mu))
  nu = reference.flat(jax.tree.map(np.asarray, state.nu))
  for k in p:
    np.testing.assert_allclose(mu[k], adam.mu[k], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(nu[k], adam.nu[k], rtol=1e-4, atol=1e-9)
  assert np.any(np.all(got["b/kernel"] == 0, axis=1))  # some units pruned
  assert not np.all(got["b/kernel"] == 0)


def test_b1_b2_bias_correction_and_schedule():
  params = two_group_params(2)
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  grads = grads_like(params, 2, seed=8)
  sched = lambda t: 0.05 / (t + 1)
  out, _ = run(
      ppx.adaptive_pathprox(
          sched,
          0.5,
          spec,
          b1=0.5,
          b2=0.9,
          eps=1e-3,
          bias_correction=False,
          balance=False,
      ),
      params,
      grads,
  )
  p = reference.flat(params)
  adam = reference.Adam(p, 0.5, 0.9, bias_correction=False)
  for t, g in enumerate(map(reference.flat, grads)):
    lr = sched(t)
    g["head/kernel"] = g["head/kernel"] + 0.5 * p["head/kernel"]
    m, v = adam.step(g)
    z = {k: p[k] - lr * m[k] / (np.sqrt(v[k]) + 1e-3) for k in p}
    for a, b in GROUPS:
      n = np.linalg.norm(z[f"{a}/kernel"], axis=0)
      z[f"{a}/kernel"], z[f"{a}/bias"] = (
          z[f"{a}/kernel"] / n,
          z[f"{a}/bias"] / n,
      )
      s = lr / (np.sqrt(v[f"{b}/kernel"]) + 1e-3)
      z[f"{b}/kernel"] = np.stack([
          reference.group_prox_root(z[f"{b}/kernel"][i], 0.5, s[i])
          for i in range(z[f"{b}/kernel"].shape[0])
      ])
    p = z
  got = reference.flat(jax.tree.map(np.asarray, out))
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_balancing_preserves_function_of_z():
  """Balancing inside the step changes no network output (only the prox does)."""
  params = two_group_params(1)
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  grads = grads_like(params, 1, seed=2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 3)), jnp.float32)

  def net(p):
    h = jax.nn.relu(x @ p["a"]["kernel"] + p["a"]["bias"])
    h = h @ p["b"]["kernel"] + p["b"]["bias"]
    h = jax.nn.relu(h @ p["c"]["kernel"] + p["c"]["bias"])
    h = h @ p["d"]["kernel"] + p["d"]["bias"]
    return h @ p["head"]["kernel"] + p["head"]["bias"]

  # lam = 0: the prox on v is the identity; the sphere projection divides
  # each unit by the same ||w_i|| with or without balancing (balancing never
  # touches input kernels), so both runs compute the same function.
  outs = [
      run(ppx.adaptive_pathprox(0.05, 0.0, spec, balance=bal), params, grads)[0]
      for bal in (False, True)
  ]
  np.testing.assert_allclose(
      np.asarray(net(outs[0])), np.asarray(net(outs[1])), rtol=1e-4, atol=1e-5
  )
  assert not np.allclose(
      np.asarray(outs[0]["b"]["kernel"]), np.asarray(outs[1]["b"]["kernel"])
  )


def test_zero_grads_and_zero_learning_rate():
  params = two_group_params(3)
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  zero = [jax.tree.map(jnp.zeros_like, params)] * 2
  out, state = run(
      ppx.adaptive_pathprox(1e-3, 1e-4, spec, eps=1e-8), params, zero
  )
  assert finite((out, state))
  # v_hat = 0: the metric threshold lr lam / eps is huge, every unit is pruned
  assert np.all(np.asarray(out["b"]["kernel"]) == 0)
  # a zero learning rate (warm-up start) leaves v exactly alone
  out, _ = run(
      ppx.adaptive_pathprox(0.0, 1e-4, spec, balance=False), params, zero
  )
  for k in ("b", "d"):
    np.testing.assert_array_equal(
        np.asarray(out[k]["kernel"]), np.asarray(params[k]["kernel"])
    )


@pytest.mark.parametrize("lam", [3.0, 1e-9])
def test_default_eps_is_a_tenth_of_the_weight_decay(lam):
  """eps=None is max(weight_decay / 10, 1e-8), checked against the NumPy
  Adam step; with Adam's 1e-8 the step differs (for lam > 1e-7)."""
  params = two_group_params(6)
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  grads = grads_like(params, 2, seed=11)
  lr, eps = 0.05, max(lam / 10, 1e-8)
  out, _ = run(ppx.adaptive_pathprox(lr, lam, spec), params, grads)
  p, _ = np_adaptive_pathprox(params, grads, lr, lam, eps, balance=True)
  got = reference.flat(jax.tree.map(np.asarray, out))
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-5, err_msg=k)
  explicit, _ = run(
      ppx.adaptive_pathprox(lr, lam, spec, eps=eps), params, grads
  )
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(explicit)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if lam > 1e-7:
    adam_eps, _ = run(
        ppx.adaptive_pathprox(lr, lam, spec, eps=1e-8), params, grads
    )
    assert not all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(adam_eps))
    )


@pytest.mark.parametrize("zero_step", [0, 2])
@pytest.mark.parametrize("balance", [True, False])
def test_float16_params_with_default_eps_stay_finite(zero_step, balance):
  """float16 params, default eps (1e-4 here), a step with an all-zero
  gradient (first, or after two steps): finite params and moments, dtypes
  kept, moments in float32 (float16 would underflow)."""
  params = jax.tree.map(lambda a: a.astype(jnp.float16), two_group_params(7))
  spec = ppx.UnitSpec.from_pairs(params, GROUPS)
  grads = [
      jax.tree.map(lambda a: a.astype(jnp.float16), g)
      for g in grads_like(params, 4, seed=12)
  ]
  grads[zero_step] = jax.tree.map(jnp.zeros_like, grads[zero_step])
  out, state = run(
      ppx.adaptive_pathprox(1e-2, 1e-3, spec, balance=balance), params, grads
  )
  assert finite((out, state))
  assert all(a.dtype == jnp.float16 for a in jax.tree.leaves(out))
  assert all(
      m.dtype == jnp.float32 for m in jax.tree.leaves((state.mu, state.nu))
  )
  assert int(state.count) == 4
  # the run is not trivial: the params moved, w stayed on the sphere
  assert any(
      bool(jnp.any(a != b))
      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params))
  )
  for a, _ in GROUPS:
    n = np.linalg.norm(np.asarray(out[a]["kernel"], np.float64), axis=0)
    np.testing.assert_allclose(n, 1.0, rtol=2e-3)
