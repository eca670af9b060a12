"""Table 1 of the PathProx paper (and the ablations of Tables 2 and 3) at CPU scale.

Tasks (hyper-parameters: paper Table 5 and Appendix D):

* task 1: ``FactorizedMLP(3, 400)`` on the offline MNIST subset, 100 images
  per class for training (1000); validation = ``--val-size`` of the 4000
  held-out images (as in the paper, where the subset is drawn from the MNIST
  training images and validation is separate), test = the rest.
  Weight decay: lambda 1e-3, lr 0.3; PathProx: lambda 1e-4, lr 0.3; batch 200.
* task 2: ``MLP(6, 400)`` on the offline 4000/1000 split; ``--val-size``
  images are carved out of the 4000 training images. Weight decay: lambda
  3e-5, lr 0.1; PathProx: lambda 3e-4, lr 0.1; batch 200. (The paper uses
  55k MNIST images and 50k iterations.)
* tasks 3 / 4: VGG19 (no BatchNorm) on CIFAR10 / SVHN, batch 128, run only
  when the TFDS datasets are prepared in ``--data-dir`` (never downloaded);
  ``--width-multiplier`` and ``--max-steps`` make a CPU smoke run possible.

Each (task, method, seed) run is evaluated every ``--eval-every`` steps; the
reported test accuracy and sparsity (active units in the grouped layers, path
norm > 0) are those of the evaluation with the best validation accuracy.
Corrupted-data accuracy (MNIST-C average over its 15 corruptions; CIFAR10-C
average over 19 corruptions x 5 severities) is computed for that checkpoint
when the TFDS datasets exist in ``--data-dir``; otherwise a note is printed.
Mean +- standard error over seeds; runs whose parameters became non-finite
are counted as diverged and the statistics are also given without them.

Ablations: ``--weight-norm`` adds SGD + weight decay with the input weights
of every unit projected to the unit sphere after each step (Table 2);
``--no-balance`` adds PathProx without layer-wise balancing (Table 3).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common
from pathprox_jax import data as ppd

# (lr, lambda) per task and method, paper Table 5 (true labels).
HPARAMS = {
    1: {"weight_decay": (0.3, 1e-3), "pathprox": (0.3, 1e-4)},
    2: {"weight_decay": (0.1, 3e-5), "pathprox": (0.1, 3e-4)},
    3: {"weight_decay": (0.1, 1e-3), "pathprox": (0.1, 1e-3)},
    4: {"weight_decay": (0.3, 1e-3), "pathprox": (0.1, 3e-3)},
}
ABLATION_BASE = {
    "weight_norm": "weight_decay",
    "pathprox_nobalance": "pathprox",
}


@dataclasses.dataclass
class Task:
  number: int
  name: str
  make_model: Callable[[int], nnx.Module]
  data: dict
  iterations: int
  batch_size: int
  eval_every: int
  schedule: Callable[[float], Any] = lambda lr: lr
  augment: Callable | None = None
  corrupted: Callable[[], tuple[str, list]] | None = None


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="9-15 s")
  p.add_argument(
      "--tasks", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3, 4]
  )
  p.add_argument(
      "--seeds",
      type=int,
      default=3,
      help="number of seeds: --seed, --seed + 1, ...",
  )
  p.add_argument(
      "--methods",
      nargs="+",
      default=["weight_decay", "pathprox"],
      choices=["weight_decay", "pathprox", "weight_norm", "pathprox_nobalance"],
      help="base methods (the ablation flags add theirs)",
  )
  p.add_argument(
      "--iterations-task1", type=int, default=5000, help="paper: 100k"
  )
  p.add_argument(
      "--iterations-task2",
      type=int,
      default=5000,
      help="paper: 50k on 55k images",
  )
  p.add_argument("--eval-every", type=int, default=250)
  p.add_argument("--val-size", type=int, default=500)
  p.add_argument(
      "--weight-norm",
      action="store_true",
      help="add SGD + WD + unit-sphere projection (Table 2)",
  )
  p.add_argument(
      "--no-balance",
      action="store_true",
      help="add PathProx without layer-wise balancing (Table 3)",
  )
  p.add_argument(
      "--data-dir",
      default=None,
      help=(
          "TFDS data dir (MNIST-C, CIFAR10(-C), SVHN); default "
          "$TFDS_DATA_DIR or ~/tensorflow_datasets"
      ),
  )
  p.add_argument(
      "--width-multiplier",
      type=float,
      default=1.0,
      help="VGG19 channel multiplier (tasks 3/4)",
  )
  p.add_argument(
      "--max-steps",
      type=int,
      default=64000,
      help=(
          "VGG19 training steps (tasks 3/4); lr x0.1 at 50%% and "
          "75%% (the paper's epochs 80 and 120 of 160)"
      ),
  )
  p.add_argument(
      "--synthetic-cifar",
      type=int,
      default=0,
      metavar="N",
      help="(smoke test) run task 3 on N random CIFAR-shaped images",
  )
  p.add_argument(
      "--normalize-init",
      action="store_true",
      help=(
          "rescale every unit to ||w_i|| = 1 at init (function "
          "preserving) for all methods"
      ),
  )
  p.add_argument("--data-seed", type=int, default=0)
  p.add_argument(
      "--replot",
      default=None,
      metavar="JSON",
      help="only redraw the figure from a saved results JSON",
  )
  args = p.parse_args(argv)
  if args.quick:
    args.seeds = min(args.seeds, 2)
    args.iterations_task1 = min(args.iterations_task1, 30)
    args.iterations_task2 = min(args.iterations_task2, 30)
    args.eval_every = min(args.eval_every, 10)
    args.max_steps = min(args.max_steps, 6)
  return args


def _mnist_tasks(args):
  tasks = []
  if 1 in args.tasks:
    s = ppd.load_mnist_subset(100, seed=args.data_seed)
    nv = args.val_size
    d = {
        "x_train": s.x_train,
        "y_train": s.y_train,
        "x_val": s.x_test[:nv],
        "y_val": s.y_test[:nv],
        "x_test": s.x_test[nv:],
        "y_test": s.y_test[nv:],
    }
    width = 32 if args.quick else 400
    tasks.append(
        Task(
            1,
            "MNIST subset, FactorizedMLP(3, 400)",
            lambda seed: ppx.FactorizedMLP(3, width, rngs=nnx.Rngs(seed)),
            d,
            args.iterations_task1,
            200,
            args.eval_every,
            corrupted=lambda: _mnist_c(args),
        )
    )
  if 2 in args.tasks:
    s = ppd.load_mnist_subset(400, seed=args.data_seed)
    nv = args.val_size
    d = {
        "x_train": s.x_train[nv:],
        "y_train": s.y_train[nv:],
        "x_val": s.x_train[:nv],
        "y_val": s.y_train[:nv],
        "x_test": s.x_test,
        "y_test": s.y_test,
    }
    width = 32 if args.quick else 400
    tasks.append(
        Task(
            2,
            "MNIST 4000/1000, MLP(6, 400)",
            lambda seed: ppx.MLP(6, width, rngs=nnx.Rngs(seed)),
            d,
            args.iterations_task2,
            200,
            args.eval_every,
            corrupted=lambda: _mnist_c(args),
        )
    )
  if args.quick:
    for t in tasks:
      t.data = {k: v[:300] for k, v in t.data.items()}
  return tasks


def _mnist_c(args):
  return _mnist_c_cached(args.data_dir)


@functools.lru_cache(maxsize=2)
def _mnist_c_cached(data_dir):
  sets = []
  for c in ppd.MNIST_CORRUPTIONS:
    x, y = ppd.load_mnist_corrupted(c, data_dir=data_dir)
    sets.append((c, x.reshape(len(x), -1), y))
  return "MNIST-C (15 corruptions)", sets


def _cifar_c(args):
  sets = []
  for c in ppd.CIFAR10_CORRUPTIONS:
    for sev in range(1, 6):
      x, y = ppd.load_cifar10_corrupted(c, sev, data_dir=args.data_dir)
      sets.append((f"{c}_{sev}", x, y))
  return "CIFAR10-C (19 corruptions x 5 severities)", sets


def _vgg_schedule(max_steps):
  def make(lr):
    return optax.piecewise_constant_schedule(
        lr, {int(0.5 * max_steps): 0.1, int(0.75 * max_steps): 0.1}
    )

  return make


def _vgg_tasks(args):
  tasks = []
  wanted = [(3, "cifar10", "CIFAR10"), (4, "svhn_cropped", "SVHN")]
  for number, name, label in wanted:
    if number not in args.tasks:
      continue
    if number == 3 and args.synthetic_cifar:
      rng = np.random.default_rng(args.data_seed)
      n = args.synthetic_cifar
      mk = lambda k: (
          rng.normal(size=(k, 32, 32, 3)).astype(np.float32),
          rng.integers(0, 10, k).astype(np.int32),
      )
      (xt, yt), (xv, yv), (xs, ys) = (
          mk(n),
          mk(max(n // 4, 8)),
          mk(max(n // 4, 8)),
      )
      d = {
          "x_train": xt,
          "y_train": yt,
          "x_val": xv,
          "y_val": yv,
          "x_test": xs,
          "y_test": ys,
      }
      label = "synthetic CIFAR-shaped data"
    else:
      try:
        s = ppd.load_tfds(name, data_dir=args.data_dir)
      except (ppd.DatasetNotPreparedError, ImportError) as e:
        print(
            f"NOTE: task {number} skipped: {name} is not available in "
            f"--data-dir ({str(e).splitlines()[0]})",
            flush=True,
        )
        continue
      d = {
          "x_train": s.x_train,
          "y_train": s.y_train,
          "x_val": s.x_val,
          "y_val": s.y_val,
          "x_test": s.x_test,
          "y_test": s.y_test,
      }
    wm = args.width_multiplier
    augment = ppd.random_crop_flip if number == 3 else None  # SVHN: none
    tasks.append(
        Task(
            number,
            f"{label}, VGG19 x{wm:g}",
            lambda seed, wm=wm: ppx.VGG19(10, wm, rngs=nnx.Rngs(seed)),
            d,
            args.max_steps,
            128,
            min(args.eval_every, args.max_steps),
            schedule=_vgg_schedule(args.max_steps),
            augment=augment,
            corrupted=(lambda: _cifar_c(args))
            if number == 3 and not args.synthetic_cifar
            else None,
        )
    )
  return tasks


def make_evaluator(apply_fn, spec, data, chunk=1000):
  xv, yv = jnp.asarray(data["x_val"]), jnp.asarray(data["y_val"])
  xt, yt = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])

  @jax.jit
  def evaluate(params):
    return {
        "val_acc": common.accuracy(
            common.predict_batched(apply_fn, params, xv, chunk), yv
        ),
        "test_acc": common.accuracy(
            common.predict_batched(apply_fn, params, xt, chunk), yt
        ),
        "active": ppx.active_units(params, spec, 0.0).fraction,
        "active_1e-5": ppx.active_units(params, spec, 1e-5).fraction,
    }

  return evaluate


def corrupted_accuracy(apply_fn, params, sets, chunk=1000):
  acc_fn = jax.jit(lambda p, x, y: jnp.sum(jnp.argmax(apply_fn(p, x), -1) == y))
  accs = {}
  for name, x, y in sets:
    correct = sum(
        int(
            acc_fn(
                params,
                jnp.asarray(x[i : i + chunk]),
                jnp.asarray(y[i : i + chunk]),
            )
        )
        for i in range(0, len(x), chunk)
    )
    accs[name] = correct / len(x)
  return float(np.mean(list(accs.values()))), accs


def mean_se(values):
  v = np.asarray([x for x in values if x is not None], np.float64)
  if len(v) == 0:
    return None, None
  se = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
  return float(np.mean(v)), se


def run_one(task, method, seed, args, corrupted_sets):
  hp = HPARAMS[task.number][ABLATION_BASE.get(method, method)]
  lr, lam = hp
  model = task.make_model(seed)
  f = common.functional(model)
  params = f.params
  if args.normalize_init:
    params = ppx.normalize_units(params, f.spec)
  tx, penalty = common.make_method(method, task.schedule(lr), lam, f.spec)
  run = common.make_chunk_runner(f.apply, tx, penalty, augment=task.augment)
  evaluate = make_evaluator(f.apply, f.spec, task.data)
  best = {"val_acc": -1.0}
  keep = corrupted_sets is not None

  def on_eval(step, p, m):
    if m["val_acc"] > best["val_acc"]:
      best.clear()
      best.update(m)
      if keep:
        best["params"] = common.copy_tree(p)

  t0 = time.perf_counter()
  final, history = common.train(
      common.copy_tree(params),
      tx,
      run,
      task.data["x_train"],
      task.data["y_train"],
      iterations=task.iterations,
      batch_size=min(task.batch_size, len(task.data["x_train"])),
      eval_every=task.eval_every,
      evaluate=evaluate,
      seed=seed,
      desc=f"task {task.number} {method} seed {seed}",
      progress=not args.no_progress,
      on_eval=on_eval,
  )
  res = {
      "task": task.number,
      "method": method,
      "seed": seed,
      "lr": lr,
      "lam": lam,
      "best_step": best["step"],
      "val_acc": best["val_acc"],
      "test_acc": best["test_acc"],
      "active": best["active"],
      "active_1e-5": best["active_1e-5"],
      "final": {k: v for k, v in history[-1].items()},
      "diverged": not all(
          bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final)
      ),
      "seconds": time.perf_counter() - t0,
      "history": history,
  }
  if keep:
    res["corrupted_acc"], res["corrupted_detail"] = corrupted_accuracy(
        f.apply, best["params"], corrupted_sets
    )
  return res


def plot_runs(results, args, path):
  """Validation accuracy and active units during training: one thin line per
  seed, a thick line for the mean over the runs that did not diverge."""
  plt = common.pyplot()
  tasks = list(dict.fromkeys((r["task"], r["task_name"]) for r in results))
  methods = list(dict.fromkeys(r["method"] for r in results))
  fig, axes = plt.subplots(
      2, len(tasks), figsize=(5.5 * len(tasks), 7), squeeze=False, sharex="col"
  )
  for ax, ax2, (number, name) in zip(axes[0], axes[1], tasks):
    lows = []
    for method in methods:
      rs = [r for r in results if r["task"] == number and r["method"] == method]
      if not rs:
        continue
      c = common.METHOD_COLORS[method]
      steps = [h["step"] for h in rs[0]["history"]]
      for r in rs:
        ax.plot(
            steps,
            [100 * h["val_acc"] for h in r["history"]],
            color=c,
            lw=0.7,
            alpha=0.4,
            ls=":" if r["diverged"] else "-",
        )
        ax2.plot(
            steps,
            [100 * h["active"] for h in r["history"]],
            color=c,
            lw=0.7,
            alpha=0.4,
            ls=":" if r["diverged"] else "-",
        )
      ok = [r for r in rs if not r["diverged"]]
      n_div = len(rs) - len(ok)
      label = (
          f"{common.METHOD_LABELS[method]} (lr {rs[0]['lr']:g}, lambda "
          f"{rs[0]['lam']:g}); {len(rs)} seeds"
          + (f", {n_div} diverged (dotted, not in mean)" if n_div else "")
      )
      if ok:
        val = np.mean([[h["val_acc"] for h in r["history"]] for r in ok], 0)
        act = np.mean([[h["active"] for h in r["history"]] for r in ok], 0)
        ax.plot(steps, 100 * val, color=c, lw=2, label=label)
        ax2.plot(steps, 100 * act, color=c, lw=2)
        lows.append(np.min(100 * val[1:]) if len(val) > 1 else 0)
    if lows:
      ax.set_ylim(max(0, min(lows) - 3), 100)
    ax.set_ylabel("validation accuracy (%)", fontsize=8)
    ax.set_title(f"Task {number}: {name}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("active units (%), path norm > 0", fontsize=8)
    ax2.set_ylim(0, 105)
    ax2.grid(alpha=0.3)
  fig.suptitle(
      "Table 1 runs (CPU scale); thin: single seeds, thick: mean of "
      "non-diverged seeds"
      + (" [QUICK]" if args.quick else ""),
      fontsize=10,
  )
  fig.tight_layout()
  paths = common.save_figure(fig, path, args.copy_figures)
  return paths


def replot(args):
  import json
  import os

  with open(args.replot) as fh:
    saved = json.load(fh)
  name = os.path.basename(args.replot)[: -len(".json")]
  figs = plot_runs(
      saved["runs"],
      args,
      os.path.join(os.path.dirname(args.replot), name + ".png"),
  )
  print("figures:", ", ".join(figs))
  return figs


def main(argv=None):
  args = parse_args(argv)
  if args.replot:
    return replot(args)
  out = common.results_dir("generalization", args.out)
  tag = "_quick" if args.quick else ""
  t_start = time.perf_counter()
  methods = list(
      dict.fromkeys(
          args.methods
          + (["weight_norm"] if args.weight_norm else [])
          + (["pathprox_nobalance"] if args.no_balance else [])
      )
  )
  tasks = _mnist_tasks(args) + _vgg_tasks(args)
  run_dir = common.run_dirs("generalization", args.out, args.quick)[2]
  config = common.run_config(
      args, ("tasks", "methods", "seeds", "seed", "weight_norm", "no_balance")
  )
  notes, results = [], []
  for task in tasks:
    corrupted_sets, corrupted_name = None, None
    if task.corrupted is not None:
      try:
        corrupted_name, corrupted_sets = task.corrupted()
      except (ppd.DatasetNotPreparedError, ImportError) as e:
        note = (
            f"task {task.number}: corrupted-data accuracy skipped "
            "(dataset not available in --data-dir: "
            f"{str(e).splitlines()[0]})"
        )
        print("NOTE: " + note, flush=True)
        notes.append(note)
    for method in methods:
      for seed in range(args.seed, args.seed + args.seeds):
        r = common.cached_run(
            run_dir,
            f"task{task.number}_{method}_seed{seed}",
            dict(
                config,
                task=task.number,
                method=method,
                seed=seed,
                corrupted=corrupted_name,
            ),
            args.resume,
            lambda: run_one(task, method, seed, args, corrupted_sets),
        )
        r["task_name"] = task.name
        r["corrupted_name"] = corrupted_name
        results.append(r)
        print(
            f"task {task.number} {method:>18s} seed {seed}: test acc "
            f"{100 * r['test_acc']:.2f}% (best val {100 * r['val_acc']:.2f}%"
            f" at {r['best_step']}), active {100 * r['active']:.2f}%"
            + (
                f", corrupted {100 * r['corrupted_acc']:.2f}%"
                if "corrupted_acc" in r
                else ""
            )
            + (" DIVERGED (non-finite parameters)" if r["diverged"] else "")
            + f"  [{r['seconds']:.0f}s]",
            flush=True,
        )

  table = []
  for task in tasks:
    for method in methods:
      rs = [
          r
          for r in results
          if r["task"] == task.number and r["method"] == method
      ]
      row = {
          "task": task.number,
          "task_name": task.name,
          "method": method,
          "seeds": len(rs),
          "lr": rs[0]["lr"],
          "lam": rs[0]["lam"],
          "iterations": task.iterations,
      }
      for key in ("test_acc", "active", "active_1e-5", "corrupted_acc"):
        row[key] = mean_se([r.get(key) for r in rs])
      ok = [r for r in rs if not r["diverged"]]
      row["diverged"] = len(rs) - len(ok)
      for key in ("test_acc", "active", "corrupted_acc"):
        row[key + "_finite_runs"] = mean_se([r.get(key) for r in ok])
      table.append(row)
  seconds = time.perf_counter() - t_start

  figs = []
  if results:
    figs = plot_runs(results, args, f"{out}/generalization{tag}.png")

  common.save_json(
      f"{out}/generalization{tag}.json",
      {
          "config": vars(args),
          "environment": common.environment(),
          "notes": notes,
          "table": table,
          "seconds": seconds,
          "figures": figs,
          "runs": [{k: v for k, v in r.items()} for r in results],
      },
  )

  def pm(v, pct=True):
    if v[0] is None:
      return "n/a"
    s = 100 if pct else 1
    return f"{s * v[0]:.2f} +- {s * v[1]:.2f}"

  rows = [
      [
          r["task"],
          r["method"],
          f"{r['lr']:g}",
          f"{r['lam']:g}",
          r["iterations"],
          r["seeds"],
          pm(r["test_acc"]),
          pm(r["active"]),
          pm(r["corrupted_acc"]),
          r["diverged"],
          pm(r["test_acc_finite_runs"]),
          pm(r["active_finite_runs"]),
      ]
      for r in table
  ]
  print()
  print(
      common.fmt_table(
          rows,
          [
              "task",
              "method",
              "lr",
              "lambda",
              "iters",
              "seeds",
              "test acc %",
              "active units %",
              "corrupted acc %",
              "diverged",
              "test acc % (finite)",
              "active % (finite)",
          ],
      )
  )
  for n in notes:
    print("NOTE: " + n)
  print(f"total {seconds:.0f}s; figure: {', '.join(figs)}")
  return {"table": table, "notes": notes, "seconds": seconds}


if __name__ == "__main__":
  main()
