"""End to end: PathProx pruning where SGD + weight decay does not, the NNX
optimizer loop, and run-to-run determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx


def teacher_data(n=256, d=5, seed=0):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, d)).astype(np.float32)
  w = r.normal(size=(d, 3))
  y = np.maximum(x @ w, 0) @ r.normal(size=(3, 2))  # 3 hidden units suffice
  return jnp.asarray(x), jnp.asarray(y, jnp.float32)


def train(tx, steps, seed=0):
  x, y = teacher_data()
  model = ppx.FactorizedMLP(
      depth=1, width=32, in_features=5, num_classes=2, rngs=nnx.Rngs(seed)
  )
  spec = model.unit_spec()
  graphdef, params = nnx.split(model, nnx.Param)
  tx = tx(spec)
  opt_state = tx.init(params)

  def loss_fn(p):
    return jnp.mean(jnp.square(nnx.merge(graphdef, p)(x) - y))

  @jax.jit
  def run(params, opt_state):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss_fn)(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (params, opt_state), _ = jax.lax.scan(
        body, (params, opt_state), None, steps
    )
    return params

  params = run(params, opt_state)
  return float(loss_fn(params)), ppx.active_units(params, spec), spec, params


def test_pathprox_prunes_where_sgd_weight_decay_does_not():
  lam, lr, steps = 3e-2, 0.05, 3000
  loss_p, act_p, spec, params = train(lambda s: ppx.pathprox(lr, lam, s), steps)
  loss_w, act_w, _, _ = train(
      lambda s: optax.chain(
          optax.add_decayed_weights(
              lam,
              mask=s.mask("input_kernel", "output_kernel", "ungrouped_kernel"),
          ),
          optax.sgd(lr),
      ),
      steps,
  )
  assert float(act_p.fraction) <= 0.5, act_p
  assert float(act_w.fraction) == 1.0, act_w
  # Both fit the data comparably (the teacher needs only 3 units).
  assert loss_p < 2 * loss_w + 0.05
  # Pruned units are exact zeros in the output kernel, live w's on the sphere.
  v = np.asarray(params["layers"][1]["kernel"])
  w = np.asarray(params["layers"][0]["kernel"])
  dead = np.linalg.norm(v, axis=1) == 0
  assert dead.sum() == 32 - int(act_p.counts[0])
  np.testing.assert_allclose(
      np.linalg.norm(w[:, ~dead], axis=0), 1.0, rtol=1e-5
  )


def test_nnx_optimizer_end_to_end():
  x, y = teacher_data(64)
  model = ppx.MLP(
      depth=3, width=16, in_features=5, num_classes=2, rngs=nnx.Rngs(1)
  )
  spec = model.unit_spec()
  opt = nnx.Optimizer(model, ppx.pathprox(0.05, 1e-3, spec), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    loss, g = nnx.value_and_grad(lambda m: jnp.mean(jnp.square(m(x) - y)))(
        model
    )
    opt.update(model, g)
    return loss

  losses = [float(step(model, opt)) for _ in range(50)]
  assert losses[-1] < losses[0]
  w = np.asarray(model.layers[0].kernel[...])
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)
  # The ungrouped head received ordinary weight decay: it is not projected.
  assert not np.allclose(
      np.linalg.norm(np.asarray(model.layers[2].kernel[...]), axis=0), 1.0
  )


def _runner():
  """A freshly traced and compiled 10-step PathProx run (a new closure)."""

  def loss_fn(p, x, y):
    h = jax.nn.relu(x @ p["l0"]["kernel"] + p["l0"]["bias"])
    logits = h @ p["l1"]["kernel"] + p["l1"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def run(params, xs, ys):
    spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1")])
    tx = ppx.pathprox(0.3, 0.05, spec, momentum=0.5)

    def body(carry, batch):
      p, s = carry
      u, s = tx.update(jax.grad(loss_fn)(p, *batch), s, p)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (params, tx.init(params)), (xs, ys))[0]

  return run


def _inputs(seed):
  k1, k2, k3, kx, ky = jax.random.split(jax.random.key(seed), 5)
  params = {
      "l0": {
          "kernel": jax.random.normal(k1, (8, 16)),
          "bias": jax.random.normal(k2, (16,)),
      },
      "l1": {
          "kernel": 0.1 * jax.random.normal(k3, (16, 4)),
          "bias": jnp.zeros((4,)),
      },
  }
  return (
      params,
      jax.random.normal(kx, (10, 32, 8)),
      jax.random.randint(ky, (10, 32), 0, 4),
  )


def test_same_seed_same_result_run_to_run():
  first = _runner()(*_inputs(0))
  again = _runner()
  second = again(*_inputs(0))  # traced and compiled afresh
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)
  other = again(*_inputs(1))
  assert not np.array_equal(first[0]["l0"]["kernel"], other[0]["l0"]["kernel"])
  assert (
      float(
          ppx.active_units(
              first[0], ppx.UnitSpec.from_pairs(first[0], [("l0", "l1")])
          ).fraction
      )
      < 1.0
  )  # the prox pruned something
