"""Figure 2 of the PathProx paper: decision boundaries on 2-D data with outliers.

A one-hidden-layer ReLU network ``MLP(depth=2, width=--width, in_features=2,
num_classes=2)`` is trained full-batch from one identical initialisation with
(a) gradient descent on the weight decay objective and (b) PathProx, both with
``lambda = 1e-4`` and ``lr = 0.1``. The panels show the class-0 probability
``p0`` (background) and its 0.1 / 0.5 / 0.9 contours after the same number of
iterations (``--iterations``), and after a long run (``--long-iterations``),
where both methods should have reached (nearly) the same function.

The data (generated deterministically from ``--data-seed``): two Gaussian
clusters (class 0 left, class 1 right) plus a few outliers of each class
placed inside the other cluster.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common

METHODS = ("weight_decay", "pathprox")


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="4-8 s")
  p.add_argument(
      "--iterations",
      type=int,
      default=2000,
      help="iterations of the 'same number of iterations' panels",
  )
  p.add_argument(
      "--long-iterations",
      type=int,
      default=100000,
      help="iterations of the 'at convergence' panel",
  )
  p.add_argument("--eval-every", type=int, default=500)
  p.add_argument("--lr", type=float, default=0.1)
  p.add_argument("--lam", type=float, default=1e-4)
  p.add_argument("--width", type=int, default=100)
  p.add_argument("--points-per-class", type=int, default=40)
  p.add_argument("--outliers-per-class", type=int, default=3)
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument("--grid", type=int, default=300, help="grid points per axis")
  p.add_argument(
      "--normalize-init",
      action="store_true",
      help="rescale the shared init so every ||w_i|| = 1 (function preserving)",
  )
  args = p.parse_args(argv)
  if args.quick:
    args.iterations = min(args.iterations, 100)
    args.long_iterations = min(args.long_iterations, 300)
    args.eval_every = min(args.eval_every, 50)
    args.grid = min(args.grid, 60)
  return args


def make_data(points_per_class: int, outliers_per_class: int, seed: int):
  """Two clusters and ``outliers_per_class`` mislabeled-looking points each."""
  rng = np.random.default_rng(seed)
  c0 = rng.normal([-1.2, 0.0], 0.4, (points_per_class, 2))
  c1 = rng.normal([1.2, 0.0], 0.4, (points_per_class, 2))
  o0 = rng.normal([1.2, 0.0], 0.3, (outliers_per_class, 2))  # class 0 in 1
  o1 = rng.normal([-1.2, 0.0], 0.3, (outliers_per_class, 2))  # class 1 in 0
  x = np.concatenate([c0, o0, c1, o1]).astype(np.float32)
  n0 = points_per_class + outliers_per_class
  y = np.concatenate([np.zeros(n0), np.ones(len(x) - n0)]).astype(np.int32)
  outlier = np.zeros(len(x), bool)
  outlier[points_per_class:n0] = True
  outlier[n0 + points_per_class :] = True
  return x, y, outlier


def make_evaluator(apply_fn, spec, lam, x, y, grid_x):
  xd, yd, gd = jnp.asarray(x), jnp.asarray(y), jnp.asarray(grid_x)

  @jax.jit
  def evaluate(params):
    logits = apply_fn(params, xd)
    loss = common.cross_entropy(logits, yd)
    p0 = jax.nn.softmax(apply_fn(params, gd))[:, 0]
    return {
        "objective": loss + lam * ppx.path_norm_penalty(params, spec),
        "objective_raw": loss + lam * ppx.weight_decay_penalty(params),
        "loss": loss,
        "train_acc": common.accuracy(logits, yd),
        "active": ppx.active_units(params, spec, 0.0).fraction,
        # fraction of the plotted window where 0.1 < p0 < 0.9
        "uncertain_area": jnp.mean((p0 > 0.1) & (p0 < 0.9)),
    }

  return evaluate


def main(argv=None):
  args = parse_args(argv)
  out = common.results_dir("decision_boundary", args.out)
  tag = "_quick" if args.quick else ""
  t_start = time.perf_counter()
  x, y, outlier = make_data(
      args.points_per_class, args.outliers_per_class, args.data_seed
  )
  lo, hi = x.min(0) - 0.6, x.max(0) + 0.6
  gx, gy = np.meshgrid(
      np.linspace(lo[0], hi[0], args.grid), np.linspace(lo[1], hi[1], args.grid)
  )
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)

  model = ppx.MLP(
      2, args.width, in_features=2, num_classes=2, rngs=nnx.Rngs(args.seed)
  )
  f = common.functional(model)
  init_params = f.params
  if args.normalize_init:
    init_params = ppx.normalize_units(init_params, f.spec)
  evaluate = make_evaluator(f.apply, f.spec, args.lam, x, y, grid)
  p0_fn = jax.jit(lambda p: jax.nn.softmax(f.apply(p, jnp.asarray(grid)))[:, 0])

  def train_method(method):
    tx, penalty = common.make_method(method, args.lr, args.lam, f.spec)
    run = common.make_chunk_runner(f.apply, tx, penalty)
    snaps = {}

    def on_eval(step, p, m):
      if step == args.iterations:
        snaps["short"] = np.asarray(p0_fn(p)).reshape(gx.shape)

    t0 = time.perf_counter()
    params, history = common.train(
        common.copy_tree(init_params),
        tx,
        run,
        x,
        y,
        iterations=args.long_iterations,
        batch_size=len(x),
        eval_every=min(args.eval_every, args.iterations),
        evaluate=evaluate,
        seed=args.seed,
        desc=method,
        progress=not args.no_progress,
        on_eval=on_eval,
    )
    snaps["long"] = np.asarray(p0_fn(params)).reshape(gx.shape)
    return {
        "history": history,
        "p0": snaps,
        "seconds": time.perf_counter() - t0,
    }

  run_dir = common.run_dirs("decision_boundary", args.out, args.quick)[2]
  runs = {}
  for method in METHODS:
    r = common.cached_run(
        run_dir,
        method + tag,
        common.run_config(args),
        args.resume,
        lambda: train_method(method),
    )
    r["p0"] = {k: np.asarray(v) for k, v in r["p0"].items()}
    runs[method] = r

  def at(method, step):
    return next(h for h in runs[method]["history"] if h["step"] == step)

  summary = {}
  for when, step in (
      ("short", args.iterations),
      ("long", args.long_iterations),
  ):
    summary[when] = {"iterations": step}
    for m in METHODS:
      h = at(m, step)
      summary[when][m] = {
          k: h[k]
          for k in (
              "objective",
              "objective_raw",
              "loss",
              "train_acc",
              "active",
              "uncertain_area",
          )
      }
    summary[when]["max_abs_p0_difference"] = float(
        np.max(
            np.abs(
                runs["weight_decay"]["p0"][when] - runs["pathprox"]["p0"][when]
            )
        )
    )
  summary["seconds"] = time.perf_counter() - t_start

  plt = common.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained")
  panels = [
      ("weight_decay", "short", f"SGD + weight decay, {args.iterations} it."),
      ("pathprox", "short", f"PathProx, {args.iterations} it."),
      (
          "weight_decay",
          "long",
          (
              f"{args.long_iterations} it.: weight decay (solid) vs PathProx"
              " (dashed)"
          ),
      ),
  ]
  for ax, (m, when, title) in zip(axes, panels):
    p0 = runs[m]["p0"][when]
    im = ax.contourf(
        gx, gy, p0, levels=np.linspace(0, 1, 21), cmap="RdBu", vmin=0, vmax=1
    )
    ax.contour(
        gx,
        gy,
        p0,
        levels=[0.1, 0.5, 0.9],
        colors=["red", "white", "blue"],
        linewidths=2,
    )
    if when == "long":
      ax.contour(
          gx,
          gy,
          runs["pathprox"]["p0"]["long"],
          levels=[0.1, 0.5, 0.9],
          colors=["red", "white", "blue"],
          linewidths=1.5,
          linestyles="--",
      )
    for cls, col, mk in ((0, "tab:blue", "o"), (1, "tab:red", "s")):
      sel = (y == cls) & ~outlier
      ax.scatter(
          x[sel, 0],
          x[sel, 1],
          c=col,
          s=16,
          marker=mk,
          edgecolors="k",
          linewidths=0.6,
      )
      sel = (y == cls) & outlier
      ax.scatter(
          x[sel, 0],
          x[sel, 1],
          c=col,
          s=110,
          marker="*",
          edgecolors="k",
          linewidths=0.8,
      )
    h = at(m, args.iterations if when == "short" else args.long_iterations)
    ax.set_title(
        f"{title}\nWD objective (balanced) {h['objective']:.4f}, "
        f"0.1<p0<0.9 area {100 * h['uncertain_area']:.1f}%",
        fontsize=9,
    )
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
  fig.colorbar(im, ax=axes, label="p0 (class 0 = blue)", shrink=0.85)
  from matplotlib.lines import Line2D

  handles = [
      Line2D([], [], color="blue", label="p0 = 0.9"),
      Line2D([], [], color="white", label="p0 = 0.5"),
      Line2D([], [], color="red", label="p0 = 0.1"),
      Line2D(
          [], [], color="tab:blue", marker="o", mec="k", ls="", label="class 0"
      ),
      Line2D(
          [], [], color="tab:red", marker="s", mec="k", ls="", label="class 1"
      ),
      Line2D(
          [],
          [],
          color="gray",
          marker="*",
          mec="k",
          ms=10,
          ls="",
          label="outliers (star, colour = label)",
      ),
  ]
  axes[0].legend(
      handles=handles, fontsize=7, loc="lower left", facecolor="lightgray"
  )
  fig.suptitle(
      f"Figure 2: MLP(2, {args.width}) on 2-D data with outliers, "
      f"full batch, lr {args.lr}, lambda {args.lam:g}, identical init "
      f"(seed {args.seed}){' [QUICK]' if args.quick else ''}",
      fontsize=10,
  )
  figs = common.save_figure(fig, f"{out}/figure2{tag}.png", args.copy_figures)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
  for m in METHODS:
    h = runs[m]["history"]
    st = [e["step"] for e in h]
    c = common.METHOD_COLORS[m]
    ax1.plot(
        st,
        [e["objective"] for e in h],
        color=c,
        label=f"{common.METHOD_LABELS[m]}: WD objective (balanced)",
    )
    ax1.plot(
        st,
        [e["loss"] for e in h],
        color=c,
        ls="--",
        label=f"{common.METHOD_LABELS[m]}: data loss",
    )
    ax2.plot(
        st,
        [100 * e["uncertain_area"] for e in h],
        color=c,
        label=common.METHOD_LABELS[m],
    )
  for ax in (ax1, ax2):
    ax.axvline(args.iterations, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("iteration (log)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  ax1.set_yscale("log")
  ax1.set_ylabel("objective / loss (full batch)")
  ax2.set_ylabel("area with 0.1 < p0 < 0.9 (% of plot window)")
  fig.suptitle(
      f"Figure 2 runs: MLP(2, {args.width}), lr {args.lr}, lambda "
      f"{args.lam:g}{' [QUICK]' if args.quick else ''}",
      fontsize=10,
  )
  figs += common.save_figure(
      fig, f"{out}/figure2_objective{tag}.png", args.copy_figures
  )
  summary["figures"] = figs
  common.save_json(
      f"{out}/decision_boundary{tag}.json",
      {
          "config": vars(args),
          "environment": common.environment(),
          "summary": summary,
          "histories": {m: r["history"] for m, r in runs.items()},
      },
  )
  rows = [
      [
          s["iterations"],
          m,
          f"{s[m]['objective']:.5f}",
          f"{s[m]['objective_raw']:.5f}",
          f"{s[m]['loss']:.4f}",
          f"{100 * s[m]['train_acc']:.1f}",
          f"{100 * s[m]['active']:.1f}",
          f"{100 * s[m]['uncertain_area']:.1f}",
      ]
      for s in (summary["short"], summary["long"])
      for m in METHODS
  ]
  print(
      common.fmt_table(
          rows,
          [
              "iter",
              "method",
              "WD obj (bal)",
              "WD obj (raw)",
              "loss",
              "train acc%",
              "active%",
              "0.1<p0<0.9 area%",
          ],
      )
  )
  print(
      "max |p0_WD - p0_PathProx| on the grid: short "
      f"{summary['short']['max_abs_p0_difference']:.3f}, long "
      f"{summary['long']['max_abs_p0_difference']:.3f}"
  )
  print(f"total {summary['seconds']:.0f}s; figure: {', '.join(figs)}")
  return summary


if __name__ == "__main__":
  main()
