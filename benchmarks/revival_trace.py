"""Per-group active units and path norms of one race run, at fine resolution.

Trains one ``benchmarks.race`` method on Task 1 (seed, data and batches as in
the race) and records, every ``--every`` iterations inside the window
``[--start, --stop]``, each group's number of active units and path norm and
the data loss: the trace behind ``benchmarks/RESULTS.md`` section 7
(adaptive PathProx's revival of every unit). Prints the table and writes
``results/revival_trace/revival_trace_<method>[_quick].json`` and ``.png``.
Run ``python -m benchmarks.revival_trace`` (about 2 minutes) or ``--quick``
(6-14 s).

There is no ``--resume``: the trace is one training run, saved when it ends.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

import pathprox_jax as ppx
from benchmarks import common, race


def parse_args(argv=None):
  p = common.base_parser(
      __doc__.split("\n\n")[0], quick_time="6-14 s", resume=False
  )
  p.add_argument("--method", default="adaptive", choices=list(race.METHODS))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--start", type=int, default=3250)
  p.add_argument("--stop", type=int, default=4300)
  p.add_argument("--every", type=int, default=25)
  args = p.parse_args(argv)
  if args.quick:
    args.start, args.stop, args.every = 8, 16, 4
  return args


def plot(trace, args, path: str) -> list[str]:
  """Active units, path norm (per group) and data loss against iterations."""
  plt = common.pyplot()
  steps = [t["step"] for t in trace]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for g in range(len(trace[0]["active"])):
    axes[0].plot(steps, [t["active"][g] for t in trace], label=f"group {g}")
    axes[1].plot(steps, [t["path_norm"][g] for t in trace], label=f"group {g}")
  axes[2].plot(steps, [t["loss"] for t in trace], color="k")
  for ax, label in zip(
      axes, ("active units", "group path norm", "data loss (train)")
  ):
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[1].set_yscale("log")
  axes[2].set_yscale("log")
  axes[0].legend(fontsize=8)
  fig.suptitle(
      f"{race.METHODS[args.method].label}, lr {args.lr:g}, Task 1, "
      f"seed {args.seed}"
      + (" [QUICK]" if args.quick else ""),
      fontsize=10,
  )
  fig.tight_layout()
  return common.save_figure(fig, path, args.copy_figures)


def main(argv=None):
  args = parse_args(argv)
  task = race.TASKS["task1"]
  setup = race.Setup(task, args.quick)
  m = race.METHODS[args.method]
  tx = m.build(args.lr, task.lam, setup.spec, 10000)
  run = common.make_chunk_runner(setup.apply, tx)
  params = setup.init(args.seed, m.normalize_init)
  state = tx.init(params)
  sampler = common.BatchSampler(
      len(setup.data.x_train), task.batch_size, args.seed
  )
  x, y = jnp.asarray(setup.data.x_train), jnp.asarray(setup.data.y_train)
  key, step, trace = jax.random.key(args.seed), 0, []
  while step < args.stop:
    k = args.start - step if step < args.start else args.every
    key, sub = jax.random.split(key)
    params, state = run(params, state, x, y, jnp.asarray(sampler.take(k)), sub)
    step += k
    norms = [ppx.prox.unit_norms(g) for g in setup.spec.split(params)[0]]
    trace.append({
        "step": step,
        "active": [int(jnp.sum(nv > 0)) for _, nv in norms],
        "path_norm": [float(jnp.sum(nw * nv)) for nw, nv in norms],
        "loss": float(setup.evaluate(params)["loss"]),
    })
  rows = [
      [
          t["step"],
          " ".join(map(str, t["active"])),
          " ".join(f"{p:.3g}" for p in t["path_norm"]),
          f"{t['loss']:.3g}",
      ]
      for t in trace
  ]
  print(
      common.fmt_table(
          rows,
          [
              "iteration",
              "active units per group",
              "path norm per group",
              "data loss",
          ],
      )
  )
  out = common.results_dir("revival_trace", args.out)
  stem = os.path.join(
      out, f"revival_trace_{args.method}" + ("_quick" if args.quick else "")
  )
  figures = plot(trace, args, stem + ".png")
  common.save_json(
      stem + ".json",
      {
          "config": vars(args),
          "environment": common.environment(),
          "trace": trace,
          "figures": figures,
      },
  )
  print("wrote", stem + ".json", *figures)
  return rows


if __name__ == "__main__":
  main()
