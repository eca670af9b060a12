"""pathprox_jax.transforms.pathprox: pathprox, pathprox_update, pathprox_params,
pathprox_gradient, balance_layers_update, pathprox_groups, ungrouped_weight_decay.

One step against the NumPy Algorithm 4.1 of ``tests/reference.py`` (under
``jax.jit``), composition with optax (clipping, MultiSteps,
inject_hyperparams, schedules), the in-place form, dead units, dtypes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pathprox_jax as ppx
from pathprox_jax import UnitSpec
from tests import reference
from tests.tree_utils import (
    assert_tree_close,
    finite,
    one_step,
    run,
    to_jnp,
    to_np,
)

DENSE_SIZES = {
    "l0": (6, 8),
    "l1": (8, 7),
    "l2": (7, 9),
    "l3": (9, 5),
    "head": (5, 3),
}
DENSE_PAIRS = [("l0", "l1"), ("l2", "l3")]
CONV_SIZES = {
    "c0": (3, 3, 2, 6),
    "c1": (3, 3, 6, 5),
    "c2": (3, 3, 5, 4),
    "c3": (3, 3, 4, 7),
    "head": (7, 3),
}
CONV_PAIRS = [("c0", "c1"), ("c2", "c3")]


def make(sizes, seed, prune_rows=()):
  r = np.random.default_rng(seed)
  p = {
      k: {
          "kernel": (r.uniform(0.3, 2) * r.normal(size=s)).astype(np.float32),
          "bias": r.normal(size=s[-1]).astype(np.float32),
      }
      for k, s in sizes.items()
  }
  for layer, i in prune_rows:  # tiny output weights: pruned by the prox
    p[layer]["kernel"][..., i, :] *= 1e-6
  g = {
      k: {
          n: (0.1 * r.normal(size=a.shape)).astype(np.float32)
          for n, a in d.items()
      }
      for k, d in p.items()
  }
  for layer, i in prune_rows:
    g[layer]["kernel"][..., i, :] = 0.0
  return p, g


@pytest.mark.parametrize(
    "sizes, pairs, prune",
    [
        (DENSE_SIZES, DENSE_PAIRS, [("l1", 2), ("l3", 0), ("l3", 4)]),
        (CONV_SIZES, CONV_PAIRS, [("c1", 1), ("c3", 3)]),
    ],
    ids=["dense", "conv"],
)
@pytest.mark.parametrize("balance", [True, False])
def test_one_step_matches_numpy(sizes, pairs, prune, balance):
  params, grads = make(sizes, 0, prune)
  spec = UnitSpec.from_pairs(params, pairs)
  lr, lam = 0.1, 1e-2
  got = one_step(ppx.pathprox(lr, lam, spec, balance=balance), params, grads)
  exp = reference.pathprox_step(params, grads, pairs, lr, lam, balance=balance)
  assert_tree_close(got, exp)
  counts = ppx.active_units(got, spec).counts
  assert list(counts) == [
      s[-1] - sum(1 for l, _ in prune if l == pairs[g][1])
      for g, s in enumerate(sizes[a] for a, _ in pairs)
  ]


def test_pathprox_update_after_sgd_equals_pathprox():
  params, grads = make(DENSE_SIZES, 1, [("l1", 3)])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.2, 5e-3
  fused = one_step(ppx.pathprox(lr, lam, spec), params, grads)
  decay = optax.masked(
      optax.add_decayed_weights(lam), spec.mask("ungrouped_kernel")
  )
  chained = one_step(
      optax.chain(decay, optax.sgd(lr), ppx.pathprox_update(lr, lam, spec)),
      params,
      grads,
  )
  assert_tree_close(chained, to_np(fused), rtol=1e-6, atol=1e-7)
  # and with the balancing as its own transform in front of an unbalanced prox
  split = one_step(
      optax.chain(
          decay,
          optax.sgd(lr),
          ppx.balance_layers_update(spec),
          ppx.pathprox_update(lr, lam, spec, balance=False),
      ),
      params,
      grads,
  )
  assert_tree_close(split, to_np(fused), rtol=1e-5, atol=1e-6)
  exp = reference.pathprox_step(params, grads, DENSE_PAIRS, lr, lam)
  assert_tree_close(fused, exp)


def test_balance_layers_update_alone_matches_the_walk():
  params, grads = make(DENSE_SIZES, 2)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  out = one_step(
      optax.chain(optax.sgd(0.1), ppx.balance_layers_update(spec)),
      params,
      grads,
  )
  z = reference.sgd_with_ungrouped_decay(params, grads, DENSE_PAIRS, 0.1, 0.0)
  assert_tree_close(out, reference.balance_walk(z, DENSE_PAIRS))
  pn = np.asarray(ppx.path_norms(out, spec))
  np.testing.assert_allclose(pn, pn[0], rtol=1e-5)


def test_lambda_zero_projects_without_shrinking():
  params, grads = make(DENSE_SIZES, 3)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  got = one_step(ppx.pathprox(0.1, 0.0, spec, balance=False), params, grads)
  for a, b in DENSE_PAIRS:
    np.testing.assert_allclose(
        np.linalg.norm(got[a]["kernel"], axis=0), 1.0, rtol=1e-5
    )
    np.testing.assert_allclose(
        got[b]["kernel"],
        params[b]["kernel"] - 0.1 * grads[b]["kernel"],
        rtol=1e-5,
    )
  np.testing.assert_allclose(
      got["head"]["kernel"],
      params["head"]["kernel"] - 0.1 * grads["head"]["kernel"],
      rtol=1e-5,
  )


def test_momentum_matches_numpy_heavy_ball():
  params, _ = make(DENSE_SIZES, 13)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  grads_seq = [make(DENSE_SIZES, 20 + t)[1] for t in range(3)]
  lr, lam, mom = 0.1, 1e-2, 0.9
  got, _ = run(
      ppx.pathprox(lr, lam, spec, momentum=mom),
      to_jnp(params),
      map(to_jnp, grads_seq),
  )
  exp, trace = params, None
  for g in grads_seq:  # optax.sgd's heavy ball on the decayed gradients
    g = reference.ungrouped_decay_grads(exp, g, DENSE_PAIRS, lam)
    trace = (
        g
        if trace is None
        else {k: {n: g[k][n] + mom * trace[k][n] for n in g[k]} for k in g}
    )
    z = {
        k: {
            n: np.asarray(exp[k][n], np.float64) - lr * trace[k][n]
            for n in exp[k]
        }
        for k in exp
    }
    exp = reference.prox_step(
        reference.balance_walk(z, DENSE_PAIRS), DENSE_PAIRS, lam * lr
    )
  assert_tree_close(got, exp, rtol=1e-4, atol=1e-5)


def test_schedule_evaluated_at_sgd_count():
  params, _ = make(DENSE_SIZES, 4)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  grads_seq = [make(DENSE_SIZES, 10 + t)[1] for t in range(3)]
  sched = lambda t: 0.05 * (t + 1)
  lam = 0.05
  got, state = run(
      ppx.pathprox(sched, lam, spec), to_jnp(params), map(to_jnp, grads_seq)
  )
  exp = params
  for t, g in enumerate(grads_seq):
    exp = reference.pathprox_step(exp, g, DENSE_PAIRS, sched(t), lam)
  assert_tree_close(got, exp, rtol=1e-4, atol=1e-5)
  prox_state = [
      s
      for s in jax.tree.leaves(
          state, is_leaf=lambda s: isinstance(s, ppx.PathProxState)
      )
      if isinstance(s, ppx.PathProxState)
  ]
  assert [int(s.count) for s in prox_state] == [3]


def test_inject_hyperparams_changes_lr_without_recompiling():
  params, grads = make(DENSE_SIZES, 5)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  tx = optax.inject_hyperparams(ppx.pathprox)(
      learning_rate=0.1, weight_decay=1e-2, units=spec
  )
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
  assert_tree_close(
      out, reference.pathprox_step(params, grads, DENSE_PAIRS, 0.3, 2e-2)
  )
  state.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float32)
  out2, _ = step(p, state, g)
  assert len(traces) == 1
  assert_tree_close(
      out2, reference.pathprox_step(params, grads, DENSE_PAIRS, 0.05, 2e-2)
  )


def test_after_clip_and_with_multisteps():
  params, grads = make(DENSE_SIZES, 6)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  big = jax.tree.map(lambda x: 100 * x, grads)
  got = one_step(
      optax.chain(
          optax.clip_by_global_norm(1.0), ppx.pathprox(0.1, 1e-2, spec)
      ),
      params,
      big,
  )
  norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(big)))
  clipped = jax.tree.map(lambda x: x / norm, big)
  assert_tree_close(
      got, reference.pathprox_step(params, clipped, DENSE_PAIRS, 0.1, 1e-2)
  )
  g2 = make(DENSE_SIZES, 7)[1]
  ms = optax.MultiSteps(ppx.pathprox(0.1, 1e-2, spec), every_k_schedule=2)
  got, _ = run(ms, to_jnp(params), [to_jnp(grads), to_jnp(g2)])
  mean = jax.tree.map(lambda a, b: (a + b) / 2, grads, g2)
  assert_tree_close(
      got, reference.pathprox_step(params, mean, DENSE_PAIRS, 0.1, 1e-2)
  )


def test_dead_units_stay_finite_and_revive():
  params, grads = make(DENSE_SIZES, 9)
  params["l1"]["kernel"][3] = 0.0  # unit 3 of group 0 is dead
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.1, 1e-2
  zero = jax.tree.map(np.zeros_like, grads)
  out = one_step(ppx.pathprox(lr, lam, spec), params, zero)
  assert np.all(np.asarray(out["l1"]["kernel"][3]) == 0)
  assert finite(out)
  # A gradient on v_3 with ||lr * g|| > lr * lam brings the unit back ...
  g = jax.tree.map(np.zeros_like, grads)
  g["l1"]["kernel"][3] = -2 * lam
  revived = one_step(ppx.pathprox(lr, lam, spec, balance=False), params, g)
  assert np.linalg.norm(revived["l1"]["kernel"][3]) > 0
  # ... and one with ||lr * g|| <= lr * lam does not.
  g["l1"]["kernel"][3] = -0.5 * lam / np.sqrt(7)
  still = one_step(ppx.pathprox(lr, lam, spec, balance=False), params, g)
  assert np.all(np.asarray(still["l1"]["kernel"][3]) == 0)


def test_all_dead_group_keeps_network_finite():
  params, grads = make(DENSE_SIZES, 11)
  params["l1"]["kernel"][:] = 0.0
  grads["l1"]["kernel"][:] = 0.0
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  out, _ = run(
      ppx.pathprox(0.1, 1e-2, spec), to_jnp(params), [to_jnp(grads)] * 5
  )
  assert finite(out)
  pn = np.asarray(ppx.path_norms(out, spec))
  assert pn[0] == 0 and pn[1] > 0


def test_zero_params_stay_zero_and_finite():
  params = jax.tree.map(np.zeros_like, make(DENSE_SIZES, 14)[0])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  zero = jax.tree.map(np.zeros_like, params)
  for tx in (
      ppx.pathprox(0.1, 1e-3, spec),
      optax.chain(optax.sgd(0.1), ppx.pathprox_update(0.1, 1e-3, spec)),
      optax.chain(optax.sgd(0.1), ppx.balance_layers_update(spec)),
  ):
    new = one_step(tx, params, zero)
    for leaf in jax.tree.leaves(new):
      np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_keep_their_dtype(dtype):
  params, grads = make(DENSE_SIZES, 15)
  params, grads = to_jnp(params, dtype), to_jnp(grads, dtype)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  new = one_step(ppx.pathprox(0.1, 1e-3, spec), params, grads)
  for leaf in jax.tree.leaves(new):
    assert leaf.dtype == dtype
  assert finite(new)
  exp = reference.pathprox_step(
      to_np(to_jnp(params, jnp.float32)),
      to_np(to_jnp(grads, jnp.float32)),
      DENSE_PAIRS,
      0.1,
      1e-3,
  )
  assert_tree_close(to_jnp(new, jnp.float32), exp, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("zero_step", [0, 2])
def test_float16_params_stay_finite_through_a_zero_gradient_step(zero_step):
  params = to_jnp(make(DENSE_SIZES, 21)[0], jnp.float16)
  grads = [to_jnp(make(DENSE_SIZES, 40 + t)[1], jnp.float16) for t in range(4)]
  grads[zero_step] = jax.tree.map(jnp.zeros_like, grads[zero_step])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  out, state = run(ppx.pathprox(0.1, 1e-2, spec), params, grads)
  assert finite((out, state))
  assert all(a.dtype == jnp.float16 for a in jax.tree.leaves(out))
  for a, _ in DENSE_PAIRS:
    n = np.linalg.norm(np.asarray(out[a]["kernel"], np.float64), axis=0)
    np.testing.assert_allclose(n, 1.0, rtol=2e-3)


def test_pathprox_params_equals_transform():
  params, grads = make(DENSE_SIZES, 12, [("l1", 1)])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  lr, lam = 0.1, 1e-2
  exp = one_step(ppx.pathprox(lr, lam, spec), params, grads)
  tx = ppx.pathprox_gradient(lr, lam, spec)

  @jax.jit
  def step(p, g):
    u, _ = tx.update(g, tx.init(p), p)
    return ppx.pathprox_params(optax.apply_updates(p, u), spec, lr, lam)

  got = step(to_jnp(params), to_jnp(grads))
  assert_tree_close(got, to_np(exp), rtol=1e-5, atol=1e-6)
  assert_tree_close(
      got, reference.pathprox_step(params, grads, DENSE_PAIRS, lr, lam)
  )


def test_in_place_form_with_a_schedule_and_momentum():
  params, _ = make(DENSE_SIZES, 16)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  sched = optax.linear_schedule(0.2, 0.05, 4)
  grads_seq = [to_jnp(make(DENSE_SIZES, 30 + t)[1]) for t in range(3)]
  fused, _ = run(
      ppx.pathprox(sched, 1e-2, spec, momentum=0.5), to_jnp(params), grads_seq
  )
  tx = ppx.pathprox_gradient(sched, 1e-2, spec, momentum=0.5)

  @jax.jit
  def step(p, s, g, t):
    u, s = tx.update(g, s, p)
    return (
        ppx.pathprox_params(
            optax.apply_updates(p, u), spec, sched, 1e-2, step=t
        ),
        s,
    )

  p, s = to_jnp(params), tx.init(to_jnp(params))
  for t, g in enumerate(grads_seq):
    p, s = step(p, s, g, t)
  assert_tree_close(p, to_np(fused), rtol=1e-5, atol=1e-6)


def test_pathprox_gradient_is_sgd_with_ungrouped_decay():
  params, grads = make(DENSE_SIZES, 17)
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  got = one_step(ppx.pathprox_gradient(0.1, 0.5, spec), params, grads)
  assert_tree_close(
      got,
      reference.sgd_with_ungrouped_decay(params, grads, DENSE_PAIRS, 0.1, 0.5),
      rtol=1e-6,
      atol=1e-7,
  )


def test_pathprox_groups_on_split_weights():
  params, grads = make(DENSE_SIZES, 18, [("l3", 2)])
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)

  def step(p):
    groups, rest = spec.split(p)
    return spec.merge(ppx.transforms.pathprox_groups(groups, 0.1, 1e-2), rest)

  out = jax.jit(step)(to_jnp(params))
  exp = reference.prox_step(
      reference.balance_walk(params, DENSE_PAIRS), DENSE_PAIRS, 1e-3
  )
  assert_tree_close(out, exp)


def test_include_bias_in_norm_and_min_norm_reach_the_prox():
  params, grads = make(DENSE_SIZES, 19)
  params["l0"]["kernel"][:, 0] *= 1e-4
  grads["l0"]["kernel"][:, 0] = 0.0
  spec = UnitSpec.from_pairs(params, DENSE_PAIRS)
  got = one_step(
      ppx.pathprox(
          0.1,
          1e-2,
          spec,
          balance=False,
          include_bias_in_norm=True,
          min_norm=1e-2,
      ),
      params,
      grads,
  )
  z = reference.sgd_with_ungrouped_decay(params, grads, DENSE_PAIRS, 0.1, 1e-2)
  w0 = z["l0"]["kernel"][:, 0]
  assert np.sqrt(np.sum(w0**2) + z["l0"]["bias"][0] ** 2) > 1e-2  # projected
  exp = reference.prox_step(
      z, DENSE_PAIRS, 1e-3, eps=1e-2, include_bias_in_norm=True
  )
  assert_tree_close(got, exp)
  w = np.asarray(got["l0"]["kernel"], np.float64)
  b = np.asarray(got["l0"]["bias"], np.float64)
  np.testing.assert_allclose(np.sum(w**2, axis=0) + b**2, 1.0, rtol=1e-5)


def test_balancing_does_not_pump_scale_into_a_group_the_prox_kills():
  # Task 1 at lambda 0.1: the last group dies; its output weights then get a
  # small gradient each step. Balancing used to hand that group a large scale
  # (its input biases grew by ~40x per step) right before the prox zeroed it
  # again: release 0.1 overflowed to inf at step 18. A group the prox will
  # zero entirely now counts as dead for that step's balancing.
  from pathprox_jax.data import load_mnist_subset

  model = ppx.FactorizedMLP(3, 400, rngs=nnx.Rngs(0))
  spec = model.unit_spec()
  graphdef, params = nnx.split(model, nnx.Param)
  apply = lambda p, xb: nnx.merge(graphdef, p)(xb)
  data = load_mnist_subset(100, seed=0)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  tx = ppx.pathprox(0.3, 0.1, spec)

  @jax.jit
  def step(p, s, xb, yb):
    g = jax.grad(
        lambda q: optax.softmax_cross_entropy_with_integer_labels(
            apply(q, xb), yb
        ).mean()
    )(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  rng = np.random.default_rng(0)
  s = tx.init(params)
  for _ in range(25):
    i = rng.permutation(len(x))[:200]
    params, s = step(params, s, x[i], y[i])
  largest = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(params))
  assert np.isfinite(largest) and largest < 10.0, largest


def test_ungrouped_weight_decay_matches_numpy():
  # An odd-depth chain: "c" is in no group and gets g + lambda K; grouped
  # kernels and every bias pass the gradient through unchanged.
  rng = np.random.default_rng(0)
  shapes = {"a": (3, 4), "b": (4, 2), "c": (2, 5)}
  params = {
      k: {
          "kernel": rng.normal(size=s).astype(np.float32),
          "bias": rng.normal(size=s[1]).astype(np.float32),
      }
      for k, s in shapes.items()
  }
  grads = jax.tree.map(
      lambda x: rng.normal(size=x.shape).astype(np.float32), params
  )
  units = UnitSpec.from_pairs(params, [("a", "b")])
  tx = ppx.ungrouped_weight_decay(0.3, units)
  out, _ = jax.jit(tx.update)(
      to_jnp(grads), tx.init(to_jnp(params)), to_jnp(params)
  )
  want = jax.tree.map(np.copy, grads)
  want["c"]["kernel"] = grads["c"]["kernel"] + 0.3 * params["c"]["kernel"]
  assert_tree_close(out, want)
