"""What reproduces: the same seed, run again, on this machine.

Trains one Task 1 configuration (``benchmarks.convergence``'s model, data and
batches) ``--repeats`` times, each in a fresh Python process, under each of
two XLA CPU thread settings (the default multi-threaded Eigen, and one
thread), and compares the final parameters bit for bit and the objective
histories. The spread over *seeds* is measured by ``benchmarks.race``.

Run ``python -m benchmarks.reproducibility`` (about 3 minutes) or
``--quick`` (19-35 s). Each training run's final parameters and objectives are saved
to ``results/reproducibility/runs/`` as soon as it ends; ``--resume`` loads
them instead of training again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

from benchmarks import common

THREADS = {
    "default": "",
    "one_thread": (
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ),
}


def parse_args(argv=None):
  p = common.base_parser(
      __doc__.split("\n\n")[0], quick_time="19-35 s", figures=False
  )
  p.add_argument("--method", default="pathprox")
  p.add_argument("--iterations", type=int, default=2000)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.iterations = min(args.iterations, 40)
  return args


def child(args):
  """One training run; writes the final params and the objective history to
  ``--child`` + ``.npz`` (``arr_0, arr_1, ...`` and ``objectives``)."""
  import jax
  from flax import nnx

  import pathprox_jax as ppx
  from benchmarks.convergence import make_evaluator
  from pathprox_jax.data import load_mnist_subset

  data = load_mnist_subset(100, seed=0)
  width = 32 if args.quick else 400
  f = common.functional(
      ppx.FactorizedMLP(3, width, init="pytorch", rngs=nnx.Rngs(args.seed))
  )
  tx, penalty = common.make_method(args.method, 0.3, 1e-4, f.spec)
  evaluate = make_evaluator(
      f.apply,
      f.spec,
      1e-4,
      data.x_train,
      data.y_train,
      data.x_test,
      data.y_test,
  )
  params, history = common.train(
      f.params,
      tx,
      common.make_chunk_runner(f.apply, tx, penalty),
      data.x_train,
      data.y_train,
      iterations=args.iterations,
      batch_size=200,
      eval_every=max(1, args.iterations // 10),
      evaluate=evaluate,
      seed=args.seed,
      progress=False,
  )
  np.savez(
      args.child + ".npz",
      *(np.asarray(x) for x in jax.tree.leaves(params)),
      objectives=np.array([h["objective"] for h in history]),
  )


def run_child(argv, flags: str, stem: str) -> dict:
  """Trains in a fresh process under ``XLA_FLAGS=flags``; the objectives."""
  env = dict(os.environ, XLA_FLAGS=flags) if flags else dict(os.environ)
  subprocess.run(
      [
          sys.executable,
          "-m",
          "benchmarks.reproducibility",
          *argv,
          "--child",
          stem,
      ],
      check=True,
      env=env,
  )
  with np.load(stem + ".npz") as z:
    return {"objectives": z["objectives"].tolist()}


def load_params(stem: str) -> list[np.ndarray]:
  with np.load(stem + ".npz") as z:
    return [z[f"arr_{i}"] for i in range(len(z.files) - 1)]


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.child:
    return child(args)
  out, tag, run_dir = common.run_dirs("reproducibility", args.out, args.quick)
  config = common.run_config(args, ("repeats", "child"))
  runs = {}
  for name, flags in THREADS.items():
    for r in range(args.repeats):
      stem = os.path.join(run_dir, f"{name}_{r}{tag}")
      saved = args.resume and os.path.exists(stem + ".npz")
      objectives = common.cached_run(
          run_dir,
          os.path.basename(stem),
          dict(config, threads=name),
          saved,
          lambda: run_child(argv, flags, stem),
      )["objectives"]
      runs[(name, r)] = (load_params(stem), objectives)
      print(f"{name} run {r}: final objective {objectives[-1]:.6g}", flush=True)

  def compare(a, b):
    pa, ha = runs[a]
    pb, hb = runs[b]
    return {
        "bitwise_equal": all(np.array_equal(x, y) for x, y in zip(pa, pb)),
        "max_abs_param_diff": float(
            max(np.max(np.abs(x - y)) for x, y in zip(pa, pb))
        ),
        "final_objectives": [ha[-1], hb[-1]],
    }

  result = {
      name: compare((name, 0), (name, r))
      for name in THREADS
      for r in range(1, args.repeats)
  }
  result["default_vs_one_thread"] = compare(("default", 0), ("one_thread", 0))
  for k, v in result.items():
    print(
        f"{k}: bitwise equal {v['bitwise_equal']}, max |param diff| "
        f"{v['max_abs_param_diff']:.3g}, final objectives "
        f"{v['final_objectives'][0]:.6g} / {v['final_objectives'][1]:.6g}"
    )
  common.save_json(
      os.path.join(out, f"reproducibility{tag}.json"),
      {
          "config": vars(args),
          "environment": common.environment(),
          "result": result,
      },
  )
  return result


if __name__ == "__main__":
  main()
