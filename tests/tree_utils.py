"""Small JAX-side helpers shared by the test files (no library math here)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests import reference


def to_jnp(tree, dtype=None):
  return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


def to_np(tree):
  return jax.tree.map(np.asarray, tree)


def finite(tree):
  return all(
      bool(jnp.all(jnp.isfinite(x)))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  )


def run(tx, params, grads_seq):
  """Applies ``tx`` under ``jax.jit`` for every gradient in ``grads_seq``;
  returns the final params and state."""
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for g in grads_seq:
    params, state = step(params, state, g)
  return params, state


def one_step(tx, params, grads):
  """``init`` and one ``update`` in a single jitted call; returns the new params."""

  @jax.jit
  def step(params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)

  return step(to_jnp(params), to_jnp(grads))


def assert_tree_close(got, exp, rtol=2e-5, atol=2e-6):
  """Nested dicts of arrays: same keys, values close (named on failure)."""
  from tests.reference import flat  # noqa: PLC0415

  g, e = flat(to_np(got)), flat(exp)
  assert g.keys() == e.keys(), (sorted(g), sorted(e))
  for k in e:
    np.testing.assert_allclose(g[k], e[k], rtol=rtol, atol=atol, err_msg=k)


def assert_bitwise(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert len(la) == len(lb) > 0
  for u, v in zip(la, lb):
    assert u.dtype == v.dtype and u.shape == v.shape
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def flat(tree):
  return reference.flat(jax.tree.map(np.asarray, tree))


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s) * 0.3, jnp.float32)
  return {
      "fc1": {"kernel": f32(4, 5), "bias": f32(5)},
      "fc2": {"kernel": f32(5, 3), "bias": f32(3)},
  }


def grads_like(params, n, seed=1):
  rng = np.random.default_rng(seed)
  return [
      jax.tree.map(
          lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params
      )
      for _ in range(n)
  ]
