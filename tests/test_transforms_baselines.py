"""pathprox_jax.transforms.baselines: Prox-SGD two-stage, subgradient Adam, lq_subgradient, ProxQuant.

Against NumPy (float64, ``tests/reference.py``) under ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from tests import reference
from tests.tree_utils import flat, grads_like, make_params, run

RTOL, ATOL = 2e-5, 1e-6


def np_lq_subgradient(x, q, guard):
  a = np.maximum(np.abs(x), guard)
  return np.sign(x) * (1.0 if q == 1.0 else q * a ** (q - 1))


def test_prox_sgd_two_stage_matches_numpy():
  params = make_params()
  grads = grads_like(params, 3)
  lr, reg = 0.3, 0.4
  out, _ = run(
      ppx.transforms.prox_sgd_two_stage(lr, reg, ppx.prox.prox_l1),
      params,
      grads,
  )
  p = flat(params)
  adam = reference.Adam(p)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      hat = p[k] - m_hat[k] / d
      if k.endswith("kernel"):
        hat = reference.soft(hat, reg / d)
      p[k] = p[k] + lr * (hat - p[k])
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_prox_sgd_two_stage_is_never_exactly_zero():
  """A convex combination of theta and theta_hat (ProxGen, Study 1)."""
  params = make_params(1)
  grads = grads_like(params, 5, seed=2)
  out, _ = run(
      ppx.transforms.prox_sgd_two_stage(0.5, 1e3, ppx.prox.prox_l1),
      params,
      grads,
  )
  assert np.all(np.asarray(out["fc1"]["kernel"]) != 0)
  prox_out, _ = run(ppx.proxgen_adam(0.5, 1e3, ppx.prox.prox_l1), params, grads)
  assert np.all(np.asarray(prox_out["fc1"]["kernel"]) == 0)


@pytest.mark.parametrize("q", [1.0, 0.5, 2.0 / 3.0])
def test_subgradient_adam_matches_numpy(q):
  params = make_params()
  params["fc1"]["kernel"] = params["fc1"]["kernel"].at[0, 0].set(0.0)
  grads = grads_like(params, 2)
  lr, reg, guard = 0.01, 0.1, 1e-3
  out, _ = run(
      ppx.transforms.subgradient_adam(lr, reg, q, guard=guard), params, grads
  )
  p = flat(params)
  adam = reference.Adam(p)
  for g in map(flat, grads):
    for k in p:
      if k.endswith("kernel"):
        g[k] = g[k] + reg * np_lq_subgradient(p[k], q, guard)
    m_hat, v_hat = adam.step(g)
    for k in p:
      p[k] = p[k] - lr * m_hat[k] / (np.sqrt(v_hat[k]) + 1e-8)
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_lq_subgradient_adds_the_penalty_gradient():
  params = {
      "w": {"kernel": jnp.asarray([[2.0, -3.0, 0.0, 1e-12]])},
      "b": {"bias": jnp.asarray([5.0])},
  }
  grads = jax.tree.map(jnp.ones_like, params)
  sched = lambda t: 0.1 * (t + 1)
  tx = ppx.transforms.lq_subgradient(sched, 0.5, guard=1e-8)
  state = tx.init(params)
  upd = jax.jit(tx.update)
  for t in range(2):
    u, state = upd(grads, state, params)
    exp = 1.0 + sched(t) * np_lq_subgradient(
        np.asarray(params["w"]["kernel"], np.float64), 0.5, 1e-8
    )
    np.testing.assert_allclose(u["w"]["kernel"], exp, rtol=1e-6)
    np.testing.assert_array_equal(u["b"]["bias"], 1.0)  # not a kernel
  assert u["w"]["kernel"][0, 2] == 1.0  # 0 at exactly 0
  # a mask selects other leaves
  tx = ppx.transforms.lq_subgradient(1.0, 1.0, mask={"w": False, "b": True})
  u, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(u["w"]["kernel"], 1.0)
  np.testing.assert_array_equal(u["b"]["bias"], 2.0)


def test_proxquant_uses_uniform_threshold():
  params = {"kernel": jnp.asarray([0.2, 0.9, -1.3, 0.05], jnp.float32)}
  grads = [{"kernel": jnp.asarray([1.0, 0.01, -2.0, 1e-3], jnp.float32)}]
  lr, reg = 0.1, 2.0
  out, _ = run(ppx.transforms.proxquant(lr, reg), params, grads)
  z = np.asarray(params["kernel"], np.float64) - lr * np.sign(
      np.asarray(grads[0]["kernel"])
  )  # first Adam step: m_hat / d ~ sign(g)
  sgn = np.where(z >= 0, 1.0, -1.0)
  ref = sgn + reference.soft(z - sgn, lr * reg)
  np.testing.assert_allclose(np.asarray(out["kernel"]), ref, rtol=1e-5)


def test_original_and_revised_proxquant_differ():
  """Revised ProxQuant (proxgen_adam + prox_binary) thresholds at lr reg / d,
  original ProxQuant at lr reg: they differ unless d = 1."""
  params = {"kernel": jnp.asarray([0.2, 0.9, -1.3, 0.05], jnp.float32)}
  grads = [{"kernel": jnp.asarray([4.0, 0.01, -2.0, 1e-3], jnp.float32)}] * 2
  orig, _ = run(ppx.transforms.proxquant(0.1, 0.5, q=0.5), params, grads)
  revised, _ = run(
      ppx.proxgen_adam(
          0.1, 0.5, functools.partial(ppx.prox.prox_binary, q=0.5)
      ),
      params,
      grads,
  )
  assert not np.allclose(
      np.asarray(orig["kernel"]), np.asarray(revised["kernel"])
  )


def test_proximal_l1_gives_exact_zeros_subgradient_does_not():
  """Sparse linear regression: ProxGen-Adam finds exact zeros, Sub-Adam hovers."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(128, 20)), jnp.float32)
  w_true = np.zeros((20, 1))
  w_true[:4, 0] = [2.0, -1.5, 1.0, 0.5]
  y = x @ jnp.asarray(w_true, jnp.float32)
  params = {"kernel": jnp.zeros((20, 1), jnp.float32) + 0.3}
  loss = lambda p: 0.5 * jnp.mean((x @ p["kernel"] - y) ** 2)
  results = {}
  for name, tx in (
      ("prox", ppx.proxgen_adam(0.02, 0.05, ppx.prox.prox_l1)),
      ("sub", ppx.transforms.subgradient_adam(0.02, 0.05, 1.0)),
  ):
    state = tx.init(params)

    def body(carry, _, tx=tx):
      p, s = carry
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=600))(
        (params, state)
    )
    results[name] = np.asarray(p["kernel"]).ravel()
  assert np.sum(results["prox"][4:] == 0) == 16
  assert np.all(results["prox"][:4] != 0)
  assert np.sum(results["sub"] == 0) == 0
  # both reach the same support up to the oscillation of the subgradient
  assert np.max(np.abs(results["sub"][4:])) < 0.05


def test_zero_grads_at_step_zero_are_finite():
  """v_hat = 0: huge scalings lr / eps, everything stays finite."""
  params = make_params(3)
  zero = [jax.tree.map(jnp.zeros_like, params)] * 2
  for tx in (
      ppx.transforms.prox_sgd_two_stage(1e-3, 1e-4, ppx.prox.prox_l1),
      ppx.transforms.proxquant(1e-3, 1e-4),
      ppx.transforms.subgradient_adam(1e-3, 1e-4, 0.5),
  ):
    out, state = run(tx, params, zero)
    for leaf in jax.tree.leaves((out, state)):
      assert bool(jnp.all(jnp.isfinite(leaf)))
