"""Figure 5 of the PathProx paper at CPU scale: accuracy of sparse solutions.

Task 5 scaled down: MNIST (the 5000 offline images, 400/class for training of
which ``--val-size`` are held out for validation, 100/class for test);
``FactorizedMLP(3, 800)`` for PathProx, ``MLP(3, 800)`` for the others.
Methods: SGD + weight decay, PathProx, SGD + lasso (l1 subgradient on every
kernel), SGD + group lasso (subgradient of ``sum_i ||w_i|| + ||v_i||`` over
the hidden ReLU units). For every (method, lr, lambda) the model is trained
``--iterations`` steps; at every ``--checkpoint-every`` steps a copy is
pruned (units with ``||w_i|| ||v_i|| < 1e-5`` are masked to zero) and
fine-tuned ``--finetune-iterations`` steps with the same method and the mask
held fixed. Each fine-tuned model is one point (sparsity = fraction of active
units of the evaluated model, test accuracy at the best-validation
evaluation). The curve for sparsity level ``s`` shows the test accuracy of
the point with the best validation accuracy among those with sparsity ``<=
s``.

The paper: 30k training iterations with checkpoints every 5k, 10k
fine-tuning iterations, lr in {0.01, 0.03}, lambda in {1e-4, 1e-3, 3e-3, 1e-2},
full MNIST. The CPU defaults are much smaller (2000 + 500 iterations,
checkpoints at 1000 and 2000, lr 0.03, lambda in {3e-3, 1e-2}: about 15 min
on an idle 2-core CPU); widen them with ``--lrs``, ``--lambdas``,
``--iterations``, ``--checkpoint-every`` and ``--finetune-iterations``.
Differences from the paper besides scale: units are not pruned during
training (PathProx units whose ``v`` is zero may revive), and the fine-tuning
uses the same method and hyper-parameters with the pruning mask held fixed.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common
from pathprox_jax.data import load_mnist_subset

METHODS = ("weight_decay", "pathprox", "lasso", "group_lasso")
PRUNE_THRESHOLD = 1e-5


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="8-16 s")
  p.add_argument(
      "--methods", nargs="+", default=list(METHODS), choices=list(METHODS)
  )
  p.add_argument("--lrs", type=float, nargs="+", default=[0.03])
  p.add_argument("--lambdas", type=float, nargs="+", default=[3e-3, 1e-2])
  p.add_argument("--iterations", type=int, default=2000)
  p.add_argument("--checkpoint-every", type=int, default=1000)
  p.add_argument("--finetune-iterations", type=int, default=500)
  p.add_argument("--finetune-eval-every", type=int, default=250)
  p.add_argument("--batch-size", type=int, default=200)
  p.add_argument("--width", type=int, default=800)
  p.add_argument("--train-per-class", type=int, default=400)
  p.add_argument("--val-size", type=int, default=500)
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument(
      "--replot",
      default=None,
      nargs="+",
      metavar="JSON",
      help=(
          "only redraw the figure from saved results JSON(s); "
          "several files (e.g. runs with different --lambdas) are "
          "merged into one figure written next to the first"
      ),
  )
  args = p.parse_args(argv)
  if args.quick:
    args.width = min(args.width, 32)
    args.iterations = min(args.iterations, 40)
    args.checkpoint_every = min(args.checkpoint_every, 20)
    args.finetune_iterations = min(args.finetune_iterations, 20)
    args.finetune_eval_every = min(args.finetune_eval_every, 10)
    args.lambdas = args.lambdas[-1:]
  return args


def model_for(method, width, seed):
  if method == "pathprox":
    m = ppx.FactorizedMLP(3, width, rngs=nnx.Rngs(seed))
    return m, (0, 2, 4)
  return ppx.MLP(3, width, rngs=nnx.Rngs(seed)), (0, 1)


def unit_mask(params, relu_after, threshold=PRUNE_THRESHOLD):
  """0/1 pytree zeroing the input column, input bias entry and output row of
  every hidden ReLU unit with path norm ``< threshold``; and the keep rate."""
  keeps = [
      pn >= threshold
      for pn in common.hidden_unit_path_norms(params, relu_after)
  ]
  mask = jax.tree.map(jnp.ones_like, params)
  layers = mask["layers"]
  for l, keep in zip(relu_after, keeps):
    keep = keep.astype(jnp.float32)
    layers[l]["kernel"] = layers[l]["kernel"] * keep[None, :]
    layers[l]["bias"] = layers[l]["bias"] * keep
    layers[l + 1]["kernel"] = layers[l + 1]["kernel"] * keep[:, None]
  kept = float(sum(jnp.sum(k) for k in keeps) / sum(k.size for k in keeps))
  return mask, kept


def make_evaluator(apply_fn, relu_after, data):
  xv, yv = jnp.asarray(data["x_val"]), jnp.asarray(data["y_val"])
  xt, yt = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])

  @jax.jit
  def evaluate(params):
    pn = jnp.concatenate(common.hidden_unit_path_norms(params, relu_after))
    return {
        "val_acc": common.accuracy(apply_fn(params, xv), yv),
        "test_acc": common.accuracy(apply_fn(params, xt), yt),
        "active": jnp.mean(pn > PRUNE_THRESHOLD),
        "active_exact": jnp.mean(pn > 0),
    }

  return evaluate


def best_curve(points, grid):
  """For each sparsity level ``s`` in ``grid``: test accuracy of the point
  with the best validation accuracy among those with sparsity ``<= s``."""
  out = []
  for s in grid:
    cands = [p for p in points if p["sparsity"] <= s + 1e-12]
    if not cands:
      out.append(None)
      continue
    best = max(cands, key=lambda p: (p["val_acc"], -p["sparsity"]))
    out.append(best["test_acc"])
  return out


MARKERS = {
    "weight_decay": "o",
    "pathprox": "s",
    "lasso": "^",
    "group_lasso": "D",
}


def plot_figure5(points, args, n_train, path):
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(8, 5))
  live = [p for p in points if p["test_acc"] > 0.2]
  dead = [p for p in points if p["test_acc"] <= 0.2]
  for m in args.methods:
    c = common.METHOD_COLORS[m]
    pts = [p for p in live if p["method"] == m]
    ax.scatter(
        [100 * max(p["sparsity"], 1e-3) for p in pts],
        [100 * p["test_acc"] for p in pts],
        color=c,
        alpha=0.7,
        s=40,
        marker=MARKERS.get(m, "o"),
        edgecolors="k",
        linewidths=0.5,
        zorder=3,
        label=common.METHOD_LABELS[m]
        + (" (factorized)" if m == "pathprox" else ""),
    )
    # Curve evaluated at the methods' own sparsity levels (exact steps).
    levels = sorted({p["sparsity"] for p in points if p["method"] == m} | {1.0})
    ys = best_curve([p for p in points if p["method"] == m], levels)
    xy = [
        (100 * max(x, 1e-3), 100 * y)
        for x, y in zip(levels, ys)
        if y is not None and y > 0.2
    ]
    if xy:
      ax.step(*zip(*xy), where="post", color=c, lw=1.5)
  ax.set_xscale("log")
  if live:
    lo = min(100 * p["test_acc"] for p in live)
    ax.set_ylim(
        max(0.0, lo - 3),
        min(100.0, max(100 * p["test_acc"] for p in live) + 1.5),
    )
  if dead:
    txt = "; ".join(
        f"{common.METHOD_LABELS[p['method']]} lambda {p['lam']:g}"
        f" ckpt {p['checkpoint']}: {100 * p['test_acc']:.0f}% acc, "
        f"{100 * p['sparsity']:.2f}% active"
        for p in dead
    )
    fig.text(
        0.01,
        0.0,
        "collapsed runs (accuracy <= 20%, not shown): " + txt,
        fontsize=6,
        wrap=True,
        va="top",
    )
  ax.set_xlabel("active hidden units (%; path norm >= 1e-5), log scale")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(
      f"Figure 5 (CPU scale): MLP-3-{args.width}, MNIST {n_train}"
      f" train; lr {args.lrs}, lambda {args.lambdas}\n{args.iterations} it. + "
      f"{args.finetune_iterations} fine-tune per checkpoint (every "
      f"{args.checkpoint_every}); markers: all runs, line: best-on-validation "
      f"with sparsity <= x{' [QUICK]' if args.quick else ''}",
      fontsize=8,
  )
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  paths = common.save_figure(fig, path, args.copy_figures)
  return paths


def replot(args):
  import argparse
  import json
  import os

  saved = []
  for path in args.replot:
    with open(path) as fh:
      saved.append(json.load(fh))
  cfg = argparse.Namespace(
      **{**saved[0]["config"], "copy_figures": args.copy_figures}
  )
  points = [p for s in saved for p in s["points"]]
  cfg.lrs = sorted({p["lr"] for p in points})
  cfg.lambdas = sorted({p["lam"] for p in points})
  cfg.methods = list(dict.fromkeys(p["method"] for p in points))
  n_train = cfg.train_per_class * 10 - cfg.val_size
  name = os.path.basename(args.replot[0]).replace("sparsity", "figure5")[:-5]
  if len(saved) > 1:
    name += "_merged"
  figs = plot_figure5(
      points,
      cfg,
      n_train,
      os.path.join(os.path.dirname(args.replot[0]), name + ".png"),
  )
  print("figures:", ", ".join(figs))
  return figs


def train_and_prune(method, lr, lam, args, data, desc) -> dict:
  """One (method, lr, lambda): training, then pruning + fine-tuning from each
  checkpoint; ``{"points": [...], "run": {...}}``."""
  t0 = time.perf_counter()
  model, relu_after = model_for(method, args.width, args.seed)
  f = common.functional(model)
  tx, penalty = common.make_method(method, lr, lam, f.spec, relu_after)
  run = common.make_chunk_runner(f.apply, tx, penalty)
  evaluate = make_evaluator(f.apply, relu_after, data)
  ckpts, points = {}, []

  def on_eval(step, p, m):
    if step > 0:
      ckpts[step] = common.copy_tree(p)

  _, history = common.train(
      common.copy_tree(f.params),
      tx,
      run,
      data["x_train"],
      data["y_train"],
      iterations=args.iterations,
      batch_size=args.batch_size,
      eval_every=args.checkpoint_every,
      evaluate=evaluate,
      seed=args.seed,
      desc=desc,
      progress=not args.no_progress,
      on_eval=on_eval,
  )
  for step, p in sorted(ckpts.items()):
    mask, kept = unit_mask(p, relu_after)
    _, ft_hist = common.train(
        jax.tree.map(lambda a, m: a * m, p, mask),
        tx,
        run,
        data["x_train"],
        data["y_train"],
        iterations=args.finetune_iterations,
        batch_size=args.batch_size,
        eval_every=args.finetune_eval_every,
        evaluate=evaluate,
        seed=args.seed + step,
        desc=f"  fine-tune @{step}",
        progress=not args.no_progress,
        mask=mask,
    )
    best = max(ft_hist, key=lambda h: h["val_acc"])
    at_ckpt = next(h for h in history if h["step"] == step)
    points.append({
        "method": method,
        "lr": lr,
        "lam": lam,
        "checkpoint": step,
        "kept_after_pruning": kept,
        "sparsity": ft_hist[-1]["active"],
        "sparsity_exact": ft_hist[-1]["active_exact"],
        "val_acc": best["val_acc"],
        "test_acc": best["test_acc"],
        "finetune_best_step": best["step"],
        "before_finetune": {
            k: at_ckpt[k] for k in ("val_acc", "test_acc", "active")
        },
    })
  return {
      "points": points,
      "run": {
          "method": method,
          "lr": lr,
          "lam": lam,
          "history": history,
          "seconds": time.perf_counter() - t0,
      },
  }


def main(argv=None):
  args = parse_args(argv)
  if args.replot:
    return replot(args)
  out = common.results_dir("sparsity", args.out)
  tag = "_quick" if args.quick else ""
  t_start = time.perf_counter()
  split = load_mnist_subset(args.train_per_class, seed=args.data_seed)
  nv = args.val_size
  data = {
      "x_train": split.x_train[nv:],
      "y_train": split.y_train[nv:],
      "x_val": split.x_train[:nv],
      "y_val": split.y_train[:nv],
      "x_test": split.x_test,
      "y_test": split.y_test,
  }
  if args.quick:
    data = {k: v[:400] for k, v in data.items()}

  points, runs = [], []
  configs = [
      (m, lr, lam)
      for m in args.methods
      for lr in args.lrs
      for lam in args.lambdas
  ]
  run_dir = common.run_dirs("sparsity", args.out, args.quick)[2]
  config = common.run_config(args, ("methods", "lrs", "lambdas"))
  for i, (method, lr, lam) in enumerate(configs):
    desc = f"[{i + 1}/{len(configs)}] {method} lr={lr:g} lam={lam:g}"
    r = common.cached_run(
        run_dir,
        f"{method}_lr{lr:g}_lam{lam:g}",
        dict(config, method=method, lr=lr, lam=lam),
        args.resume,
        lambda: train_and_prune(method, lr, lam, args, data, desc),
    )
    points += r["points"]
    runs.append(r["run"])
    last = points[-1]
    print(
        f"{desc}: {runs[-1]['seconds']:.0f}s; at {last['checkpoint']}: "
        f"active {100 * last['sparsity']:.2f}% test acc "
        f"{100 * last['test_acc']:.2f}%",
        flush=True,
    )

  grid = np.logspace(-3, 0, 61)
  curves = {
      m: best_curve([p for p in points if p["method"] == m], grid)
      for m in args.methods
  }
  seconds = time.perf_counter() - t_start

  figs = plot_figure5(
      points, args, len(data["y_train"]), f"{out}/figure5{tag}.png"
  )

  summary = {
      "seconds": seconds,
      "figures": figs,
      "min_sparsity": {
          m: min(
              (p["sparsity"] for p in points if p["method"] == m), default=None
          )
          for m in args.methods
      },
  }
  common.save_json(
      f"{out}/sparsity{tag}.json",
      {
          "config": vars(args),
          "environment": common.environment(),
          "summary": summary,
          "points": points,
          "runs": runs,
          "curves": {"grid": grid, **curves},
      },
  )
  rows = [
      [
          p["method"],
          p["lr"],
          p["lam"],
          p["checkpoint"],
          f"{100 * p['kept_after_pruning']:.2f}",
          f"{100 * p['sparsity']:.2f}",
          f"{100 * p['before_finetune']['test_acc']:.2f}",
          f"{100 * p['test_acc']:.2f}",
      ]
      for p in points
  ]
  print(
      common.fmt_table(
          rows,
          [
              "method",
              "lr",
              "lambda",
              "ckpt",
              "kept%",
              "active% (final)",
              "acc before ft%",
              "acc after ft%",
          ],
      )
  )
  print(f"total {seconds:.0f}s; figure: {', '.join(figs)}")
  return summary


if __name__ == "__main__":
  main()
