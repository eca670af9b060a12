"""PathProx optax transforms: one step vs NumPy, composition, schedules, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pathprox_jax import (UnitSpec, active_units, layerwise_balance, path_norms,
                          path_prox, path_prox_params, pathprox)
from tests import reference

DENSE_SIZES = {"l0": (6, 8), "l1": (8, 7), "l2": (7, 9), "l3": (9, 5), "head": (5, 3)}
DENSE_PAIRS = [("l0", "l1"), ("l2", "l3")]
CONV_SIZES = {"c0": (3, 3, 2, 6), "c1": (3, 3, 6, 5), "c2": (3, 3, 5, 4),
              "c3": (3, 3, 4, 7), "head": (7, 3)}
CONV_PAIRS = [("c0", "c1"), ("c2", "c3")]


def make(sizes, seed, prune_rows=()):
  r = np.random.default_rng(seed)
  p = {k: {"kernel": (r.uniform(0.3, 2) * r.normal(size=s)).astype(np.float32),
           "bias": r.normal(size=s[-1]).astype(np.float32)}
       for k, s in sizes.items()}
  for layer, i in prune_rows:  # tiny output weights: pruned by the prox
    p[layer]["kernel"][..., i, :] *= 1e-6
  g = {k: {n: (0.1 * r.normal(size=a.shape)).astype(np.float32)
           for n, a in d.items()} for k, d in p.items()}
  for layer, i in prune_rows:
    g[layer]["kernel"][..., i, :] = 0.0
  return p, g


def to_jnp(t):
  return jax.tree.map(jnp.asarray, t)


def one_step(tx, params, grads):
  @jax.jit
  def step(params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return optax.apply_updates(params, updates)
  return step(to_jnp(params), to_jnp(grads))


def assert_tree_close(got, exp, rtol=2e-5, atol=2e-6):
  for layer in exp:
    for n in exp[layer]:
      np.testing.assert_allclose(got[layer][n], exp[layer][n], rtol=rtol,
                                 atol=atol, err_msg=f"{layer}/{n}")


@pytest.mark.parametrize("sizes, pairs, prune", [
    (DENSE_SIZES, DENSE_PAIRS, [("l1", 2), ("l3", 0), ("l3", 4)]),
    (CONV_SIZES, CONV_PAIRS, [("c1", 1), ("c3", 3)]),
])
@pytest.mark.parametrize("balance", [True, False])
def test_one_step_matches_numpy(sizes, pairs, prune, balance):
  params, grads = make(sizes, 0, prune)
  spec = UnitSpec.from_pairs(params, pairs)
  lr, lam = 0.1, 1e-2
  got = one_step(pathprox(lr, lam, spec, balance=balance), params, grads)
  exp = reference.pathprox_step(params, grads, pairs, lr, lam, balance=balance)
  assert_tree_close(got, exp)
  counts = active_units(got, spec).counts
  assert list(counts) == [s[-1] - sum(1 for l, _ in prune if l == pairs[g][1])
                          for g, s in enumerate(sizes[a] for a, _ in pairs)]


def test_separate_balance_transform_equals_fused():
  params, grads = make(DENSE_SIZES, 1, [("l1", 3)])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.2, 5e-3
  fused = one_step(pathprox(lr, lam, spec), params, grads)
  chained = one_step(optax.chain(
      optax.masked(optax.add_decayed_weights(lam), spec.mask("ungrouped_kernel")),
      optax.sgd(lr), layerwise_balance(spec), path_prox(lam, lr, spec)),
      params, grads)
  assert_tree_close(chained, jax.tree.map(np.asarray, fused), rtol=1e-5, atol=1e-6)


def test_layerwise_balance_alone_equalises_path_norms():
  params, grads = make(DENSE_SIZES, 2)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  out = one_step(optax.chain(optax.sgd(0.1), layerwise_balance(spec)), params, grads)
  pn = np.asarray(path_norms(out, spec))
  np.testing.assert_allclose(pn, pn[0], rtol=1e-5)


def test_lambda_zero_projects_without_shrinking():
  params, grads = make(DENSE_SIZES, 3)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  got = one_step(pathprox(0.1, 0.0, spec, balance=False), params, grads)
  for a, b in DENSE_PAIRS:
    np.testing.assert_allclose(np.linalg.norm(got[a]["kernel"], axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got[b]["kernel"],
                               params[b]["kernel"] - 0.1 * grads[b]["kernel"], rtol=1e-5)
  np.testing.assert_allclose(got["head"]["kernel"],
                             params["head"]["kernel"] - 0.1 * grads["head"]["kernel"],
                             rtol=1e-5)


def run_steps(tx, params, grads_seq):
  state = tx.init(params)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  for g in grads_seq:
    u, state = step(params, state, g)
    params = optax.apply_updates(params, u)
  return params, state


def test_schedule_evaluated_at_sgd_count():
  params, _ = make(DENSE_SIZES, 4)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  grads_seq = [make(DENSE_SIZES, 10 + t)[1] for t in range(3)]
  sched = lambda t: 0.05 * (t + 1)
  lam = 0.05
  got, _ = run_steps(pathprox(sched, lam, spec), to_jnp(params), map(to_jnp, grads_seq))
  exp = params
  for t, g in enumerate(grads_seq):
    exp = reference.pathprox_step(exp, g, DENSE_PAIRS, sched(t), lam)
  assert_tree_close(got, exp, rtol=1e-4, atol=1e-5)


def test_inject_hyperparams_changes_lr_without_recompiling():
  params, grads = make(DENSE_SIZES, 5)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  tx = optax.inject_hyperparams(pathprox)(learning_rate=0.1, weight_decay=1e-2,
                                          units=spec)
  traces = []

  @jax.jit
  def step(p, s, g):
    traces.append(1)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  p, g = to_jnp(params), to_jnp(grads)
  state = tx.init(p)
  state.hyperparams["learning_rate"] = jnp.asarray(0.3, jnp.float32)
  state.hyperparams["weight_decay"] = jnp.asarray(2e-2, jnp.float32)
  out, state = step(p, state, g)
  exp = reference.pathprox_step(params, grads, DENSE_PAIRS, 0.3, 2e-2)
  assert_tree_close(out, exp)
  state.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float32)
  step(p, state, g)
  assert len(traces) == 1


def test_after_clip_and_with_multisteps():
  params, grads = make(DENSE_SIZES, 6)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  big = jax.tree.map(lambda x: 100 * x, grads)
  got = one_step(optax.chain(optax.clip_by_global_norm(1.0), pathprox(0.1, 1e-2, spec)),
                 params, big)
  norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(big)))
  clipped = jax.tree.map(lambda x: x / norm, big)
  assert_tree_close(got, reference.pathprox_step(params, clipped, DENSE_PAIRS, 0.1, 1e-2))

  g2 = make(DENSE_SIZES, 7)[1]
  ms = optax.MultiSteps(pathprox(0.1, 1e-2, spec), every_k_schedule=2)
  got, _ = run_steps(ms, to_jnp(params), [to_jnp(grads), to_jnp(g2)])
  mean = jax.tree.map(lambda a, b: (a + b) / 2, grads, g2)
  assert_tree_close(got, reference.pathprox_step(params, mean, DENSE_PAIRS, 0.1, 1e-2))


def test_update_without_params_and_bad_arguments():
  params, grads = make(DENSE_SIZES, 8)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  tx = pathprox(0.1, 1e-3, spec)
  state = tx.init(to_jnp(params))
  with pytest.raises(ValueError, match="not passing `params`"):
    tx.update(to_jnp(grads), state)
  with pytest.raises(ValueError, match="weight_decay must be a non-negative"):
    pathprox(0.1, -1.0, spec)
  with pytest.raises(ValueError, match="learning_rate must be a non-negative"):
    path_prox(1e-3, float("nan"), spec)
  with pytest.raises(TypeError, match="must be a pathprox_jax.UnitSpec"):
    path_prox(1e-3, 0.1, [("l0", "l1")])
  with pytest.raises(ValueError, match="must return a scalar"):
    path_prox(1e-3, lambda t: jnp.ones(3) * t, spec).init(to_jnp(params))
  other = dict(params, l1={"kernel": np.ones((8, 4), np.float32), "bias": np.ones(4)})
  with pytest.raises(ValueError, match=r"'l1/kernel' has shape \(8, 4\)"):
    tx.init(to_jnp(other))


def test_dead_units_stay_finite_and_revive():
  params, grads = make(DENSE_SIZES, 9)
  params["l1"]["kernel"][3] = 0.0            # unit 3 of group 0 is dead
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.1, 1e-2
  zero = jax.tree.map(np.zeros_like, grads)
  out = one_step(pathprox(lr, lam, spec), params, zero)
  assert np.all(np.asarray(out["l1"]["kernel"][3]) == 0)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
  # A gradient on v_3 with ||lr * g|| > lr * lam brings the unit back ...
  g = jax.tree.map(np.zeros_like, grads)
  g["l1"]["kernel"][3] = -2 * lam
  revived = one_step(pathprox(lr, lam, spec, balance=False), params, g)
  assert np.linalg.norm(revived["l1"]["kernel"][3]) > 0
  # ... and one with ||lr * g|| <= lr * lam does not.
  g["l1"]["kernel"][3] = -0.5 * lam / np.sqrt(7)
  still = one_step(pathprox(lr, lam, spec, balance=False), params, g)
  assert np.all(np.asarray(still["l1"]["kernel"][3]) == 0)


def test_all_dead_group_keeps_network_finite():
  params, grads = make(DENSE_SIZES, 11)
  params["l1"]["kernel"][:] = 0.0
  grads["l1"]["kernel"][:] = 0.0
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  out, _ = run_steps(pathprox(0.1, 1e-2, spec), to_jnp(params), [to_jnp(grads)] * 5)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
  pn = np.asarray(path_norms(out, spec))
  assert pn[0] == 0 and pn[1] > 0


def test_path_prox_params_equals_transform():
  params, grads = make(DENSE_SIZES, 12, [("l1", 1)])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.1, 1e-2
  exp = one_step(pathprox(lr, lam, spec), params, grads)
  tx = optax.chain(optax.add_decayed_weights(lam, mask=spec.mask("ungrouped_kernel")),
                   optax.sgd(lr))

  @jax.jit
  def step(p, g):
    u, _ = tx.update(g, tx.init(p), p)
    return path_prox_params(optax.apply_updates(p, u), spec, lam, lr)

  got = step(to_jnp(params), to_jnp(grads))
  assert_tree_close(got, jax.tree.map(np.asarray, exp), rtol=1e-5, atol=1e-6)
