"""Beyond the paper: a byte-level transformer LM, its FFN units found by discovery, pruned by PathProx.

Data: the Python standard library's own source (real text on every machine,
no download), 69 modules for training and 20 other modules for validation
(``pathprox_jax.data.load_stdlib_text``; the bytes depend on the Python
version: the JSON records the files and sizes).

Model: ``ppx.Transformer`` (pre-LayerNorm, fused-qkv causal attention, ReLU
feed-forward blocks, learned positions), byte vocabulary. Its units are found
with ``ppx.discover`` (the FFN hidden neurons; attention and the norms are
reported with reasons; residual adds cut every balancing link).

Methods, all with the same warm-up + cosine learning-rate schedule and batches:

* ``adamw``: AdamW (decoupled weight decay on all kernels), the usual
  recipe; its FFN units are then pruned by magnitude (smallest path norms
  first) to each kept fraction, without fine-tuning;
* ``adaptive_pathprox``: Adam's step with PathProx's prox in Adam's metric on
  the FFN units (coupled L2 on the other kernels; ``eps`` 1e-8, Adam's), one
  run per lambda;
* ``pathprox``: SGD + momentum with PathProx's prox, one run per lambda.

Reported: validation loss (nats and bits per byte) against the fraction of
FFN units kept, the training curves, and for every PathProx model its
compacted size and the inference latency of dense vs compact (interleaved,
median of many calls), with the output change of the compaction.

Every finished run is saved to ``results/lm_ffn/runs/<run>.json`` (and its
final parameters to ``<run>.npz``) at once; ``--resume`` skips runs already
there; ``--replot`` redraws the figure and table from the JSON alone.

Usage::

    python -m benchmarks.lm_ffn            # ~15 min on 2 CPU cores
    python -m benchmarks.lm_ffn --quick    # smoke run, 11-27 s
"""

from __future__ import annotations

import glob
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import adaptive_variants, common
from pathprox_jax.data import byte_windows, load_stdlib_text

KEEP_FRACTIONS = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05)


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="11-27 s")
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--ffn", type=int, default=256)
  p.add_argument("--seq", type=int, default=64, help="context length (bytes)")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--eval-every", type=int, default=100)
  p.add_argument("--val-windows", type=int, default=256)
  p.add_argument("--adam-lr", type=float, default=3e-3)
  p.add_argument("--adamw-wd", type=float, default=0.1)
  p.add_argument("--sgd-lr", type=float, default=0.3)
  p.add_argument("--momentum", type=float, default=0.9)
  p.add_argument(
      "--lambdas", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 2e-2, 3e-2]
  )
  p.add_argument(
      "--sgd-lambdas", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2]
  )
  p.add_argument("--rounds", type=int, default=8)
  p.add_argument("--block", type=int, default=10)
  p.add_argument(
      "--replot",
      action="store_true",
      help="only redraw the figures from the saved JSON",
  )
  args = p.parse_args(argv)
  if args.quick:
    args.dim, args.ffn, args.seq, args.batch = 32, 64, 32, 8
    args.steps, args.eval_every, args.val_windows = 40, 20, 16
    args.lambdas, args.sgd_lambdas = [1e-2], [1e-2]
    args.rounds, args.block = 2, 3
  return args


# ------------------------------------------------------------------ setup
class Setup:
  """Model, functional apply, discovered spec, data on the device."""

  def __init__(self, args):
    self.text = load_stdlib_text()
    self.model = ppx.Transformer(
        256,
        args.dim,
        args.depth,
        args.heads,
        args.ffn,
        args.seq,
        rngs=nnx.Rngs(args.seed),
    )
    f = common.functional(self.model, with_spec=False)
    self.apply, self.params = f.apply, f.params
    self.spec = ppx.discover(
        self.apply, self.params, jnp.zeros((1, args.seq), jnp.int32)
    )
    self.train = jnp.asarray(self.text.train)
    rng = np.random.default_rng(1234)
    starts = rng.integers(
        0, len(self.text.val) - args.seq - 1, args.val_windows
    )
    self.val_x, self.val_y = map(
        jnp.asarray, byte_windows(self.text.val, args.seq, starts)
    )


def schedule(lr, steps):
  return optax.warmup_cosine_decay_schedule(
      0.0, lr, max(steps // 20, 1), steps, lr * 0.05
  )


def make_tx(method, lam, args, spec):
  if method == "adamw":
    return optax.adamw(
        schedule(args.adam_lr, args.steps),
        weight_decay=args.adamw_wd,
        mask=ppx.units.kernel_mask,
    )
  if method == "adaptive_pathprox":
    return ppx.adaptive_pathprox(
        schedule(args.adam_lr, args.steps),
        lam,
        spec,
        eps=adaptive_variants.ADAM_EPS,
    )
  if method == "pathprox":
    return ppx.pathprox(
        schedule(args.sgd_lr, args.steps), lam, spec, momentum=args.momentum
    )
  raise ValueError(method)


def loss_fn(apply, params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(
      apply(params, x), y
  ).mean()


def make_runner(setup, tx, args):
  """``run(params, state, starts)``: one ``lax.scan`` over ``starts.shape[0]``
  steps, windows cut from the device-resident training bytes."""
  data, seq = setup.train, args.seq

  def windows(starts):
    cut = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (seq + 1,)))(
        starts
    )
    cut = cut.astype(jnp.int32)
    return cut[:, :-1], cut[:, 1:]

  @jax.jit
  def run(params, state, starts):
    def body(carry, st):
      p, s = carry
      x, y = windows(st)
      loss, g = jax.value_and_grad(lambda q: loss_fn(setup.apply, q, x, y))(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss

    (params, state), losses = jax.lax.scan(body, (params, state), starts)
    return params, state, losses.mean()

  return run


def make_evaluator(setup):
  @jax.jit
  def evaluate(params):
    return loss_fn(setup.apply, params, setup.val_x, setup.val_y)

  return evaluate


def ffn_fraction(params, spec) -> float:
  return float(ppx.active_units(params, spec).fraction)


def prune_to(params, spec, keep: float):
  """Zeroes the output weights of the FFN units with the smallest path norms
  so that a fraction ``keep`` of them remains (exact removal afterwards)."""
  pn = np.concatenate(
      [np.asarray(u) for u in ppx.unit_path_norms(params, spec)]
  )
  n_keep = int(round(keep * pn.size))
  cut = np.sort(pn)[::-1][n_keep - 1] if n_keep > 0 else np.inf
  groups, rest = spec.split(params)
  return spec.merge(
      [
          ppx.units.scale_units(
              x, v=(jnp.asarray(u) >= cut).astype(jnp.float32)
          )
          for x, u in zip(groups, ppx.unit_path_norms(params, spec))
      ],
      rest,
  )


# -------------------------------------------------------------------- runs
def run_one(setup, method, lam, args, progress):
  tx = make_tx(method, lam, args, setup.spec)
  run, evaluate = make_runner(setup, tx, args), make_evaluator(setup)
  params = common.copy_tree(setup.params)
  state = tx.init(params)
  rng = np.random.default_rng(args.seed)
  history, t0 = [], time.perf_counter()

  def log(step, train_loss):
    history.append({
        "step": step,
        "train_loss": train_loss,
        "val_loss": float(evaluate(params)),
        "ffn_active": ffn_fraction(params, setup.spec),
        "seconds": time.perf_counter() - t0,
    })

  log(0, float("nan"))
  bar = common.progress_bar(
      args.steps, f"{method} lam={lam:g}", disable=not progress
  )
  step = 0
  while step < args.steps:
    k = min(args.eval_every, args.steps - step)
    starts = jnp.asarray(
        rng.integers(0, len(setup.text.train) - args.seq - 1, (k, args.batch))
    )
    params, state, train_loss = run(params, state, starts)
    step += k
    log(step, float(train_loss))
    bar.update(k)
    bar.set_postfix(
        val=f"{history[-1]['val_loss']:.3f}",
        ffn=f"{history[-1]['ffn_active']:.2f}",
    )
  bar.close()
  final = history[-1]
  result = {
      "method": method,
      "lam": lam,
      "history": history,
      "val_loss": final["val_loss"],
      "ffn_active": final["ffn_active"],
      "train_seconds": time.perf_counter() - t0,
  }
  if method == "adamw":
    result["pruned"] = [
        {
            "keep": kf,
            "val_loss": float(evaluate(prune_to(params, setup.spec, kf))),
        }
        for kf in KEEP_FRACTIONS
    ]
  return result, params


def run_name(method, lam):
  return method if method == "adamw" else f"{method}_lam{lam:g}"


def save_params(path, params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  np.savez(path, **{ppx.units.path_str(k): np.asarray(v) for k, v in flat})


def load_params(path, template):
  stored = np.load(path)
  return jax.tree_util.tree_map_with_path(
      lambda k, _: jnp.asarray(stored[ppx.units.path_str(k)]), template
  )


def compact_and_time(setup, params, args):
  """Compacted parameter count and dense vs compact inference latency."""
  small, small_spec = ppx.compact(params, setup.spec)
  small_model = ppx.rebuild(setup.model, small)
  fs = common.functional(small_model, with_spec=False)
  x = setup.val_x[: args.batch]
  dense = jax.jit(setup.apply)
  compact_fn = jax.jit(fs.apply)
  err = ppx.compaction_error(
      lambda z: dense(params, z), lambda z: compact_fn(fs.params, z), x
  )
  lat = common.latency(
      {
          "dense": lambda: dense(params, x),
          "compact": lambda: compact_fn(fs.params, x),
      },
      args.rounds,
      args.block,
  )
  count = lambda tree: int(sum(np.size(a) for a in jax.tree.leaves(tree)))
  return {
      "params_dense": count(params),
      "params_compact": count(fs.params),
      "ffn_units": list(small_spec.num_units),
      "ffn_units_dense": list(setup.spec.num_units),
      "relative_output_change": err.relative,
      "latency": lat,
  }


# ----------------------------------------------------------------- figures
LABELS = {
    "adamw": "AdamW, then magnitude pruning",
    "adaptive_pathprox": "adaptive PathProx (one point per lambda)",
    "pathprox": "PathProx + momentum (one point per lambda)",
}
COLORS = {
    "adamw": "tab:blue",
    "adaptive_pathprox": "tab:purple",
    "pathprox": "tab:red",
}


def plot(runs, out_dir, tag, copy):
  plt = common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  for r in runs:
    if r["method"] == "adamw":
      pts = sorted(r["pruned"], key=lambda q: q["keep"])
      ax.plot(
          [q["keep"] for q in pts],
          [q["val_loss"] for q in pts],
          "o-",
          color=COLORS["adamw"],
          label=LABELS["adamw"],
      )
  for m in ("adaptive_pathprox", "pathprox"):
    pts = sorted((r for r in runs if r["method"] == m), key=lambda r: r["lam"])
    if pts:
      ax.plot(
          [r["ffn_active"] for r in pts],
          [r["val_loss"] for r in pts],
          "s--",
          color=COLORS[m],
          label=LABELS[m],
      )
      for r in pts:
        ax.annotate(
            f"{r['lam']:g}",
            (r["ffn_active"], r["val_loss"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
  ax.set_xlabel("fraction of FFN units kept")
  ax.set_ylabel("validation loss (nats/byte)")
  ax.set_title("validation loss vs FFN units kept")
  ax.legend(fontsize=7)
  ax = axes[1]
  for r in runs:
    h = r["history"]
    ax.plot(
        [q["step"] for q in h][1:],
        [q["val_loss"] for q in h][1:],
        color=COLORS[r["method"]],
        alpha=0.8,
        label=run_name(r["method"], r["lam"]),
    )
  ax.set_xlabel("step")
  ax.set_ylabel("validation loss (nats/byte)")
  ax.set_title("training")
  ax.legend(fontsize=6)
  return common.save_figure(
      fig, os.path.join(out_dir, f"lm_ffn{tag}.png"), copy
  )


def table(runs, compaction) -> str:
  rows = []
  for r in runs:
    rows.append([
        run_name(r["method"], r["lam"]),
        f"{r['val_loss']:.4f}",
        f"{r['val_loss'] / np.log(2):.3f}",
        f"{r['ffn_active']:.3f}",
        f"{r['train_seconds']:.0f}",
    ])
  text = common.fmt_table(
      rows,
      ["run", "val loss (nats/byte)", "bits/byte", "FFN units kept", "train s"],
  )
  adamw = next((r for r in runs if r["method"] == "adamw"), None)
  if adamw:
    text += (
        "\n\nAdamW pruned by magnitude (no fine-tuning):\n"
        + common.fmt_table(
            [
                [f"{q['keep']:.2f}", f"{q['val_loss']:.4f}"]
                for q in adamw["pruned"]
            ],
            ["kept", "val loss"],
        )
    )
  if compaction:
    rows = [
        [
            name,
            f"{c['params_dense']} -> {c['params_compact']}",
            f"{c['ffn_units']}",
            f"{c['relative_output_change']:.1e}",
            f"{c['latency']['dense']['median_ms']:.2f}",
            f"{c['latency']['compact']['median_ms']:.2f}",
            f"{c['latency']['compact']['speedup_vs_dense']['median']:.2f}x",
        ]
        for name, c in compaction.items()
    ]
    text += (
        "\n\ncompacted (exact removal of dead FFN units):\n"
        + common.fmt_table(
            rows,
            [
                "run",
                "params",
                "FFN units",
                "output change",
                "dense ms",
                "compact ms",
                "speed-up",
            ],
        )
    )
  return text


# -------------------------------------------------------------------- main
def main(argv=None):
  args = parse_args(argv)
  out, tag, run_dir = common.run_dirs("lm_ffn", args.out, args.quick)
  summary_path = os.path.join(out, f"lm_ffn{tag}.json")
  if args.replot:
    runs = [
        json.load(open(p))
        for p in sorted(glob.glob(os.path.join(run_dir, "*.json")))
    ]
    summary = (
        json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    )
    print(table(runs, summary.get("compaction")))
    return plot(runs, out, tag, args.copy_figures)
  setup = Setup(args)
  print(setup.spec.report())
  plan = (
      [("adamw", 0.0)]
      + [("adaptive_pathprox", lam) for lam in args.lambdas]
      + [("pathprox", lam) for lam in args.sgd_lambdas]
  )
  runs, compaction = [], {}
  for method, lam in plan:
    name = run_name(method, lam)
    path = os.path.join(run_dir, name + ".json")
    if (
        args.resume
        and os.path.exists(path)
        and os.path.exists(path[:-5] + ".npz")
    ):
      runs.append(json.load(open(path)))
      print(f"[{name}] done before, loaded", flush=True)
    else:
      result, params = run_one(setup, method, lam, args, not args.no_progress)
      save_params(path[:-5] + ".npz", params)
      common.save_json(path, result)
      runs.append(json.load(open(path)))
      print(
          f"[{name}] val {result['val_loss']:.4f}, FFN kept "
          f"{result['ffn_active']:.3f}, {result['train_seconds']:.0f} s",
          flush=True,
      )
  for r in runs:
    if r["method"] != "adamw":
      name = run_name(r["method"], r["lam"])
      params = load_params(os.path.join(run_dir, name + ".npz"), setup.params)
      compaction[name] = dict(
          compact_and_time(setup, params, args), batch=args.batch
      )
  summary = {
      "config": vars(args),
      "environment": common.environment(),
      "train_files": setup.text.train_files,
      "val_files": setup.text.val_files,
      "train_bytes": int(len(setup.text.train)),
      "val_bytes": int(len(setup.text.val)),
      "spec": setup.spec.report(),
      "runs": [run_name(r["method"], r["lam"]) for r in runs],
      "compaction": compaction,
  }
  common.save_json(summary_path, summary)
  print(table(runs, compaction))
  figs = plot(runs, out, tag, args.copy_figures)
  print("wrote", summary_path, *figs)
  return summary


if __name__ == "__main__":
  main()
