"""Tests for ProxGen transforms, adaptive PathProx and the baselines.

Every update is compared with an independent NumPy (float64) implementation
of the formulas in ALGORITHMS.md section 4 / the ProxGen paper; the
transforms run under ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import optimize

import pathprox_jax as ppx
from pathprox_jax.prox.elementwise import prox_l0, prox_l1, prox_l_half
from pathprox_jax.prox.group import prox_group_lasso
from pathprox_jax.transforms.adaptive_pathprox import adaptive_pathprox
from pathprox_jax.transforms.baselines import (lq_subgradient,
                                               prox_sgd_two_stage, proxquant,
                                               subgradient_adam)
from pathprox_jax.transforms.proxgen import (group_prox_from_units, kernel_mask,
                                             proxgen_adam, proxgen_sgd)

RTOL, ATOL = 2e-5, 1e-6


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------


def np_soft(z, mu):
  return np.sign(z) * np.maximum(np.abs(z) - mu, 0.0)


def np_hard(z, mu):
  return np.where(np.abs(z) > np.sqrt(2 * mu), z, 0.0)


def np_group_metric(z, reg, s):
  """argmin sum (y - z)^2 / (2 s) + reg ||y|| for one group, float64."""
  z, s = np.asarray(z, np.float64).ravel(), np.asarray(s, np.float64).ravel()
  d = 1.0 / s
  ndz = np.linalg.norm(d * z)
  if ndz <= reg:
    return np.zeros_like(z)
  f = lambda r: np.sum((d * z / (d * r + reg)) ** 2) - 1.0
  r = optimize.brentq(f, (ndz - reg) / d.max() * (1 - 1e-12),
                      (ndz - reg) / d.min() * (1 + 1e-12), xtol=1e-300,
                      rtol=1e-15)
  return z * d * r / (d * r + reg)


class NpAdam:
  """Adam moments in float64."""

  def __init__(self, params, b1, b2, bias_correction):
    self.mu = {k: np.zeros_like(v) for k, v in params.items()}
    self.nu = {k: np.zeros_like(v) for k, v in params.items()}
    self.t, self.b1, self.b2, self.bc = 0, b1, b2, bias_correction

  def step(self, grads):
    self.t += 1
    m_hat, v_hat = {}, {}
    for k, g in grads.items():
      self.mu[k] = self.b1 * self.mu[k] + (1 - self.b1) * g
      self.nu[k] = self.b2 * self.nu[k] + (1 - self.b2) * g * g
      c1 = 1 - self.b1 ** self.t if self.bc else 1.0
      c2 = 1 - self.b2 ** self.t if self.bc else 1.0
      m_hat[k], v_hat[k] = self.mu[k] / c1, self.nu[k] / c2
    return m_hat, v_hat


def flat(tree):
  """{'a/b': np.float64 array} from a nested dict."""
  out = {}
  for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out["/".join(str(k.key) for k in kp)] = np.asarray(leaf, np.float64)
  return out


def run(tx, params, grads_seq):
  """Applies tx under jit for every gradient in grads_seq."""
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for g in grads_seq:
    params, state = step(params, state, g)
  return params, state


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s) * 0.3, jnp.float32)
  return {"fc1": {"kernel": f32(4, 5), "bias": f32(5)},
          "fc2": {"kernel": f32(5, 3), "bias": f32(3)}}


def grads_like(params, n, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape),
                                             jnp.float32), params)
          for _ in range(n)]


# ---------------------------------------------------------------------------
# proxgen_adam / proxgen_sgd against NumPy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("prox,np_prox", [(prox_l1, np_soft),
                                          (prox_l0, np_hard)],
                         ids=["l1", "l0"])
def test_proxgen_adam_matches_numpy(bias_correction, prox, np_prox):
  params = make_params()
  grads = grads_like(params, 4)
  sched = optax.linear_schedule(0.05, 0.01, 3)
  reg, b1, b2, eps = 0.3, 0.8, 0.95, 1e-6
  tx = proxgen_adam(sched, prox, reg, b1=b1, b2=b2, eps=eps,
                    bias_correction=bias_correction)
  out, state = run(tx, params, grads)

  p = flat(params)
  adam = NpAdam(p, b1, b2, bias_correction)
  for t, g in enumerate(grads):
    lr = float(sched(t))  # schedule sees the pre-increment count
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + eps
      z = p[k] - lr * m_hat[k] / d
      p[k] = np_prox(z, lr * reg / d) if k.endswith("kernel") else z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)
  assert int(state.count) == len(grads)
  assert np.any(got["fc1/kernel"] == 0)  # the thresholds bite
  np.testing.assert_allclose(flat(state.mu)["fc2/bias"], adam.mu["fc2/bias"],
                             rtol=RTOL)


def test_array_scaling_prox_is_coordinatewise():
  """With Adam's array scaling, l1/2 acts as the scalar prox per coordinate."""
  params = make_params(2)
  grads = grads_like(params, 2, seed=3)
  lr, reg = 0.05, 0.05
  out, _ = run(proxgen_adam(lr, prox_l_half, reg, mask=lambda p: jax.tree.map(
      lambda _: True, p)), params, grads)
  p = flat(params)
  adam = NpAdam(p, 0.9, 0.999, True)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      z = (p[k] - lr * m_hat[k] / d).ravel()
      s = (lr / d).ravel()
      p[k] = np.array([float(prox_l_half(jnp.float32(zi), reg, jnp.float32(si)))
                       for zi, si in zip(z, s)]).reshape(p[k].shape)
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)
  assert any(np.any(v == 0) for v in got.values())


def test_masked_leaves_get_plain_adam():
  params = make_params()
  grads = grads_like(params, 3)
  only_fc2 = {"fc1": False, "fc2": {"kernel": True, "bias": False}}
  out, _ = run(proxgen_adam(0.01, prox_l1, 1e6, mask=only_fc2), params, grads)
  ref, _ = run(optax.adam(0.01), params, grads)
  assert np.all(np.asarray(out["fc2"]["kernel"]) == 0)  # huge reg: all zero
  for path in (("fc1", "kernel"), ("fc1", "bias"), ("fc2", "bias")):
    a, b = out[path[0]][path[1]], ref[path[0]][path[1]]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6)
  # default mask: kernels only
  assert kernel_mask(params) == {"fc1": {"kernel": True, "bias": False},
                                 "fc2": {"kernel": True, "bias": False}}
  out, _ = run(proxgen_adam(0.01, prox_l1, 1e6), params, grads)
  assert np.all(np.asarray(out["fc1"]["kernel"]) == 0)
  assert np.all(np.asarray(out["fc1"]["bias"]) != 0)


def test_unit_scaling_reduces_to_plain_prox():
  params = make_params()
  zero = [jax.tree.map(jnp.zeros_like, params)]
  for prox in (prox_l1, prox_l0, prox_l_half):
    out, _ = run(proxgen_sgd(1.0, prox, 0.05), params, zero)
    np.testing.assert_array_equal(
        np.asarray(out["fc1"]["kernel"]),
        np.asarray(prox(params["fc1"]["kernel"], 0.05, 1.0)))
    np.testing.assert_array_equal(np.asarray(out["fc1"]["bias"]),
                                  np.asarray(params["fc1"]["bias"]))


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False),
                                               (0.9, True)])
def test_proxgen_sgd_matches_numpy(momentum, nesterov):
  params = make_params()
  grads = grads_like(params, 3)
  lr, reg = 0.1, 0.5
  out, _ = run(proxgen_sgd(lr, prox_l1, reg, momentum=momentum,
                           nesterov=nesterov), params, grads)
  p = flat(params)
  trace = {k: np.zeros_like(v) for k, v in p.items()}
  for g in map(flat, grads):
    for k in p:
      trace[k] = g[k] + momentum * trace[k]
      direction = g[k] + momentum * trace[k] if nesterov else trace[k]
      z = p[k] - lr * direction
      p[k] = np_soft(z, lr * reg) if k.endswith("kernel") else z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_inject_hyperparams_and_schedules():
  params = make_params()
  grads = grads_like(params, 3)
  factory = optax.inject_hyperparams(proxgen_adam, static_args=("prox", "mask"))
  tx = factory(learning_rate=0.02, prox=prox_l1, reg=0.1)
  out_inj, state = run(tx, params, grads)
  out_ref, _ = run(proxgen_adam(0.02, prox_l1, 0.1), params, grads)
  for a, b in zip(jax.tree.leaves(out_inj), jax.tree.leaves(out_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
  # changing the injected learning rate to 0 freezes the params exactly
  state.hyperparams["learning_rate"] = jnp.zeros([])
  upd, _ = jax.jit(tx.update)(grads[0], state, out_inj)
  assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(upd))
  # a schedule for reg: reg = 0 at step 0 leaves the kernels dense
  tx = proxgen_adam(0.02, prox_l1, optax.linear_schedule(0.0, 1e6, 1))
  out, _ = run(tx, params, grads[:1])
  assert np.all(np.asarray(out["fc1"]["kernel"]) != 0)
  out, _ = run(tx, params, grads[:2])
  assert np.all(np.asarray(out["fc1"]["kernel"]) == 0)


def test_zero_grads_at_step_zero_are_finite():
  """v_hat = 0 gives scaling = lr / eps (huge): everything stays finite."""
  params = make_params()
  zero = [jax.tree.map(jnp.zeros_like, params)] * 2
  spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
  for tx in (proxgen_adam(1e-3, prox_l1, 1e-4),
             proxgen_adam(1e-3, prox_l_half, 1e-4),
             proxgen_adam(1e-3, group_prox_from_units(spec), 1e-4),
             adaptive_pathprox(1e-3, 1e-4, spec),
             prox_sgd_two_stage(1e-3, prox_l1, 1e-4),
             proxquant(1e-3, 1e-4)):
    out, state = run(tx, params, zero)
    for leaf in jax.tree.leaves((out, state)):
      assert bool(jnp.all(jnp.isfinite(leaf)))
  # and a zero learning rate (warm-up start) is the identity
  for tx in (proxgen_adam(0.0, group_prox_from_units(spec), 1e-4),
             adaptive_pathprox(0.0, 1e-4, spec, balance=False)):
    out, _ = run(tx, params, zero)
    np.testing.assert_array_equal(np.asarray(out["fc2"]["kernel"]),
                                  np.asarray(params["fc2"]["kernel"]))


# ---------------------------------------------------------------------------
# Group prox over units
# ---------------------------------------------------------------------------


def test_group_prox_from_units_matches_numpy():
  params = make_params(4)
  grads = grads_like(params, 2, seed=5)
  spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
  lr, reg = 0.05, 4.0
  out, _ = run(proxgen_adam(lr, group_prox_from_units(spec), reg), params,
               grads)
  # the same as an explicit partial + mask
  out2, _ = run(proxgen_adam(lr, functools.partial(prox_group_lasso, axis=-2),
                             reg, mask=spec.mask("output_kernel")),
                params, grads)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  p = flat(params)
  adam = NpAdam(p, 0.9, 0.999, True)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      z = p[k] - lr * m_hat[k] / d
      if k == "fc2/kernel":  # rows are units
        z = np.stack([np_group_metric(z[i], reg, lr / d[i])
                      for i in range(z.shape[0])])
      p[k] = z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)
  rows_zero = np.all(got["fc2/kernel"] == 0, axis=1)
  assert 0 < rows_zero.sum() < 5


# ---------------------------------------------------------------------------
# adaptive_pathprox against NumPy
# ---------------------------------------------------------------------------


def two_group_params(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s) * 0.5, jnp.float32)
  return {"a": {"kernel": f(3, 4), "bias": f(4)},
          "b": {"kernel": f(4, 5) * 3.0, "bias": f(5)},
          "c": {"kernel": f(5, 3), "bias": f(3)},
          "d": {"kernel": f(3, 2), "bias": f(2)},
          "head": {"kernel": f(2, 2), "bias": f(2)}}


@pytest.mark.parametrize("balance,rescale", [(False, False), (True, True),
                                             (True, False)])
def test_adaptive_pathprox_matches_numpy(balance, rescale):
  params = two_group_params()
  params["b"]["kernel"] = params["b"]["kernel"].at[0].multiply(0.01)
  spec = ppx.UnitSpec.from_pairs(params, [("a", "b"), ("c", "d")])
  grads = grads_like(params, 2, seed=7)
  lr, lam, eps = 0.05, 3.0, 1e-8
  tx = adaptive_pathprox(lr, lam, spec, balance=balance,
                         rescale_moments=rescale)
  out, state = run(tx, params, grads)

  p = flat(params)
  adam = NpAdam(p, 0.9, 0.999, True)
  groups = [("a", "b"), ("c", "d")]
  for g in map(flat, grads):
    g["head/kernel"] = g["head/kernel"] + lam * p["head/kernel"]  # coupled
    m_hat, v_hat = adam.step(g)
    z = {k: p[k] - lr * m_hat[k] / (np.sqrt(v_hat[k]) + eps) for k in p}
    if balance:
      pn = [np.sum(np.linalg.norm(z[f"{a}/kernel"], axis=0)
                   * np.linalg.norm(z[f"{b}/kernel"], axis=1))
            for a, b in groups]
      c0 = np.sqrt(pn[0] * pn[1]) / pn[0]  # geometric mean / P_0
      factors = {"b/kernel": c0, "b/bias": c0, "c/bias": c0,
                 "d/kernel": 1.0 / c0}
      for k, f in factors.items():
        z[k] = z[k] * f
        if rescale:
          adam.mu[k] /= f
          adam.nu[k] /= f * f
          v_hat[k] = v_hat[k] / (f * f)
    for a, b in groups:
      w = z[f"{a}/kernel"]
      n = np.linalg.norm(w, axis=0)
      z[f"{a}/kernel"], z[f"{a}/bias"] = w / n, z[f"{a}/bias"] / n
      s = lr / (np.sqrt(v_hat[f"{b}/kernel"]) + eps)
      v = z[f"{b}/kernel"]
      z[f"{b}/kernel"] = np.stack([np_group_metric(v[i], lam, s[i])
                                   for i in range(v.shape[0])])
    p = z
  got = flat(out)
  for k in p:  # float32 vs float64 through two group proxes near threshold
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-5, err_msg=k)
  mu, nu = flat(state.mu), flat(state.nu)
  for k in p:
    np.testing.assert_allclose(mu[k], adam.mu[k], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(nu[k], adam.nu[k], rtol=1e-4, atol=1e-9)
  assert np.any(np.all(got["b/kernel"] == 0, axis=1))  # some units pruned


def test_adaptive_pathprox_balancing_preserves_function_of_z():
  """Balancing inside the step changes no network output (only the prox does)."""
  params = two_group_params(1)
  spec = ppx.UnitSpec.from_pairs(params, [("a", "b"), ("c", "d")])
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
  outs = [run(adaptive_pathprox(0.05, 0.0, spec, balance=bal), params,
              grads)[0] for bal in (False, True)]
  np.testing.assert_allclose(np.asarray(net(outs[0])),
                             np.asarray(net(outs[1])), rtol=1e-4, atol=1e-5)
  assert not np.allclose(np.asarray(outs[0]["b"]["kernel"]),
                         np.asarray(outs[1]["b"]["kernel"]))


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------


def test_prox_sgd_two_stage_matches_numpy():
  params = make_params()
  grads = grads_like(params, 3)
  lr, reg = 0.3, 0.4
  out, _ = run(prox_sgd_two_stage(lr, prox_l1, reg), params, grads)
  p = flat(params)
  adam = NpAdam(p, 0.9, 0.999, True)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      hat = p[k] - m_hat[k] / d
      if k.endswith("kernel"):
        hat = np_soft(hat, reg / d)
      p[k] = p[k] + lr * (hat - p[k])
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("q", [1.0, 0.5, 2.0 / 3.0])
def test_subgradient_adam_matches_numpy(q):
  params = make_params()
  params["fc1"]["kernel"] = params["fc1"]["kernel"].at[0, 0].set(0.0)
  grads = grads_like(params, 2)
  lr, reg, guard = 0.01, 0.1, 1e-3
  out, _ = run(subgradient_adam(lr, reg, q, guard=guard), params, grads)
  p = flat(params)
  adam = NpAdam(p, 0.9, 0.999, True)
  for g in map(flat, grads):
    for k in p:
      if k.endswith("kernel"):
        a = np.maximum(np.abs(p[k]), guard)
        sub = np.sign(p[k]) * (1.0 if q == 1.0 else q * a ** (q - 1))
        g[k] = g[k] + reg * sub
    m_hat, v_hat = adam.step(g)
    for k in p:
      p[k] = p[k] - lr * m_hat[k] / (np.sqrt(v_hat[k]) + 1e-8)
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_proxquant_uses_uniform_threshold():
  params = {"kernel": jnp.asarray([0.2, 0.9, -1.3, 0.05], jnp.float32)}
  grads = [{"kernel": jnp.asarray([1.0, 0.01, -2.0, 1e-3], jnp.float32)}]
  lr, reg = 0.1, 2.0
  out, _ = run(proxquant(lr, reg), params, grads)
  z = np.asarray(params["kernel"], np.float64) - lr * np.sign(
      np.asarray(grads[0]["kernel"]))  # first Adam step: m_hat / d ~ sign(g)
  sgn = np.where(z >= 0, 1.0, -1.0)
  ref = sgn + np_soft(z - sgn, lr * reg)
  np.testing.assert_allclose(np.asarray(out["kernel"]), ref, rtol=1e-5)


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
  for name, tx in (("prox", proxgen_adam(0.02, prox_l1, 0.05)),
                   ("sub", subgradient_adam(0.02, 0.05, 1.0))):
    state = tx.init(params)

    def body(carry, _, tx=tx):
      p, s = carry
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=600))(
        (params, state))
    results[name] = np.asarray(p["kernel"]).ravel()
  assert np.sum(results["prox"][4:] == 0) == 16
  assert np.all(results["prox"][:4] != 0)
  assert np.sum(results["sub"] == 0) == 0
  # both reach the same support up to the oscillation of the subgradient
  assert np.max(np.abs(results["sub"][4:])) < 0.05


# ---------------------------------------------------------------------------
# Errors and integration
# ---------------------------------------------------------------------------


def test_errors_are_early_and_clear():
  params = make_params()
  g = jax.tree.map(jnp.zeros_like, params)
  for bad in (dict(learning_rate=-1.0), dict(learning_rate=float("nan")),
              dict(reg=-0.1), dict(b1=1.0), dict(b2=-0.5), dict(eps=0.0)):
    kw = dict(learning_rate=0.1, prox=prox_l1, reg=0.1) | bad
    with pytest.raises(ValueError):
      proxgen_adam(**kw)
  with pytest.raises(ValueError, match="momentum"):
    proxgen_sgd(0.1, prox_l1, 0.1, momentum=1.5)
  with pytest.raises(TypeError, match="prox"):
    proxgen_adam(0.1, "l1", 0.1)
  with pytest.raises(ValueError, match="weight_decay"):
    adaptive_pathprox(0.1, -1.0, ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")]))
  tx = proxgen_adam(0.1, prox_l1, 0.1)
  state = tx.init(params)
  with pytest.raises(ValueError, match="params"):
    tx.update(g, state)
  bad = dict(params, step={"kernel": jnp.zeros((2, 2), jnp.int32)})
  with pytest.raises(ValueError, match="step/kernel"):
    tx.init(bad)
  # a prox that cannot take an array scaling is caught at init with the path
  scalar_only = lambda x, reg, s: x * (1 - reg * float(s))
  with pytest.raises(ValueError, match="fc1/kernel"):
    proxgen_adam(0.1, scalar_only, 0.1).init(params)
  with pytest.raises(ValueError, match="does not cover"):
    proxgen_adam(0.1, prox_l1, 0.1, mask={"fc1": True}).init(params)
  with pytest.raises(ValueError, match="q"):
    lq_subgradient(0.1, q=0.0)


def test_nnx_optimizer_and_unit_group_prox():
  model = ppx.MLP(3, 16, in_features=8, num_classes=3, rngs=nnx.Rngs(0))
  spec = model.unit_spec()
  tx = proxgen_adam(1e-2, group_prox_from_units(spec), 0.5)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 8)), jnp.float32)
  y = jnp.arange(32) % 3

  @nnx.jit
  def step(model, opt):
    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    _, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)

  for _ in range(5):
    step(model, opt)
  v = np.asarray(model.layers[1].kernel[...])
  assert np.isfinite(v).all()
  assert np.any(np.all(v == 0, axis=1))  # whole units removed
  assert np.all(np.asarray(model.layers[2].kernel[...]) != 0)  # head untouched
