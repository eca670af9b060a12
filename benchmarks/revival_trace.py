"""Per-group active units and path norms of one race run, at fine resolution.

Trains one ``benchmarks.race`` method on Task 1 (seed, data and batches as in
the race) and prints, every ``--every`` iterations inside the window
``[--start, --stop]``, each group's number of active units and path norm:
the trace behind ``benchmarks/RESULTS.md`` section 7 (adaptive PathProx's
revival of every unit). Run ``python -m benchmarks.revival_trace`` (about
2 minutes) or ``--quick``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import pathprox_jax as ppx
from benchmarks import common, race


def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0])
  p.add_argument("--method", default="adaptive", choices=list(race.METHODS))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--start", type=int, default=3250)
  p.add_argument("--stop", type=int, default=4300)
  p.add_argument("--every", type=int, default=25)
  args = p.parse_args(argv)
  if args.quick:
    args.start, args.stop, args.every = 8, 16, 4
  return args


def main(argv=None):
  args = parse_args(argv)
  task = race.TASKS["task1"]
  setup = race.Setup(task, args.quick)
  m = race.METHODS[args.method]
  tx = m.build(args.lr, task.lam, setup.spec, 10000)
  run = common.make_chunk_runner(setup.apply, tx)
  params = setup.init(args.seed, m.normalize_init)
  state = tx.init(params)
  sampler = common.BatchSampler(len(setup.data.x_train), task.batch_size,
                                args.seed)
  x, y = jnp.asarray(setup.data.x_train), jnp.asarray(setup.data.y_train)
  key, step, rows = jax.random.key(args.seed), 0, []
  while step < args.stop:
    k = args.start - step if step < args.start else args.every
    key, sub = jax.random.split(key)
    params, state = run(params, state, x, y, jnp.asarray(sampler.take(k)), sub)
    step += k
    norms = [ppx.unit_norms(g) for g in setup.spec.gather(params)]
    active = [int(jnp.sum(nv > 0)) for _, nv in norms]
    pn = [float(jnp.sum(nw * nv)) for nw, nv in norms]
    loss = float(setup.evaluate(params)["loss"])
    rows.append([step, " ".join(map(str, active)),
                 " ".join(f"{p:.3g}" for p in pn), f"{loss:.3g}"])
  print(common.fmt_table(rows, ["iteration", "active units per group",
                                "path norm per group", "data loss"]))
  return rows


if __name__ == "__main__":
  main()
