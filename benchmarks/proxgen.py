"""ProxGen benchmark: proximal vs subgradient Adam, and adaptive PathProx on Task 1.

Part ``sparse`` (ProxGen paper section 4, "Training sparse neural networks",
at CPU scale): offline MNIST, 400 images per class for training (4000) and
the other 1000 for testing, an MLP (784-H-H-10) and a small CNN defined here
(two 3x3 stride-2 convolutions, 8 and 16 channels, ReLU, one dense layer).
Every kernel is regularised with ``lambda * R``, ``R`` one of l1, l0, l1/2,
l2/3; biases are not. Methods, all from the same initialisation, same batches,
Adam ``lr`` (default 1e-3), ``b1 = 0.9``, ``b2 = 0.999``, bias correction on:

* ``proxgen``: :func:`~pathprox_jax.transforms.proxgen.proxgen_adam` with the
  matching closed-form prox;
* ``subgrad``: Adam on ``loss + lambda R`` through its subgradient
  (:func:`~pathprox_jax.transforms.baselines.subgradient_adam`, guard 1e-8);
  for l0, whose gradient is 0 wherever it exists, this is plain Adam;
* ``prox_sgd`` (l1 only, as in the paper): Prox-SGD's two-stage update
  (:func:`~pathprox_jax.transforms.baselines.prox_sgd_two_stage`).

Reported: the regularised training objective ``F = loss(train set) + lambda
R(theta)`` against iterations (with the exact ``R``: l0 counts non-zeros), and
test accuracy against sparsity over a sweep of ``lambda``. Sparsity is the
fraction of kernel entries with ``|theta| <= --prune-threshold`` (default
1e-3 = the Adam step size, the band in which subgradient iterates oscillate);
those entries are set to zero before measuring the test accuracy, for every
method alike. The fraction of *exact* zeros is recorded too.

Part ``task1``: the PathProx paper's Task 1 (FactorizedMLP(3, 400), 1000
training images, batch 200, lambda 1e-4). SGD methods use lr 0.3 (the paper's
value): SGD + weight decay and PathProx. Adam methods use lr 1e-3 (Adam's
usual default, not tuned): Adam + coupled L2 decay, adaptive PathProx
(:func:`~pathprox_jax.adaptive_pathprox`, ``eps`` 1e-8 as in the recorded
runs) with and without balancing; the ablation ``adaptive_pathprox_stale`` is
:func:`benchmarks.adaptive_variants.adaptive_pathprox_variant` with
``rescale_moments=False``. Reported: the weight decay objective of the balanced
representation ``loss + lambda * path_norm_penalty`` on the training set,
active units and test accuracy against iterations.

``python -m benchmarks.proxgen`` runs both parts with the defaults (see
``benchmarks/RESULTS.md``, "ProxGen and adaptive PathProx", for the measured
numbers and runtime); ``--quick`` is a smoke run (28-49 s). Outputs:
``results/proxgen/proxgen*.json`` and ``proxgen_*.png`` (copied into
``docs/figures/`` unless ``--quick``).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import adaptive_variants, common
from pathprox_jax.data import load_mnist_subset

REGS = {
    "l1": (1.0, ppx.prox.prox_l1),
    "l0": (0.0, ppx.prox.prox_l0),
    "l1/2": (0.5, ppx.prox.prox_l_half),
    "l2/3": (2.0 / 3.0, ppx.prox.prox_l_two_thirds),
}
# lambda grids: chosen once, from 600-step runs on the MLP with a 5-value
# grid per regulariser, to span ~50% to ~95% sparsity for ProxGen-Adam; every
# method runs on the same grid; the CNN (slower on CPU) uses its first and
# last value.
DEFAULT_LAMBDAS = {
    "l1": (1e-4, 3e-4, 1e-3),
    "l0": (1e-6, 1e-5, 1e-4),
    "l1/2": (1e-5, 3e-5, 1e-4),
    "l2/3": (1e-5, 3e-5, 1e-4),
}
SPARSE_METHODS = {
    "proxgen": "ProxGen-Adam",
    "subgrad": "Subgradient Adam",
    "prox_sgd": "Prox-SGD (two-stage)",
}
SPARSE_COLORS = {
    "proxgen": "tab:red",
    "subgrad": "tab:blue",
    "prox_sgd": "tab:green",
}
TASK1_METHODS = {
    "weight_decay": ("SGD + weight decay (lr 0.3)", "tab:blue"),
    "pathprox": ("PathProx (lr 0.3)", "tab:red"),
    "adam_l2": ("Adam + L2 (lr 1e-3)", "tab:cyan"),
    "adaptive_pathprox": ("Adaptive PathProx (lr 1e-3)", "tab:purple"),
    "adaptive_pathprox_nobalance": (
        "Adaptive PathProx, no balancing",
        "tab:pink",
    ),
    # ablation, not in the default list: balancing without transforming the
    # Adam moments (stale preconditioner after every rescaling)
    "adaptive_pathprox_stale": (
        "Adaptive PathProx, stale moments",
        "tab:olive",
    ),
}
DEFAULT_TASK1 = (
    "weight_decay",
    "pathprox",
    "adam_l2",
    "adaptive_pathprox",
    "adaptive_pathprox_nobalance",
)


class SmallCNN(nnx.Module):
  """Two 3x3 stride-2 convolutions (8, 16 channels, ReLU) and a dense layer."""

  def __init__(self, rngs: nnx.Rngs, channels=(8, 16), num_classes=10):
    c1, c2 = channels
    self.conv1 = nnx.Conv(1, c1, (3, 3), strides=(2, 2), rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), strides=(2, 2), rngs=rngs)
    self.dense = nnx.Linear(7 * 7 * c2, num_classes, rngs=rngs)

  def __call__(self, x):
    x = x.reshape(x.shape[0], 28, 28, 1)
    x = nnx.relu(self.conv1(x))
    x = nnx.relu(self.conv2(x))
    return self.dense(x.reshape(x.shape[0], -1))


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="28-49 s")
  p.add_argument(
      "--parts",
      nargs="+",
      default=["sparse", "task1"],
      choices=["sparse", "task1"],
  )
  p.add_argument(
      "--models",
      nargs="+",
      default=["mlp", "cnn"],
      choices=["mlp", "cnn"],
      help="models of the sparse part",
  )
  p.add_argument("--regs", nargs="+", default=list(REGS), choices=list(REGS))
  p.add_argument(
      "--lambdas",
      nargs="+",
      default=[],
      metavar="REG=V1,V2,...",
      help="override a lambda grid, e.g. l1=1e-4,3e-4",
  )
  p.add_argument("--sparse-lr", type=float, default=1e-3)
  p.add_argument("--mlp-steps", type=int, default=800)
  p.add_argument("--cnn-steps", type=int, default=300)
  p.add_argument("--sparse-batch", type=int, default=128)
  p.add_argument("--sparse-eval-every", type=int, default=100)
  p.add_argument("--mlp-width", type=int, default=256)
  p.add_argument("--train-per-class", type=int, default=400)
  p.add_argument("--prune-threshold", type=float, default=1e-3)
  p.add_argument("--task1-steps", type=int, default=1200)
  p.add_argument("--task1-eval-every", type=int, default=100)
  p.add_argument("--task1-width", type=int, default=400)
  p.add_argument("--task1-lam", type=float, default=1e-4)
  p.add_argument("--sgd-lr", type=float, default=0.3)
  p.add_argument("--adam-lr", type=float, default=1e-3)
  p.add_argument(
      "--task1-methods",
      nargs="+",
      default=list(DEFAULT_TASK1),
      choices=list(TASK1_METHODS),
  )
  p.add_argument("--tag", default="", help="suffix for the output file names")
  p.add_argument(
      "--task1-init-imbalance",
      type=float,
      default=1.0,
      help=(
          "function-preserving rescale of the Task 1 init: the "
          "first group's output layer (and the next input bias) "
          "times S, the second group's output kernel divided by "
          "S (tests balancing with Adam's moments)"
      ),
  )
  args = p.parse_args(argv)
  grids = dict(DEFAULT_LAMBDAS)
  for item in args.lambdas:
    reg, _, values = item.partition("=")
    if reg not in REGS or not values:
      p.error(
          f"--lambdas expects REG=V1,V2 with REG in {list(REGS)}; got {item!r}"
      )
    grids[reg] = tuple(float(v) for v in values.split(","))
  args.grids = grids
  if args.quick:
    args.mlp_steps = min(args.mlp_steps, 20)
    args.cnn_steps = min(args.cnn_steps, 10)
    args.sparse_eval_every = min(args.sparse_eval_every, 10)
    args.mlp_width = min(args.mlp_width, 32)
    args.train_per_class = min(args.train_per_class, 40)
    args.grids = {k: v[1:2] for k, v in grids.items()}
    if args.regs == list(REGS):  # one convex and one non-convex regulariser
      args.regs = ["l1", "l1/2"]
    args.task1_steps = min(args.task1_steps, 20)
    args.task1_eval_every = min(args.task1_eval_every, 10)
    args.task1_width = min(args.task1_width, 32)
  return args


# ---------------------------------------------------------------- sparse part
def lq_penalty(params, q: float) -> jax.Array:
  """``sum |theta|^q`` over kernels; ``q = 0`` counts non-zeros."""
  total = jnp.zeros([], jnp.float32)
  for leaf, on in zip(
      jax.tree.leaves(params), jax.tree.leaves(ppx.units.kernel_mask(params))
  ):
    if on:
      total += (
          jnp.sum(leaf != 0).astype(jnp.float32)
          if q == 0.0
          else jnp.sum(jnp.abs(leaf) ** q)
      )
  return total


def make_sparse_evaluator(apply_fn, q, threshold, data):
  xt, yt = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xs, ys = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

  @jax.jit
  def evaluate(params, lam):
    loss = common.cross_entropy(
        common.predict_batched(apply_fn, params, xt), yt
    )
    mask = ppx.units.kernel_mask(params)
    pruned = jax.tree.map(
        lambda a, m: jnp.where(jnp.abs(a) <= threshold, 0.0, a) if m else a,
        params,
        mask,
    )
    kernels = [
        a for a, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m
    ]
    n = sum(a.size for a in kernels)
    exact = sum(jnp.sum(a == 0) for a in kernels) / n
    small = sum(jnp.sum(jnp.abs(a) <= threshold) for a in kernels) / n
    reg = lq_penalty(params, q)
    return {
        "objective": loss + lam * reg,
        "loss": loss,
        "penalty": reg,
        "sparsity_exact": exact,
        "sparsity": small,
        "test_acc": common.accuracy(
            common.predict_batched(apply_fn, params, xs), ys
        ),
        "test_acc_pruned": common.accuracy(
            common.predict_batched(apply_fn, pruned, xs), ys
        ),
    }

  return evaluate


def sparse_tx(method: str, reg: str, lr: float, lam: float):
  """``inject_hyperparams`` transforms: one compilation serves every lambda."""
  q, prox = REGS[reg]
  if method == "proxgen":
    return optax.inject_hyperparams(
        ppx.proxgen_adam, static_args=("prox", "mask")
    )(learning_rate=lr, weight_decay=lam, prox=prox)
  if method == "prox_sgd":
    return optax.inject_hyperparams(
        ppx.transforms.prox_sgd_two_stage, static_args=("prox", "mask")
    )(learning_rate=lr, weight_decay=lam, prox=prox)
  if method == "subgrad":
    if q == 0.0:  # zero gradient a.e.: the subgradient method is plain Adam
      return optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    return optax.inject_hyperparams(
        ppx.transforms.subgradient_adam, static_args=("q", "guard", "mask")
    )(learning_rate=lr, weight_decay=lam, q=q)
  raise ValueError(method)


def run_sparse(args, model_name, data, progress):
  if model_name == "mlp":
    model = ppx.MLP(3, args.mlp_width, rngs=nnx.Rngs(args.seed))
    steps, grids = args.mlp_steps, args.grids
  else:
    model = SmallCNN(nnx.Rngs(args.seed))
    steps = args.cnn_steps
    grids = {k: v[:: max(len(v) - 1, 1)] for k, v in args.grids.items()}
  f = common.functional(model, with_spec=False)
  out = {}
  for reg in args.regs:
    q = REGS[reg][0]
    evaluator = make_sparse_evaluator(f.apply, q, args.prune_threshold, data)
    methods = ["proxgen", "subgrad"] + (["prox_sgd"] if reg == "l1" else [])
    out[reg] = {}
    for method in methods:
      run = common.make_chunk_runner(
          f.apply, sparse_tx(method, reg, args.sparse_lr, 0.0)
      )
      out[reg][method] = []
      for lam in grids[reg]:
        tx = sparse_tx(method, reg, args.sparse_lr, lam)
        t0 = time.perf_counter()
        _, history = common.train(
            common.copy_tree(f.params),
            tx,
            run,
            data.x_train,
            data.y_train,
            iterations=steps,
            batch_size=args.sparse_batch,
            eval_every=args.sparse_eval_every,
            evaluate=functools.partial(evaluator, lam=jnp.float32(lam)),
            seed=args.seed,
            desc=f"{model_name} {reg} {method} {lam:g}",
            progress=progress,
            postfix=("objective", "sparsity", "test_acc_pruned"),
        )
        seconds = time.perf_counter() - t0
        out[reg][method].append(
            {"lam": lam, "history": history, "seconds": seconds}
        )
        h = history[-1]
        print(
            f"{model_name:>4s} {reg:>5s} {method:>9s} lam={lam:<8g} "
            f"F={h['objective']:.4f} loss={h['loss']:.4f} "
            f"sparsity={100 * h['sparsity']:.1f}% "
            f"(exact {100 * h['sparsity_exact']:.1f}%) "
            f"acc={100 * h['test_acc']:.2f}% "
            f"pruned acc={100 * h['test_acc_pruned']:.2f}% [{seconds:.0f}s]",
            flush=True,
        )
  return out


def plot_sparse(results, model_name, args, path, copy):
  plt = common.pyplot()
  regs = list(results)
  fig, axes = plt.subplots(
      2, len(regs), figsize=(4.2 * len(regs), 7), squeeze=False
  )
  for j, reg in enumerate(regs):
    ax = axes[0, j]
    for method, runs in results[reg].items():
      mid = runs[len(runs) // 2]
      h = mid["history"]
      label = SPARSE_METHODS[method]
      if method == "subgrad" and reg == "l0":
        label = "Adam (l0 gradient = 0)"
      ax.plot(
          [r["step"] for r in h],
          [r["objective"] for r in h],
          color=SPARSE_COLORS[method],
          label=label,
      )
    ax.set_yscale("log")
    ax.set_title(
        f"{reg}, lambda ="
        f" {results[reg]['proxgen'][len(results[reg]['proxgen']) // 2]['lam']:g}"
    )
    ax.set_xlabel("iteration")
    if j == 0:
      ax.set_ylabel("F = train loss + lambda R")
    ax.legend(fontsize=7)
    ax = axes[1, j]
    for method, runs in results[reg].items():
      xs = [100 * r["history"][-1]["sparsity"] for r in runs]
      ys = [100 * r["history"][-1]["test_acc_pruned"] for r in runs]
      ax.plot(
          xs,
          ys,
          "o-",
          color=SPARSE_COLORS[method],
          label=SPARSE_METHODS[method],
      )
      for r, x, y in zip(runs, xs, ys):
        ax.annotate(
            f"{r['lam']:.0e}",
            (x, y),
            fontsize=6,
            textcoords="offset points",
            xytext=(2, 2),
        )
    ax.set_xlabel(
        f"sparsity: % kernel entries with |w| <= {args.prune_threshold:g}"
    )
    if j == 0:
      ax.set_ylabel("test accuracy after pruning them (%)")
  fig.suptitle(
      f"ProxGen vs subgradient Adam, {model_name.upper()} on MNIST "
      f"({10 * args.train_per_class} train images), Adam lr "
      f"{args.sparse_lr:g}"
  )
  fig.tight_layout()
  paths = common.save_figure(fig, path, copy)
  return paths


# ----------------------------------------------------------------- task 1
def imbalance(params, spec, s):
  """Moves a scale ``s`` from group 1 to group 0 (group 0's output layer and
  group 1's input bias times ``s``, group 1's output kernel over ``s``): the
  function is unchanged, the first two groups' path norms are multiplied by
  ``s`` and ``1/s``."""
  groups, rest = spec.split(params)
  groups[0] = ppx.units.scale_units(groups[0], v=s, c=s)
  groups[1] = ppx.units.scale_units(groups[1], b=s, v=1.0 / s)
  return spec.merge(groups, rest)


def task1_tx(method, args, spec):
  lam = args.task1_lam
  if method == "weight_decay":
    return common.weight_decay_sgd(args.sgd_lr, lam)
  if method == "pathprox":
    return ppx.pathprox(args.sgd_lr, lam, spec)
  if method == "adam_l2":
    return optax.chain(common.kernel_decay(lam), optax.adam(args.adam_lr))
  eps = adaptive_variants.ADAM_EPS
  if method == "adaptive_pathprox":
    return ppx.adaptive_pathprox(args.adam_lr, lam, spec, eps=eps)
  if method == "adaptive_pathprox_nobalance":
    return ppx.adaptive_pathprox(
        args.adam_lr, lam, spec, eps=eps, balance=False
    )
  if method == "adaptive_pathprox_stale":
    return adaptive_variants.adaptive_pathprox_variant(
        args.adam_lr, lam, spec, eps=eps, rescale_moments=False
    )
  raise ValueError(method)


def run_task1(args, progress):
  data = load_mnist_subset(100, seed=0)
  model = ppx.FactorizedMLP(3, args.task1_width, rngs=nnx.Rngs(args.seed))
  f = common.functional(model)
  lam = args.task1_lam
  init = f.params
  if args.task1_init_imbalance != 1.0:
    init = imbalance(init, f.spec, args.task1_init_imbalance)
  xt, yt = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xs, ys = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

  @jax.jit
  def evaluate(params):
    loss = common.cross_entropy(common.predict_batched(f.apply, params, xt), yt)
    pn = ppx.path_norm_penalty(params, f.spec)
    return {
        "objective": loss + lam * pn,
        "loss": loss,
        "objective_raw": loss + lam * ppx.weight_decay_penalty(params),
        "active": ppx.active_units(params, f.spec, 0.0).fraction,
        "test_acc": common.accuracy(
            common.predict_batched(f.apply, params, xs), ys
        ),
    }

  out = {}
  for method in args.task1_methods:
    tx = task1_tx(method, args, f.spec)
    run = common.make_chunk_runner(f.apply, tx)
    t0 = time.perf_counter()
    _, history = common.train(
        common.copy_tree(init),
        tx,
        run,
        data.x_train,
        data.y_train,
        iterations=args.task1_steps,
        batch_size=200,
        eval_every=args.task1_eval_every,
        evaluate=evaluate,
        seed=args.seed,
        desc=f"task1 {method}",
        progress=progress,
        postfix=("objective", "active", "test_acc"),
    )
    seconds = time.perf_counter() - t0
    out[method] = {"history": history, "seconds": seconds}
    h = history[-1]
    print(
        f"task1 {method:>28s}: F_bal={h['objective']:.4f} "
        f"loss={h['loss']:.2e} active={100 * h['active']:.1f}% "
        f"test acc={100 * h['test_acc']:.2f}% [{seconds:.0f}s]",
        flush=True,
    )
  return out


def plot_task1(results, args, path, copy):
  plt = common.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for method, r in results.items():
    label, color = TASK1_METHODS[method]
    h = r["history"]
    steps = [x["step"] for x in h]
    axes[0].plot(steps, [x["objective"] for x in h], color=color, label=label)
    axes[1].plot(steps, [100 * x["active"] for x in h], color=color)
    axes[2].plot(steps, [100 * x["test_acc"] for x in h], color=color)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("loss + lambda * path-norm penalty (train)")
  axes[1].set_ylabel("active units (%)")
  axes[2].set_ylabel("test accuracy (%)")
  for ax in axes:
    ax.set_xlabel("iteration")
  axes[0].legend(fontsize=8)
  extra = ""
  if args.task1_init_imbalance != 1.0:
    extra = (
        f"; init rescaled by {args.task1_init_imbalance:g} "
        "(function-preserving, unbalanced)"
    )
  fig.suptitle(
      f"Task 1: FactorizedMLP(3, {args.task1_width}), 1000 MNIST "
      f"images, batch 200, lambda {args.task1_lam:g}{extra}"
  )
  fig.tight_layout()
  paths = common.save_figure(fig, path, copy)
  return paths


# --------------------------------------------------------------------- main
def summarize_sparse(res):
  rows = []
  for model_name, per_model in res.items():
    for reg, per_reg in per_model.items():
      for method, runs in per_reg.items():
        for r in runs:
          h = r["history"][-1]
          rows.append([
              model_name,
              reg,
              method,
              f"{r['lam']:g}",
              f"{h['objective']:.4f}",
              f"{h['loss']:.4f}",
              f"{100 * h['sparsity_exact']:.1f}",
              f"{100 * h['sparsity']:.1f}",
              f"{100 * h['test_acc']:.2f}",
              f"{100 * h['test_acc_pruned']:.2f}",
          ])
  return rows


def main(argv=None):
  args = parse_args(argv)
  out = common.results_dir("proxgen", args.out)
  tag = ("_" + args.tag if args.tag else "") + ("_quick" if args.quick else "")
  copy = args.copy_figures or not args.quick
  progress = not args.no_progress
  t_start = time.perf_counter()
  results = {
      "config": {k: v for k, v in vars(args).items()},
      "environment": common.environment(),
      "seconds": {},
  }
  figures = []
  run_dir = common.run_dirs("proxgen", args.out, args.quick)[2]
  config = common.run_config(args, ("parts", "models"))
  if "sparse" in args.parts:
    data = load_mnist_subset(args.train_per_class, seed=0)
    results["sparse"] = {}
    for model_name in args.models:
      t0 = time.perf_counter()
      res = common.cached_run(
          run_dir,
          f"sparse_{model_name}{tag}",
          dict(config, part="sparse", model=model_name),
          args.resume,
          lambda: run_sparse(args, model_name, data, progress),
      )
      results["sparse"][model_name] = res
      results["seconds"][f"sparse_{model_name}"] = time.perf_counter() - t0
      figures += plot_sparse(
          res,
          model_name,
          args,
          f"{out}/proxgen_sparse_{model_name}{tag}.png",
          copy,
      )
    print()
    print(
        common.fmt_table(
            summarize_sparse(results["sparse"]),
            [
                "model",
                "reg",
                "method",
                "lambda",
                "F",
                "loss",
                "exact0%",
                "sparsity%",
                "acc%",
                "pruned acc%",
            ],
        )
    )
  if "task1" in args.parts:
    t0 = time.perf_counter()
    res = common.cached_run(
        run_dir,
        f"task1{tag}",
        dict(config, part="task1"),
        args.resume,
        lambda: run_task1(args, progress),
    )
    results["task1"] = res
    results["seconds"]["task1"] = time.perf_counter() - t0
    figures += plot_task1(res, args, f"{out}/proxgen_task1{tag}.png", copy)
    rows = []
    for method, r in res.items():
      h = r["history"]
      for step in sorted({len(h) // 2, len(h) - 1}):
        x = h[step]
        rows.append([
            x["step"],
            method,
            f"{x['objective']:.4f}",
            f"{x['objective_raw']:.4f}",
            f"{x['loss']:.2e}",
            f"{100 * x['active']:.1f}",
            f"{100 * x['test_acc']:.2f}",
        ])
    print()
    print(
        common.fmt_table(
            rows,
            [
                "iter",
                "method",
                "F balanced",
                "F raw",
                "loss",
                "active%",
                "test acc%",
            ],
        )
    )
  results["seconds"]["total"] = time.perf_counter() - t_start
  results["figures"] = figures
  common.save_json(f"{out}/proxgen{tag}.json", results)
  print(
      f"\ntotal {results['seconds']['total']:.0f}s; wrote"
      f" {out}/proxgen{tag}.json and {', '.join(figures)}"
  )
  return results


if __name__ == "__main__":
  main()
