"""What compaction buys: size, FLOPs and inference latency before and after.

Two networks are trained with PathProx until units die, compacted with
:func:`pathprox_jax.compact.compact` (threshold 0: exact) and measured
before and after:

* **Task 1** (the paper's setting): ``FactorizedMLP(3, 400)`` on the offline
  MNIST subset (1000 train / 4000 test images), batch 200, learning rate 0.3,
  lambda 1e-4, ``--steps`` PathProx steps (default 15000: with this seed,
  units start dying after ~5k steps; about 70% remain active at 12k, about
  half at 15k and about 40% at 20k. The training curve of active units is
  written to the JSON).
* **VGG19 smoke run**: ``VGG19(width_multiplier=1/8)`` (channels 8 ... 64) on
  *synthetic* data (1024 standard-normal 32x32x3 images; the label is the
  argmax of a fixed random linear map of the 4x4-average-pooled image), batch
  16, learning rate 0.1, lambda 0.1, 120 steps -- a lambda a hundred times
  the paper's CIFAR10 setting, chosen only so that channels die within the
  ~1-2 minutes a CPU can spend here. In this short run the network does not
  learn the synthetic task (it stays near chance): channels die because the
  prox shrinks every channel's output weights by ``lambda * lr`` per step,
  the weakest first (measured: 96% of channels active at step 100, 29% at
  120, none at 140). It exercises compaction of a conv net and gives its
  size/FLOP/latency effect; it says nothing about accuracy.

Measured for each network before and after compaction:

* parameters (all ``nnx.Param`` entries),
* FLOPs per example: analytic (2 x multiply-adds of the Dense/Conv layers)
  and XLA's ``cost_analysis()['flops']`` of the jitted forward pass (also
  counts bias adds, ReLUs and pooling) at batch 1 and 256,
* inference latency of the jitted forward pass (params as arguments) at
  batch 1 and 256: warm-up calls, then ``--rounds`` rounds in which the
  dense and the compact network each run a block of calls (timed one by one
  with ``block_until_ready``), interleaved so that load bursts on the shared
  machine hit both; reported are the median and inter-quartile range of all
  calls, and the speed-up as the median over rounds of the per-round ratio
  of medians,
* test accuracy and the relative output change on held-out inputs
  (:func:`~pathprox_jax.compact.compaction_error`), for threshold 0 and for
  the paper's pruning threshold 1e-5.

Usage::

    python -m benchmarks.compaction             # 5-10 min on 2 shared CPU cores
    python -m benchmarks.compaction --quick     # smoke test, 48-61 s (too short for units to die)
    python -m benchmarks.compaction --steps 20000

Each network's measurements are saved to ``results/compaction/runs/`` as soon
as they are done; ``--resume`` loads them instead of training again. Results
go to ``results/compaction/compaction[_quick].json`` and ``.png`` (active
units during training; size, FLOPs and latency of the compact network
relative to the dense one); ``benchmarks/RESULTS.md``, "Compaction", has the
measured numbers.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common
from pathprox_jax.models.vgg import VGG19_CONFIG


# --------------------------------------------------------------- counting
def num_params(model: nnx.Module) -> int:
  return sum(
      int(np.prod(a.shape))
      for a in jax.tree.leaves(nnx.state(model, nnx.Param))
  )


def analytic_flops(model: nnx.Module, image_hw: int = 32) -> int:
  """2 x multiply-adds of all Dense/Conv layers for one example.

  Conv layers count all 3x3 taps at every output position, including taps
  that fall on the zero padding (XLA's count skips those, hence its smaller
  number for VGG, whose last block runs at 2x2 resolution).
  """
  if isinstance(model, ppx.VGG19):
    total, hw, i = 0, image_hw, 0
    for item in VGG19_CONFIG:
      if item == "M":
        hw //= 2
        continue
      k = model.convs[i].kernel.shape  # (3, 3, c_in, c_out), SAME padding
      total += 2 * hw * hw * int(np.prod(k))
      i += 1
    return total + 2 * int(np.prod(model.classifier.kernel.shape))
  return sum(2 * int(np.prod(l.kernel.shape)) for l in model.layers)


def xla_flops(apply: Callable, params: Any, x: jax.Array) -> float:
  cost = jax.jit(apply).lower(params, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


# ---------------------------------------------------------------- one net
def measure(model, small, x_eval, y_eval, example_shape, args, desc):
  """Size, FLOPs, latency and accuracy of ``model`` vs its compact ``small``."""
  fb = common.functional(model, with_spec=False)
  fs = common.functional(small, with_spec=False)
  nets = {
      "dense": (model, fb, jax.jit(fb.apply)),
      "compact": (small, fs, jax.jit(fs.apply)),
  }
  outputs = {
      k: lambda x, f=f, a=a: common.predict_batched(a, f.params, x)
      for k, (_, f, a) in nets.items()
  }
  res = {"dense": {}, "compact": {}}
  for name, (m, _, _) in nets.items():
    r = res[name]
    r["params"] = num_params(m)
    r["analytic_flops_per_example"] = analytic_flops(m)
    r["test_accuracy"] = float(
        common.accuracy(outputs[name](jnp.asarray(x_eval)), jnp.asarray(y_eval))
    )
  err = ppx.compaction_error(
      outputs["dense"], outputs["compact"], jnp.asarray(x_eval)
  )
  res["relative_output_change"], res["max_abs_output_change"] = err
  rng = np.random.default_rng(0)
  for batch in (1, 256):
    x = jnp.asarray(rng.normal(size=(batch, *example_shape)).astype(np.float32))
    for name, (_, f, _) in nets.items():
      res[name][f"xla_flops_batch{batch}"] = xla_flops(f.apply, f.params, x)
    rounds, block = (
        (args.rounds, args.block_b1)
        if batch == 1
        else (args.rounds, args.block_b256)
    )
    fns = {
        name: lambda x=x, f=f, a=a: a(f.params, x)
        for name, (_, f, a) in nets.items()
    }
    lat = common.latency(fns, rounds, block)
    for name in fns:
      res[name][f"latency_batch{batch}"] = lat[name]
    res[f"speedup_batch{batch}"] = lat["compact"]["speedup_vs_dense"]
    print(
        f"  [{desc}] batch {batch}: dense {lat['dense']['median_ms']:.3f} ms, "
        f"compact {lat['compact']['median_ms']:.3f} ms",
        flush=True,
    )
  return res


def active_curve(history):
  return [{"step": h["step"], "active": h["active"]} for h in history]


def first_step_below(history, level):
  for h in history:
    if h["active"] < level:
      return h["step"]
  return None


def threshold_variant(model, params, spec, thr, x_eval, y_eval):
  small_p, small_spec = ppx.compact(params, spec, threshold=thr)
  small = ppx.rebuild(model, small_p)
  fb = common.functional(model, with_spec=False)
  fs = common.functional(small, with_spec=False)
  out_b = lambda x, a=jax.jit(fb.apply): common.predict_batched(a, fb.params, x)
  out_s = lambda x, a=jax.jit(fs.apply): common.predict_batched(a, fs.params, x)
  err = ppx.compaction_error(out_b, out_s, jnp.asarray(x_eval))
  acc = float(common.accuracy(out_s(jnp.asarray(x_eval)), jnp.asarray(y_eval)))
  return {
      "threshold": thr,
      "units": list(small_spec.num_units),
      "params": num_params(small),
      "test_accuracy": acc,
      "relative_output_change": err.relative,
  }


# ------------------------------------------------------------------ tasks
def train_pathprox(
    model,
    x,
    y,
    x_eval,
    y_eval,
    lr,
    lam,
    steps,
    batch,
    eval_every,
    seed,
    progress,
    desc,
):
  f = common.functional(model)
  tx = ppx.pathprox(lr, lam, f.spec)
  run = common.make_chunk_runner(f.apply, tx)
  xe, ye = jnp.asarray(x_eval), jnp.asarray(y_eval)
  evaluate = jax.jit(
      lambda p: {
          "loss": common.cross_entropy(
              common.predict_batched(f.apply, p, xe), ye
          ),
          "test_acc": common.accuracy(
              common.predict_batched(f.apply, p, xe), ye
          ),
          "active": ppx.active_units(p, f.spec).fraction,
      }
  )
  t = time.perf_counter()
  params, history = common.train(
      common.copy_tree(f.params),
      tx,
      run,
      x,
      y,
      iterations=steps,
      batch_size=batch,
      eval_every=eval_every,
      evaluate=evaluate,
      seed=seed,
      desc=desc,
      progress=progress,
      postfix=("loss", "active", "test_acc"),
  )
  return params, f.spec, history, time.perf_counter() - t


def run_network(
    name,
    model,
    params,
    spec,
    history,
    train_s,
    x_eval,
    y_eval,
    example_shape,
    args,
    hparams,
):
  trained = ppx.rebuild(model, params)
  small_p, small_spec = ppx.compact(params, spec)
  small = ppx.rebuild(trained, small_p)
  print(
      f"[{name}] units per group {spec.num_units} -> {small_spec.num_units}",
      flush=True,
  )
  res = measure(trained, small, x_eval, y_eval, example_shape, args, name)
  res.update({
      "hyperparameters": hparams,
      "train_seconds": train_s,
      "units_before": list(spec.num_units),
      "units_after": list(small_spec.num_units),
      "active_curve": active_curve(history),
      "first_step_active_below_0.99": first_step_below(history, 0.99),
      "first_step_active_below_0.5": first_step_below(history, 0.5),
      "threshold_1e-5": threshold_variant(
          trained, params, spec, 1e-5, x_eval, y_eval
      ),
  })
  return res


def task1(args):
  from pathprox_jax.data import load_mnist_subset

  data = load_mnist_subset(train_per_class=100, seed=args.seed)
  model = ppx.FactorizedMLP(3, 400, rngs=nnx.Rngs(args.seed))
  hp = {
      "model": "FactorizedMLP(3, 400)",
      "data": "MNIST 1000 train / 4000 test",
      "batch": 200,
      "lr": 0.3,
      "lambda": 1e-4,
      "steps": args.steps,
  }
  params, spec, hist, secs = train_pathprox(
      model,
      data.x_train,
      data.y_train,
      data.x_test,
      data.y_test,
      0.3,
      1e-4,
      args.steps,
      200,
      args.eval_every,
      args.seed,
      not args.no_progress,
      "task1",
  )
  return run_network(
      "task1",
      model,
      params,
      spec,
      hist,
      secs,
      data.x_test,
      data.y_test,
      (784,),
      args,
      hp,
  )


def synthetic_images(n, seed):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, 32, 32, 3)).astype(np.float32)
  proj = np.random.default_rng(1234).normal(size=(4 * 4 * 3, 10))
  pooled = x.reshape(n, 4, 8, 4, 8, 3).mean((2, 4)).reshape(n, -1)
  return x, np.argmax(pooled @ proj, -1).astype(np.int32)


def vgg(args):
  x, y = synthetic_images(1024, args.seed)
  xe, ye = synthetic_images(256, args.seed + 1)
  model = ppx.VGG19(width_multiplier=1 / 8, rngs=nnx.Rngs(args.seed))
  hp = {
      "model": "VGG19(width_multiplier=1/8)",
      "data": "synthetic 1024 train / 512 eval",
      "batch": args.vgg_batch,
      "lr": args.vgg_lr,
      "lambda": args.vgg_lam,
      "steps": args.vgg_steps,
  }
  params, spec, hist, secs = train_pathprox(
      model,
      x,
      y,
      xe,
      ye,
      args.vgg_lr,
      args.vgg_lam,
      args.vgg_steps,
      args.vgg_batch,
      20,
      args.seed,
      not args.no_progress,
      "vgg",
  )
  return run_network(
      "vgg19", model, params, spec, hist, secs, xe, ye, (32, 32, 3), args, hp
  )


# ------------------------------------------------------------------- report
def table(results) -> str:
  rows = []
  for name, r in results.items():
    if not isinstance(r, dict) or "dense" not in r:
      continue
    for which in ("dense", "compact"):
      m = r[which]
      rows.append([
          name,
          which,
          "/".join(
              map(str, r["units_before" if which == "dense" else "units_after"])
          ),
          f"{m['params']:,}",
          f"{m['analytic_flops_per_example'] / 1e6:.2f}",
          f"{m['xla_flops_batch1'] / 1e6:.2f}",
          f"{m['latency_batch1']['median_ms']:.3f}",
          f"{m['latency_batch256']['median_ms']:.2f}",
          f"{m['test_accuracy']:.4f}",
      ])
  return common.fmt_table(
      rows,
      [
          "net",
          "",
          "units/group",
          "params",
          "MFLOP/ex",
          "XLA MFLOP b1",
          "ms b1",
          "ms b256",
          "acc",
      ],
  )


NETWORKS = {
    "task1": "Task 1: FactorizedMLP(3, 400), MNIST",
    "vgg19": "VGG19 x1/8, synthetic images",
}
# What each network's measurement depends on besides the shared options.
OTHER_OPTIONS = {
    "task1": ("vgg_steps", "vgg_batch", "vgg_lr", "vgg_lam", "skip_vgg"),
    "vgg19": ("steps", "eval_every", "skip_vgg"),
}


def plot(results, path: str, copy: bool, quick: bool) -> list[str]:
  """Active units during training (one panel per network) and the compact
  network's size, FLOPs and latency relative to the dense one."""
  plt = common.pyplot()
  nets = [n for n in NETWORKS if n in results]
  fig, axes = plt.subplots(1, len(nets) + 1, figsize=(5 * (len(nets) + 1), 4))
  for ax, name in zip(axes, nets):
    r = results[name]
    curve = r["active_curve"]
    ax.plot(
        [c["step"] for c in curve],
        [100 * c["active"] for c in curve],
        marker=".",
        color="tab:red",
    )
    ax.set_title(
        f"{NETWORKS[name]}\nunits per group "
        f"{'/'.join(map(str, r['units_before']))} -> "
        f"{'/'.join(map(str, r['units_after']))}",
        fontsize=9,
    )
    ax.set_xlabel("PathProx step")
    ax.set_ylabel("active units (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
  ax = axes[-1]
  quantities = (
      ("params", "parameters"),
      ("analytic_flops_per_example", "FLOPs / example"),
      ("latency_batch1", "latency, batch 1"),
      ("latency_batch256", "latency, batch 256"),
  )
  x = np.arange(len(quantities))
  for k, name in enumerate(nets):
    r = results[name]
    value = lambda m, q: r[m][q]["median_ms"] if "latency" in q else r[m][q]
    ratios = [value("compact", q) / value("dense", q) for q, _ in quantities]
    ax.bar(
        x + (k - (len(nets) - 1) / 2) * 0.35,
        ratios,
        width=0.35,
        label=NETWORKS[name],
    )
  ax.axhline(1.0, color="k", lw=0.8)
  ax.set_xticks(x, [label for _, label in quantities], fontsize=8)
  ax.set_ylabel("compact / dense (latency: median of all calls)")
  ax.set_title("what compaction (threshold 0) keeps", fontsize=9)
  ax.legend(fontsize=7)
  fig.suptitle(
      "PathProx-pruned networks before and after compaction"
      + (" [QUICK]" if quick else ""),
      fontsize=10,
  )
  fig.tight_layout()
  return common.save_figure(fig, path, copy)


def parse_args(argv=None):
  p = common.base_parser(__doc__.splitlines()[0], quick_time="48-61 s")
  p.add_argument(
      "--steps", type=int, default=15000, help="Task 1 PathProx steps"
  )
  p.add_argument(
      "--eval-every",
      type=int,
      default=500,
      help="Task 1 steps between evaluations (active-unit curve)",
  )
  p.add_argument(
      "--vgg-steps", type=int, default=120, help="VGG19 PathProx steps"
  )
  p.add_argument("--vgg-batch", type=int, default=16, help="VGG19 batch size")
  p.add_argument(
      "--vgg-lr", type=float, default=0.1, help="VGG19 learning rate"
  )
  p.add_argument(
      "--vgg-lam",
      type=float,
      default=0.1,
      help="VGG19 lambda (deliberately large, see the module doc)",
  )
  p.add_argument("--rounds", type=int, default=30, help="latency rounds")
  p.add_argument(
      "--block-b1", type=int, default=20, help="batch-1 calls per round"
  )
  p.add_argument(
      "--block-b256", type=int, default=5, help="batch-256 calls per round"
  )
  p.add_argument("--skip-vgg", action="store_true", help="only run Task 1")
  args = p.parse_args(argv)
  if args.quick:
    args.steps, args.eval_every, args.vgg_steps = 1000, 250, 40
    args.rounds, args.block_b1, args.block_b256 = 3, 20, 3
  return args


def main(argv=None):
  args = parse_args(argv)
  out, tag, run_dir = common.run_dirs("compaction", args.out, args.quick)
  t0 = time.perf_counter()
  results = {"environment": common.environment(), "quick": args.quick}
  for name, measure_net in (("task1", task1), ("vgg19", vgg)):
    if name == "vgg19" and args.skip_vgg:
      continue
    results[name] = common.cached_run(
        run_dir,
        name + tag,
        common.run_config(args, OTHER_OPTIONS[name]),
        args.resume,
        lambda f=measure_net: f(args),
    )
  results["total_seconds"] = time.perf_counter() - t0
  path = os.path.join(out, f"compaction{tag}.json")
  results["figures"] = plot(
      results,
      os.path.join(out, f"compaction{tag}.png"),
      args.copy_figures,
      args.quick,
  )
  common.save_json(path, results)
  print(table(results))
  for name in NETWORKS:
    if name in results:
      r = results[name]
      print(
          f"{name}: speed-up b1 {r['speedup_batch1']['median']:.2f}x, b256 "
          f"{r['speedup_batch256']['median']:.2f}x; relative output change "
          f"{r['relative_output_change']:.2e}; threshold 1e-5: units "
          f"{r['threshold_1e-5']['units']}, change "
          f"{r['threshold_1e-5']['relative_output_change']:.2e}"
      )
  print(
      f"wrote {path} and {', '.join(results['figures'])} "
      f"({results['total_seconds']:.0f} s)"
  )
  return results


if __name__ == "__main__":
  main()
