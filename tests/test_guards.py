"""pathprox_jax.guards: skip_nonfinite, the opt-in NaN/inf guard around any optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pathprox_jax as ppx
from tests.tree_utils import finite


def _params(units=6, fan_in=5, out=3, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {
      "l0": {
          "kernel": jax.random.normal(k1, (fan_in, units)),
          "bias": jax.random.normal(k2, (units,)),
      },
      "l1": {
          "kernel": jax.random.normal(k3, (units, out)),
          "bias": jnp.zeros((out,)),
      },
  }


def _problem():
  params = _params()
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


def test_nan_batch_corrupts_params_without_guard():
  params, spec, loss_fn, _, x_nan, y = _problem()
  out, _ = _run(
      ppx.pathprox(0.1, 1e-3, spec), params, loss_fn, x_nan, y, [0, 1, 2]
  )
  assert not finite(out)


def test_nan_batch_is_skipped_with_guard():
  params, spec, loss_fn, x, x_nan, y = _problem()
  sched = optax.linear_schedule(0.2, 0.02, 10)  # skipped steps must not count
  tx = ppx.skip_nonfinite(ppx.pathprox(sched, 1e-3, spec, momentum=0.9))
  guarded, state = _run(tx, params, loss_fn, x_nan, y, [0, 1, 2])
  assert finite(guarded) and finite(state)
  assert isinstance(state, ppx.SkipNonFiniteState)
  assert int(state.total_notfinite) == 1 and int(state.notfinite_count) == 0
  assert bool(state.last_finite)
  # Exactly as if the NaN batch had never been seen (bitwise).
  clean, clean_state = _run(tx, params, loss_fn, x, y, [0, 2])
  for a, b in zip(
      jax.tree.leaves((guarded, state.inner_state)),
      jax.tree.leaves((clean, clean_state.inner_state)),
  ):
    np.testing.assert_array_equal(a, b)


def test_guard_counts_consecutive_failures_and_leaves_params_alone():
  params, spec, loss_fn, _, x_nan, y = _problem()
  tx = ppx.skip_nonfinite(ppx.pathprox(0.1, 1e-3, spec))
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
  tx = ppx.skip_nonfinite(optax.sgd(1e4))
  updates, state = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(
      optax.apply_updates(params, updates)["w"], params["w"]
  )
  assert int(state.total_notfinite) == 1
  raw, _ = optax.sgd(1e4).update(grads, optax.sgd(1e4).init(params), params)
  assert not bool(jnp.all(jnp.isfinite(raw["w"])))


def test_guard_passes_good_steps_through_unchanged():
  params, spec, loss_fn, x, _, y = _problem()
  inner = ppx.adaptive_pathprox(1e-2, 1e-3, spec)
  guarded, gstate = _run(
      ppx.skip_nonfinite(inner), params, loss_fn, x, y, [0, 1]
  )
  plain, pstate = _run(inner, params, loss_fn, x, y, [0, 1])
  for a, b in zip(
      jax.tree.leaves((guarded, gstate.inner_state)),
      jax.tree.leaves((plain, pstate)),
  ):
    np.testing.assert_array_equal(a, b)
  assert int(gstate.total_notfinite) == 0 and bool(gstate.last_finite)


def test_guard_ignores_integer_leaves_and_forwards_extra_args():
  params = {"w": jnp.ones(2), "step": jnp.zeros((), jnp.int32)}
  inner = optax.masked(optax.sgd(0.1), {"w": True, "step": False})
  tx = ppx.skip_nonfinite(inner)
  grads = {"w": jnp.ones(2), "step": jnp.zeros((), jnp.int32)}
  updates, state = tx.update(grads, tx.init(params), params, unused_extra=1)
  np.testing.assert_allclose(updates["w"], -0.1)
  assert bool(state.last_finite)


def test_nan_schedule_under_jit_is_skipped_and_blocks_the_count():
  # A schedule that returns NaN at step count 2 (a 0/0 in user code).
  params, spec, loss_fn, x, _, y = _problem()
  sched = lambda c: jnp.where(c == 2, jnp.nan, 0.1)
  raw, _ = _run(
      ppx.pathprox(sched, 1e-3, spec), params, loss_fn, x, y, [0, 1, 2]
  )
  assert not finite(raw)  # unguarded: NaN weights
  tx = ppx.skip_nonfinite(ppx.pathprox(sched, 1e-3, spec))
  out, state = _run(tx, params, loss_fn, x, y, [0, 1, 2, 0, 1])
  assert finite(out) and finite(state)
  # Steps 1-2 applied; every later step sees count 2 again and is skipped.
  two, two_state = _run(tx, params, loss_fn, x, y, [0, 1])
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(two)):
    np.testing.assert_array_equal(a, b)
  assert int(state.notfinite_count) == 3 and int(state.total_notfinite) == 3
  assert int(two_state.notfinite_count) == 0
