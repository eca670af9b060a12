"""Figures 1 and 4 of the PathProx paper on Task 1 (MNIST subset, MLP-3-400 factorized).

Three methods from one identical initialisation, constant learning rate:

* ``pathprox``: :func:`pathprox_jax.pathprox` (SGD on the loss, layer-wise
  balancing, sphere projection of ``w``, group soft-threshold of ``v``);
* ``weight_decay``: SGD on ``L + lambda/2 sum ||K||^2`` (kernels only);
* ``pathnorm_sgd``: plain SGD on ``L + lambda sum_i ||w_i|| ||v_i||``.

Every ``--eval-every`` iterations, on the full training set: the weight decay
objective of the balanced representation ``L + lambda * path_norm_penalty``
(what the paper plots), the raw weight decay objective ``L + lambda/2
sum ||K||^2`` of the iterate as stored, the data loss, the fraction of active
units (path norm ``> 0`` and ``> 1e-5``), and test accuracy on the held-out
images. The per-example Jacobian spectral norm (local Lipschitz constant) is
measured on 1000 held-out images at initialisation and at the end.

Run ``python -m benchmarks.convergence`` (defaults: 20k iterations, about
5 minutes on a quiet 2-core CPU) or ``--quick`` for a smoke run (7-11 s).
Each finished method is saved to ``results/convergence/runs/`` as soon as it
ends; ``--resume`` loads those instead of training them again, so a killed
run loses only the method in progress.
"""

from __future__ import annotations

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

METHODS = ("pathprox", "weight_decay", "pathnorm_sgd")


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="7-11 s")
  p.add_argument("--iterations", type=int, default=20000)
  p.add_argument(
      "--eval-every",
      type=int,
      default=200,
      help="iterations between metric evaluations",
  )
  p.add_argument("--lr", type=float, default=0.3)
  p.add_argument(
      "--schedule",
      default="constant",
      choices=["constant", "cosine"],
      help=(
          "constant lr (Figure 1 as the text describes it) or "
          "cosine decay from --lr to 0 over the run (Appendix D.2 "
          "says a decay schedule was used)"
      ),
  )
  p.add_argument("--lam", type=float, default=1e-4, help="lambda")
  p.add_argument("--batch-size", type=int, default=200)
  p.add_argument("--depth", type=int, default=3)
  p.add_argument("--width", type=int, default=400)
  p.add_argument("--train-per-class", type=int, default=100)
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument(
      "--methods",
      nargs="+",
      default=list(METHODS),
      choices=list(METHODS) + ["pathprox_nobalance"],
  )
  p.add_argument(
      "--init", default="pytorch", choices=["pytorch", "flax", "kaiming"]
  )
  p.add_argument(
      "--normalize-init",
      action="store_true",
      help=(
          "rescale the shared init so every ||w_i|| = 1 (function "
          "preserving: v_i is multiplied by the old ||w_i||)"
      ),
  )
  p.add_argument(
      "--jacobian-samples",
      type=int,
      default=1000,
      help="held-out images for the start/end histograms",
  )
  p.add_argument(
      "--jacobian-track",
      type=int,
      default=200,
      help=(
          "held-out images whose median Jacobian norm is logged "
          "at every evaluation (0: off)"
      ),
  )
  p.add_argument(
      "--replot",
      default=None,
      metavar="JSON",
      help="only redraw the figures from a saved results JSON",
  )
  p.add_argument("--tag", default="", help="suffix for output file names")
  args = p.parse_args(argv)
  if args.quick:
    args.iterations = min(args.iterations, 60)
    args.eval_every = min(args.eval_every, 20)
    args.width = min(args.width, 32)
    args.jacobian_samples = min(args.jacobian_samples, 64)
    args.jacobian_track = min(args.jacobian_track, 16)
  return args


def make_evaluator(
    apply_fn, spec, lam, x_train, y_train, x_test, y_test, x_jac=None
):
  xt, yt = jnp.asarray(x_train), jnp.asarray(y_train)
  xs, ys = jnp.asarray(x_test), jnp.asarray(y_test)
  xj = None if x_jac is None or len(x_jac) == 0 else jnp.asarray(x_jac)

  @jax.jit
  def evaluate(params):
    logits = common.predict_batched(apply_fn, params, xt)
    loss = common.cross_entropy(logits, yt)
    wd = ppx.weight_decay_penalty(params)
    pn = ppx.path_norm_penalty(params, spec)
    test_logits = common.predict_batched(apply_fn, params, xs)
    return {
        "objective": loss + lam * pn,  # balanced representation
        "objective_raw": loss + lam * wd,  # iterate as stored
        "loss": loss,
        "path_norm_penalty": pn,
        "weight_decay_penalty": wd,
        "active": ppx.active_units(params, spec, 0.0).fraction,
        "active_1e-5": ppx.active_units(params, spec, 1e-5).fraction,
        "train_acc": common.accuracy(logits, yt),
        "test_acc": common.accuracy(test_logits, ys),
        **(
            {}
            if xj is None
            else {
                "jacobian_median": jnp.median(
                    ppx.jacobian_spectral_norms(
                        lambda z: apply_fn(params, z), xj
                    )
                )
            }
        ),
    }

  return evaluate


def jacobian_norms(apply_fn, params, x, chunk=250):
  fn = jax.jit(
      lambda p, xb: ppx.jacobian_spectral_norms(lambda z: apply_fn(p, z), xb)
  )
  return np.concatenate([
      np.asarray(fn(params, jnp.asarray(x[i : i + chunk])))
      for i in range(0, len(x), chunk)
  ])


def crossing_step(steps, a, b):
  """First step from which ``a < b`` holds at every later evaluation."""
  below = np.asarray(a) < np.asarray(b)
  if not below[-1]:
    return None
  k = len(below) - 1
  while k > 1 and below[k - 1]:  # index 0 is the shared initialisation
    k -= 1
  return int(steps[k])


def value_at(history, key, step):
  """Metric at the evaluation closest to ``step`` (``None`` past the end)."""
  steps = np.array([h["step"] for h in history])
  if step > steps[-1]:
    return None
  return history[int(np.argmin(np.abs(steps - step)))][key]


def summarize(results, checkpoints):
  pp, wd = results.get("pathprox"), results.get("weight_decay")
  out = {"checkpoints": checkpoints, "final": {}}
  for m, r in results.items():
    out["final"][m] = {k: v for k, v in r["history"][-1].items()}
  if pp and wd:
    steps = [h["step"] for h in pp["history"]]
    pp_obj = [h["objective"] for h in pp["history"]]
    for wd_key in ("objective_raw", "objective"):
      wd_obj = [h[wd_key] for h in wd["history"]]
      name = "vs_wd_raw" if wd_key == "objective_raw" else "vs_wd_balanced"
      out[name] = {
          "crossing_step": crossing_step(steps, pp_obj, wd_obj),
          "ratio": {
              str(c): (
                  (
                      value_at(pp["history"], "objective", c)
                      / value_at(wd["history"], wd_key, c)
                  )
                  if value_at(pp["history"], "objective", c) is not None
                  else None
              )
              for c in checkpoints
          },
      }
  out["at"] = {
      str(c): {
          m: {
              k: value_at(r["history"], k, c)
              for k in (
                  "objective",
                  "objective_raw",
                  "loss",
                  "active",
                  "active_1e-5",
                  "test_acc",
              )
          }
          for m, r in results.items()
      }
      for c in checkpoints
  }
  return out


def _clip_initial(ax, results, keys):
  """Y range without the initial value (about 2.3, the loss at init), which
  would squeeze the curves; the cut is stated in the axis label."""
  vals = [
      e[k] for r in results.values() for e in r["history"][1:] for k in keys
  ]
  first = [r["history"][0]["objective"] for r in results.values()]
  if len(vals) and max(first) > 3 * max(vals):
    ax.set_ylim(min(vals) * 0.7, max(vals) * 1.5)
    ax.text(
        0.01,
        0.99,
        f"initial objective {max(first):.2f} (off scale)",
        transform=ax.transAxes,
        va="top",
        fontsize=7,
        color="gray",
    )


def plot_lipschitz(results, args, path, copy):
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for m, r in results.items():
    h = [e for e in r["history"] if "jacobian_median" in e]
    if h:
      ax.plot(
          [e["step"] for e in h],
          [e["jacobian_median"] for e in h],
          color=common.METHOD_COLORS.get(m, "k"),
          label=common.METHOD_LABELS[m],
      )
  ax.set_xlabel("iteration")
  ax.set_ylabel(
      f"median Jacobian spectral norm ({args.jacobian_track} held-out images)"
  )
  ax.set_title(_config_title(args), fontsize=7)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths = common.save_figure(fig, path, copy)
  return paths


def plot_figure1(results, args, path, copy):
  plt = common.pyplot()
  fig = plt.figure(figsize=(15, 4.6))
  gs = fig.add_gridspec(2, 3, width_ratios=[1.2, 1, 1])
  ax = fig.add_subplot(gs[:, 0])
  for m in ("weight_decay", "pathprox"):
    if m not in results:
      continue
    h = results[m]["history"]
    s = [e["step"] for e in h]
    c = common.METHOD_COLORS[m]
    ax.plot(
        s,
        [e["objective"] for e in h],
        color=c,
        label=f"{common.METHOD_LABELS[m]}: WD objective (balanced)",
    )
    if m == "weight_decay":
      ax.plot(
          s,
          [e["objective_raw"] for e in h],
          color=c,
          ls=":",
          label=f"{common.METHOD_LABELS[m]}: WD objective (raw iterate)",
      )
    ax.plot(
        s,
        [e["loss"] for e in h],
        color="gray",
        ls="-" if m == "pathprox" else "--",
        label=f"{common.METHOD_LABELS[m]}: data loss",
    )
  ax.set_yscale("log")
  _clip_initial(ax, results, ("objective", "objective_raw", "loss"))
  ax.set_xlabel("iteration")
  ax.set_ylabel("objective / loss (train, 1000 images)")
  ax.set_title("weight decay objective")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)

  jac = {
      m: results[m]["jacobian"]
      for m in ("weight_decay", "pathprox")
      if m in results
  }
  for row, when in enumerate(("start", "end")):
    allv = np.concatenate([np.asarray(j[when]) for j in jac.values()])
    bins = np.linspace(0, np.percentile(allv, 99.5) * 1.02, 50)
    axh = fig.add_subplot(gs[row, 1])
    for m, j in jac.items():
      axh.hist(
          np.clip(j[when], None, bins[-1]),
          bins=bins,
          alpha=0.55,
          color=common.METHOD_COLORS[m],
          label=f"{common.METHOD_LABELS[m]} (median {np.median(j[when]):.2f})",
      )
    axh.set_title(
        "Jacobian spectral norm, held-out images: "
        + (
            "initialisation (shared by all methods)"
            if when == "start"
            else f"iteration {args.iterations}"
        ),
        fontsize=9,
    )
    axh.set_ylabel("count")
    axh.legend(fontsize=7)
    if row == 1:
      axh.set_xlabel(
          "||df(x)/dx||_2 (local Lipschitz estimate; values "
          "above the 99.5th percentile in the last bin)",
          fontsize=8,
      )

  ax3 = fig.add_subplot(gs[:, 2])
  for m in ("weight_decay", "pathprox"):
    if m not in results:
      continue
    h = results[m]["history"]
    s = [e["step"] for e in h]
    c = common.METHOD_COLORS[m]
    ax3.plot(
        s,
        [100 * e["active"] for e in h],
        color=c,
        label=f"{common.METHOD_LABELS[m]} (path norm > 0)",
    )
    ax3.plot(
        s,
        [100 * e["active_1e-5"] for e in h],
        color=c,
        ls="--",
        label=f"{common.METHOD_LABELS[m]} (path norm > 1e-5)",
    )
  ax3.set_ylim(0, 105)
  ax3.set_xlabel("iteration")
  ax3.set_ylabel("active units (%)")
  ax3.set_title("active units")
  ax3.legend(fontsize=7)
  ax3.grid(alpha=0.3)
  fig.suptitle(_config_title(args), fontsize=10)
  fig.tight_layout()
  paths = common.save_figure(fig, path, copy)
  return paths


def plot_figure4(results, args, path, copy):
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.4))
  for m, r in results.items():
    h = r["history"]
    s = [e["step"] for e in h]
    c = common.METHOD_COLORS.get(m, "k")
    ax.plot(
        s,
        [e["objective"] for e in h],
        color=c,
        label=f"{common.METHOD_LABELS[m]} (balanced)",
    )
    if m != "pathprox":
      ax.plot(
          s,
          [e["objective_raw"] for e in h],
          color=c,
          ls=":",
          label=f"{common.METHOD_LABELS[m]} (raw iterate)",
      )
  ax.set_yscale("log")
  _clip_initial(ax, results, ("objective", "objective_raw"))
  ax.set_xlabel("iteration")
  ax.set_ylabel("weight decay objective (train)")
  ax.set_title(_config_title(args), fontsize=8)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths = common.save_figure(fig, path, copy)
  return paths


def train_method(
    method, args, f, data, init_params, evaluate, x_jac, jac_start
) -> dict:
  """One method from the shared initialisation: history, seconds, Jacobians."""
  lr = (
      args.lr
      if args.schedule == "constant"
      else optax.cosine_decay_schedule(args.lr, args.iterations)
  )
  tx, penalty = common.make_method(method, lr, args.lam, f.spec)
  run = common.make_chunk_runner(f.apply, tx, penalty)
  t0 = time.perf_counter()
  params, history = common.train(
      common.copy_tree(init_params),
      tx,
      run,
      data.x_train,
      data.y_train,
      iterations=args.iterations,
      batch_size=args.batch_size,
      eval_every=args.eval_every,
      evaluate=evaluate,
      seed=args.seed,
      desc=method,
      progress=not args.no_progress,
  )
  seconds = time.perf_counter() - t0
  return {
      "history": history,
      "seconds": seconds,
      "jacobian": {
          "start": jac_start,
          "end": jacobian_norms(f.apply, params, x_jac),
      },
  }


def _config_title(args):
  t = (
      f"Task 1: FactorizedMLP({args.depth}, {args.width}), MNIST "
      f"{args.train_per_class}/class, batch {args.batch_size}, lr {args.lr} "
      f"({args.schedule}), lambda {args.lam:g}, {args.init} init"
      f"{' normalised' if args.normalize_init else ''}, seed {args.seed}"
  )
  return t + (" [QUICK]" if args.quick else "")


def replot(args):
  import argparse

  saved = common.load_json(args.replot)
  cfg = argparse.Namespace(
      **{**saved["config"], "copy_figures": args.copy_figures}
  )
  cfg.jacobian_track = cfg.__dict__.get("jacobian_track", 0)
  cfg.schedule = cfg.__dict__.get("schedule", "constant")
  results = saved["results"]
  out = os.path.dirname(args.replot)
  tag = os.path.basename(args.replot)[len("convergence") : -len(".json")]
  figs = []
  if "pathprox" in results and "weight_decay" in results:
    figs += plot_figure1(
        results, cfg, f"{out}/figure1{tag}.png", args.copy_figures
    )
  figs += plot_figure4(
      results, cfg, f"{out}/figure4{tag}.png", args.copy_figures
  )
  if any(
      "jacobian_median" in e for r in results.values() for e in r["history"]
  ):
    figs += plot_lipschitz(
        results, cfg, f"{out}/figure1_lipschitz{tag}.png", args.copy_figures
    )
  print("figures:", ", ".join(figs))
  return figs


def main(argv=None):
  args = parse_args(argv)
  if args.replot:
    return replot(args)
  out, quick_tag, run_dir = common.run_dirs("convergence", args.out, args.quick)
  tag = ("_" + args.tag if args.tag else "") + quick_tag
  t_start = time.perf_counter()
  data = load_mnist_subset(args.train_per_class, seed=args.data_seed)
  model = ppx.FactorizedMLP(
      args.depth, args.width, init=args.init, rngs=nnx.Rngs(args.seed)
  )
  f = common.functional(model)
  init_params = f.params
  if args.normalize_init:
    init_params = ppx.normalize_units(init_params, f.spec)
  x_jac = data.x_test[: args.jacobian_samples]
  evaluate = make_evaluator(
      f.apply,
      f.spec,
      args.lam,
      data.x_train,
      data.y_train,
      data.x_test,
      data.y_test,
      data.x_test[: args.jacobian_track],
  )
  jac_start = jacobian_norms(f.apply, init_params, x_jac)

  results = {}
  for method in args.methods:
    results[method] = common.cached_run(
        run_dir,
        f"{method}{tag}",
        common.run_config(args, ("methods",)),
        args.resume,
        lambda: train_method(
            method, args, f, data, init_params, evaluate, x_jac, jac_start
        ),
    )
    r = results[method]
    history, seconds = r["history"], r["seconds"]
    h = history[-1]
    print(
        f"{method:>14s}: {seconds:6.1f}s  objective {h['objective']:.4f}  "
        f"raw {h['objective_raw']:.4f}  loss {h['loss']:.2e}  active "
        f"{100 * h['active']:.1f}%  test acc {100 * h['test_acc']:.2f}%",
        flush=True,
    )

  checkpoints = sorted(
      {c for c in (5000, 10000, 20000, args.iterations) if c <= args.iterations}
  )
  summary = summarize(results, checkpoints)
  summary["jacobian_median"] = {
      m: {
          "start": float(np.median(r["jacobian"]["start"])),
          "end": float(np.median(r["jacobian"]["end"])),
      }
      for m, r in results.items()
  }
  summary["seconds"] = {m: r["seconds"] for m, r in results.items()}
  summary["total_seconds"] = time.perf_counter() - t_start
  figs = []
  if "pathprox" in results and "weight_decay" in results:
    figs += plot_figure1(
        results, args, f"{out}/figure1{tag}.png", args.copy_figures
    )
  figs += plot_figure4(
      results, args, f"{out}/figure4{tag}.png", args.copy_figures
  )
  if args.jacobian_track:
    figs += plot_lipschitz(
        results, args, f"{out}/figure1_lipschitz{tag}.png", args.copy_figures
    )
  summary["figures"] = figs
  common.save_json(
      f"{out}/convergence{tag}.json",
      {
          "config": vars(args),
          "environment": common.environment(),
          "summary": summary,
          "results": results,
      },
  )

  rows = []
  for c in checkpoints:
    for m in results:
      a = summary["at"][str(c)][m]
      rows.append([
          c,
          m,
          f"{a['objective']:.4f}",
          f"{a['objective_raw']:.4f}",
          f"{a['loss']:.2e}",
          f"{100 * a['active']:.1f}",
          f"{100 * a['active_1e-5']:.1f}",
          f"{100 * a['test_acc']:.2f}",
      ])
  print()
  print(
      common.fmt_table(
          rows,
          [
              "iter",
              "method",
              "WD obj (bal)",
              "WD obj (raw)",
              "loss",
              "active%",
              "active%>1e-5",
              "test acc%",
          ],
      )
  )
  for name in ("vs_wd_raw", "vs_wd_balanced"):
    if name in summary:
      s = summary[name]
      ratios = ", ".join(
          f"{k}: {v:.3f}" if v is not None else f"{k}: n/a"
          for k, v in s["ratio"].items()
      )
      print(
          f"PathProx (balanced) {name}: stays below from iteration "
          f"{s['crossing_step']}; ratio {ratios}"
      )
  print(f"total {summary['total_seconds']:.0f}s; figures: {', '.join(figs)}")
  return summary


if __name__ == "__main__":
  main()
