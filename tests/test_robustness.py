"""Hostile inputs fail early and clearly; the NaN guard; run-to-run determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from pathprox_jax.guards import SkipNonFiniteState, skip_nonfinite


def _params(units=4, fan_in=3, out=2, dtype=jnp.float32, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"l0": {"kernel": jax.random.normal(k1, (fan_in, units), dtype),
                 "bias": jax.random.normal(k2, (units,), dtype)},
          "l1": {"kernel": jax.random.normal(k3, (units, out), dtype),
                 "bias": jnp.zeros((out,), dtype)}}


SPEC = ppx.UnitSpec.from_pairs(_params(), [("l0", "l1")])


def _transforms(spec=SPEC):
  """Every public transform that takes a UnitSpec, ready to init/update."""
  return {
      "pathprox": ppx.pathprox(0.1, 1e-3, spec),
      "path_prox": optax.chain(optax.sgd(0.1), ppx.path_prox(1e-3, 0.1, spec)),
      "layerwise_balance": optax.chain(optax.sgd(0.1),
                                       ppx.layerwise_balance(spec)),
  }


TX_NAMES = list(_transforms())


def _grads(params):
  return jax.tree.map(jnp.ones_like, params)


# --------------------------------------------------------------------------- #
# Unit specs that do not match the params


@pytest.mark.parametrize("name", TX_NAMES)
def test_init_rejects_params_of_another_shape(name):
  with pytest.raises(ValueError, match=r"'l0/kernel' has shape \(3, 5\).*"
                     r"built for shape \(3, 4\)"):
    _transforms()[name].init(_params(units=5))


@pytest.mark.parametrize("name", TX_NAMES)
def test_init_rejects_params_missing_a_layer(name):
  params = _params()
  params = {"l0": params["l0"], "head": params["l1"]}
  with pytest.raises(ValueError, match="'l1/kernel' is missing"):
    _transforms()[name].init(params)


@pytest.mark.parametrize("name", TX_NAMES)
def test_init_rejects_params_missing_a_bias(name):
  params = _params()
  del params["l0"]["bias"]
  with pytest.raises(ValueError, match="'l0/bias' is missing"):
    _transforms()[name].init(params)


@pytest.mark.parametrize("name", TX_NAMES)
def test_update_rejects_params_missing_a_layer(name):
  tx = _transforms()[name]
  state = tx.init(_params())
  params = _params()
  params = {"l0": params["l0"], "head": params["l1"]}
  with pytest.raises(ValueError, match="'l1/kernel' is missing"):
    jax.jit(tx.update)(_grads(params), state, params)


@pytest.mark.parametrize("name", TX_NAMES)
def test_update_rejects_params_of_another_shape_at_trace_time(name):
  tx = _transforms()[name]
  state = tx.init(_params())
  other = _params(units=5)
  with pytest.raises(ValueError, match=r"'l0/kernel' has shape \(3, 5\)"):
    jax.jit(tx.update)(_grads(other), state, other)


@pytest.mark.parametrize("name", TX_NAMES)
def test_update_rejects_grads_shaped_unlike_params(name):
  tx = _transforms()[name]
  params = _params()
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"'l0/(bias|kernel)' has shape \((3, )?5,?\)"):
    jax.jit(tx.update)(_grads(_params(units=5)), state, params)


@pytest.mark.parametrize("name", [
    "pathprox",  # optax.add_decayed_weights, first in the chain, raises
    "path_prox",
    "layerwise_balance",
])
def test_update_without_params_is_rejected(name):
  tx = _transforms()[name]
  params = _params()
  state = tx.init(params)
  with pytest.raises(ValueError, match="params"):
    tx.update(_grads(params), state)


def test_units_must_be_a_unit_spec():
  with pytest.raises(TypeError, match="UnitSpec"):
    ppx.pathprox(0.1, 1e-3, [("l0", "l1")])
  with pytest.raises(TypeError, match="UnitSpec"):
    ppx.path_prox(1e-3, 0.1, None)
  with pytest.raises(TypeError, match="UnitSpec"):
    ppx.layerwise_balance({"l0": "l1"})


@pytest.mark.parametrize("name", TX_NAMES + ["pathprox_momentum"])
def test_optax_tree_map_params_works(name):
  tx = (ppx.pathprox(0.1, 1e-3, SPEC, momentum=0.9)
        if name == "pathprox_momentum" else _transforms()[name])
  params = _params()
  state = tx.init(params)
  tags = jax.tree.map(lambda _: "param-like", params)
  out = optax.tree_map_params(tx, lambda _, tag: tag, state, tags,
                              transform_non_params=lambda _: "other")
  assert jax.tree.structure(out) == jax.tree.structure(state)


# --------------------------------------------------------------------------- #
# Hyper-parameters


BAD_SCALARS = {"negative": -0.1, "nan": float("nan"),
               "vector": jnp.array([0.1, 0.2])}
CONSTRUCTORS = {
    "pathprox.learning_rate": lambda v: ppx.pathprox(v, 1e-3, SPEC),
    "pathprox.weight_decay": lambda v: ppx.pathprox(0.1, v, SPEC),
    "pathprox.momentum": lambda v: ppx.pathprox(0.1, 1e-3, SPEC, momentum=v),
    "path_prox.learning_rate": lambda v: ppx.path_prox(1e-3, v, SPEC),
    "path_prox.weight_decay": lambda v: ppx.path_prox(v, 0.1, SPEC),
}


@pytest.mark.parametrize("bad", list(BAD_SCALARS))
@pytest.mark.parametrize("where", list(CONSTRUCTORS))
def test_bad_hyperparameters_fail_at_construction(where, bad):
  arg = where.split(".")[1]
  with pytest.raises(ValueError, match=rf"{arg} must be"):
    CONSTRUCTORS[where](BAD_SCALARS[bad])


@pytest.mark.parametrize("where", list(CONSTRUCTORS))
def test_infinite_hyperparameters_fail_at_construction(where):
  with pytest.raises(ValueError, match="finite"):
    CONSTRUCTORS[where](float("inf"))


def test_weight_decay_schedule_is_rejected():
  with pytest.raises(ValueError, match="weight_decay must be a number"):
    ppx.path_prox(lambda count: 1e-3, 0.1, SPEC)


@pytest.mark.parametrize("make", [
    lambda s: ppx.pathprox(s, 1e-3, SPEC),
    lambda s: optax.chain(optax.sgd(0.1), ppx.path_prox(1e-3, s, SPEC)),
])
def test_schedule_returning_non_scalar_fails_at_init(make):
  tx = make(lambda count: jnp.full((3,), 0.1))
  with pytest.raises(ValueError, match=r"must return a scalar.*\(3,\)"):
    tx.init(_params())


def test_valid_edge_values_are_accepted():
  # lambda = 0, lr = 0 and traced hyper-parameters are legitimate.
  for tx in (ppx.pathprox(0.0, 0.0, SPEC), ppx.path_prox(0.0, 0.0, SPEC),
             optax.inject_hyperparams(ppx.pathprox)(
                 learning_rate=0.1, weight_decay=1e-3, units=SPEC)):
    params = _params()
    updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


# --------------------------------------------------------------------------- #
# Dtypes


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_,
                                   jnp.complex64])
def test_spec_rejects_non_real_float_kernels(dtype):
  params = jax.tree.map(lambda x: x.astype(dtype), _params())
  with pytest.raises(ValueError, match=r"'l0/kernel' has dtype .*real "
                     "floating-point"):
    ppx.UnitSpec.from_pairs(params, [("l0", "l1")])


def test_spec_rejects_integer_bias():
  params = _params()
  params["l0"]["bias"] = params["l0"]["bias"].astype(jnp.int32)
  with pytest.raises(ValueError, match="'l0/bias' is not floating point"):
    ppx.UnitSpec.from_pairs(params, [("l0", "l1")])


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.int32])
@pytest.mark.parametrize("name", TX_NAMES)
def test_init_rejects_non_real_float_params(name, dtype):
  params = jax.tree.map(lambda x: x.astype(dtype), _params())
  with pytest.raises(ValueError, match="l0/kernel"):
    _transforms()[name].init(params)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_keep_their_dtype(dtype):
  params = _params(dtype=dtype)
  spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1")])
  tx = ppx.pathprox(0.1, 1e-3, spec)
  updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves(new):
    assert leaf.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(leaf)))


# --------------------------------------------------------------------------- #
# NaN guard


def _mlp_problem():
  params = _params(units=6, fan_in=5, out=3)
  spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1")])

  def loss_fn(p, x, y):
    h = jax.nn.relu(x @ p["l0"]["kernel"] + p["l0"]["bias"])
    logits = h @ p["l1"]["kernel"] + p["l1"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  x = jax.random.normal(jax.random.key(3), (3, 8, 5))
  y = jax.random.randint(jax.random.key(4), (3, 8), 0, 3)
  x_nan = x.at[1, 0, 0].set(jnp.nan)  # one NaN pixel in the middle batch
  return params, spec, loss_fn, x, x_nan, y


def _run(tx, params, loss_fn, xs, ys, batches):
  @jax.jit
  def step(p, s, x, y):
    g = jax.grad(loss_fn)(p, x, y)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  state = tx.init(params)
  for b in batches:
    params, state = step(params, state, xs[b], ys[b])
  return params, state


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def test_nan_batch_corrupts_params_without_guard():
  params, spec, loss_fn, _, x_nan, y = _mlp_problem()
  tx = ppx.pathprox(0.1, 1e-3, spec)
  out, _ = _run(tx, params, loss_fn, x_nan, y, [0, 1, 2])
  assert not _finite(out)


def test_nan_batch_is_skipped_with_guard():
  params, spec, loss_fn, x, x_nan, y = _mlp_problem()
  sched = optax.linear_schedule(0.2, 0.02, 10)  # skipped steps must not count
  tx = skip_nonfinite(ppx.pathprox(sched, 1e-3, spec, momentum=0.9))
  guarded, state = _run(tx, params, loss_fn, x_nan, y, [0, 1, 2])
  assert _finite(guarded) and _finite(state)
  assert isinstance(state, SkipNonFiniteState)
  assert int(state.total_notfinite) == 1 and int(state.notfinite_count) == 0
  assert bool(state.last_finite)
  # Exactly as if the NaN batch had never been seen (bitwise).
  clean, clean_state = _run(tx, params, loss_fn, x, y, [0, 2])
  for a, b in zip(jax.tree.leaves((guarded, state.inner_state)),
                  jax.tree.leaves((clean, clean_state.inner_state))):
    np.testing.assert_array_equal(a, b)


def test_guard_counts_consecutive_failures_and_leaves_params_alone():
  params, spec, loss_fn, _, x_nan, y = _mlp_problem()
  tx = skip_nonfinite(ppx.pathprox(0.1, 1e-3, spec))
  all_nan = jnp.full_like(x_nan, jnp.nan)
  out, state = _run(tx, params, loss_fn, all_nan, y, [0, 1, 2])
  assert int(state.notfinite_count) == 3 and int(state.total_notfinite) == 3
  assert not bool(state.last_finite)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_guard_catches_overflow_inside_the_optimizer():
  # Finite float16 gradients, but lr * grad overflows float16 to inf:
  # optax.apply_if_finite (which looks only at the gradients) would apply it.
  params = {"w": jnp.ones((4,), jnp.float16)}
  grads = {"w": jnp.full((4,), 10.0, jnp.float16)}
  tx = skip_nonfinite(optax.sgd(1e4))
  updates, state = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(optax.apply_updates(params, updates)["w"],
                                params["w"])
  assert int(state.total_notfinite) == 1
  raw, _ = optax.sgd(1e4).update(grads, optax.sgd(1e4).init(params), params)
  assert not bool(jnp.all(jnp.isfinite(raw["w"])))


# --------------------------------------------------------------------------- #
# Zero norms and determinism


def test_zero_params_stay_finite():
  params = jax.tree.map(jnp.zeros_like, _params())
  for name, tx in _transforms().items():
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params),
                                    tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert _finite(new), name
    for leaf in jax.tree.leaves(new):
      np.testing.assert_array_equal(leaf, 0.0)


def _short_run(seed):
  params = _params(units=16, fan_in=8, out=4, seed=seed)
  spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1")])
  tx = ppx.pathprox(0.3, 0.05, spec, momentum=0.5)

  def loss_fn(p, x, y):
    h = jax.nn.relu(x @ p["l0"]["kernel"] + p["l0"]["bias"])
    logits = h @ p["l1"]["kernel"] + p["l1"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  kx, ky = jax.random.split(jax.random.key(seed + 100))
  xs = jax.random.normal(kx, (10, 32, 8))
  ys = jax.random.randint(ky, (10, 32), 0, 4)

  def body(carry, batch):
    p, s = carry
    g = jax.grad(loss_fn)(p, *batch)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  (params, state), _ = jax.jit(
      lambda p, s: jax.lax.scan(body, (p, s), (xs, ys)))(params, tx.init(params))
  return params, state


def test_same_seed_same_result_run_to_run():
  first = _short_run(0)
  second = _short_run(0)  # a new closure: traced and compiled afresh
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)
  other = _short_run(1)
  assert not np.array_equal(first[0]["l0"]["kernel"], other[0]["l0"]["kernel"])
