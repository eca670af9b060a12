"""Same trajectories as release 0.2.1: the current API against that release.

The reference is the release itself, pinned by ``--against`` (default
``0478a75``, release 0.2.1): its ``pathprox_jax`` package is extracted from
git history (``git archive``, read-only) into a temporary directory, renamed
``pathprox_jax_ref`` (every import rewritten) and imported next to the
installed package. Each run trains Task 1's model (FactorizedMLP(3, 400),
PyTorch init, 1000 MNIST digits, batch 200, epoch-shuffled batches as in
``benchmarks.convergence``) from one initialisation with both releases'
optimizers in lockstep, one jitted ``lax.scan`` stepping both on the same
batches, and records at every step whether all parameters are bitwise equal
and their relative difference ``||theta - theta_ref|| / ||theta_ref||``.
Each release is called in its own spelling (:class:`Api`): e.g. 0.2.1's
``path_prox_params(params, lr, wd, units)`` against
``pathprox_params(params, units, lr, wd)``, and 0.2.1's exploration options
of ``adaptive_pathprox`` against ``benchmarks.adaptive_variants``.

The default run is the claim "the Task 1 trajectory of PathProx (lr 0.3,
lambda 1e-4) is unchanged": 20k steps, largest relative difference at most
``--tolerance``. ``--quick`` runs every optimizer for 20 steps at lambda 1e-4
(no pruning), 3e-2 and 1e-1 (pruning), plus the pure rescalings. The exit
status is 1 if a run exceeds the tolerance.

Usage::

    python -m benchmarks.api_regression            # PathProx, 20k steps (*)
    python -m benchmarks.api_regression --quick    # every run, 20 steps, ~3 min
    python -m benchmarks.api_regression --runs adaptive inplace --steps 2000

(*) Not timed here; ``--steps 1000`` took 15 s on 2 shared cores. Each
finished run is saved to ``results/api_regression/runs/``; ``--resume`` loads
it instead of training again. ``benchmarks/RESULTS.md``, section 12, has the
measured comparison.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import adaptive_variants, common
from pathprox_jax.data import load_mnist_subset

RELEASE = "0478a75"  # 0.2.1
REFERENCE = "pathprox_jax_ref"  # the module name it is imported under
BATCH, LR, ADAM_LR = 200, 0.3, 1e-3
ADAM_EPS = adaptive_variants.ADAM_EPS  # 0.2.1's default
QUICK_LAMBDAS = (1e-4, 3e-2, 1e-1)
CHUNK = 500  # steps per jitted scan


# ----------------------------------------------------------- the reference
@contextlib.contextmanager
def reference_release(rev: str):
  """Release ``rev``'s package, extracted from git history and imported as
  ``pathprox_jax_ref`` for the duration of the context."""
  archive = subprocess.run(
      ["git", "-C", common.REPO_ROOT, "archive", rev, "pathprox_jax"],
      check=True,
      capture_output=True,
  ).stdout
  with tempfile.TemporaryDirectory() as tmp:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
      tar.extractall(tmp, filter="data")
    root = os.path.join(tmp, REFERENCE)
    os.rename(os.path.join(tmp, "pathprox_jax"), root)
    for folder, _, files in os.walk(root):
      for name in (f for f in files if f.endswith(".py")):
        path = os.path.join(folder, name)
        with open(path) as fh:
          text = re.sub(r"\bpathprox_jax\b", REFERENCE, fh.read())
        with open(path, "w") as fh:
          fh.write(text)
    sys.path.insert(0, tmp)
    try:
      yield importlib.import_module(REFERENCE)
    finally:
      sys.path.remove(tmp)
      for module in [m for m in sys.modules if m.split(".")[0] == REFERENCE]:
        del sys.modules[module]


class Api(NamedTuple):
  """The calls a run makes, in one release's spelling."""

  module: Any  # pathprox, pathprox_gradient, proxgen_adam, ...
  units: Callable  # (params, pairs) -> that release's UnitSpec
  pathprox_params: Callable  # (params, units, lr, wd) -> params
  unit_group_prox: Callable  # units -> the unit group prox of proxgen_adam
  adaptive: Callable  # (lr, wd, units, **options) -> tx (eps 1e-8)


def reference_api(ref) -> Api:
  """Release 0.2.1's spelling."""
  return Api(
      ref,
      ref.UnitSpec.from_pairs,
      lambda p, u, lr, wd: ref.path_prox_params(p, lr, wd, u),
      ref.group_prox_from_units,
      functools.partial(ref.adaptive_pathprox, eps=ADAM_EPS),
  )


def current_api() -> Api:
  return Api(
      ppx,
      ppx.UnitSpec.from_pairs,
      ppx.pathprox_params,
      ppx.prox.unit_group_lasso,
      functools.partial(adaptive_variants.make_adaptive, eps=ADAM_EPS),
  )


# --------------------------------------------------------------------- runs
def _adaptive(options, api, units, lam):
  return api.adaptive(ADAM_LR, lam, units, **options), None


RUNS = {  # name: (api, units, lambda) -> (transform, in-place post or None)
    "pathprox": lambda a, u, lam: (a.module.pathprox(LR, lam, u), None),
    "pathprox_nobalance": lambda a, u, lam: (
        a.module.pathprox(LR, lam, u, balance=False),
        None,
    ),
    "pathprox_momentum": lambda a, u, lam: (
        a.module.pathprox(0.05, lam, u, momentum=0.9),
        None,
    ),
    "inplace": lambda a, u, lam: (
        a.module.pathprox_gradient(LR, lam, u),
        lambda p: a.pathprox_params(p, u, LR, lam),
    ),
    "proxgen_group": lambda a, u, lam: (
        a.module.proxgen_adam(ADAM_LR, lam, a.unit_group_prox(u)),
        None,
    ),
    **{
        name: functools.partial(_adaptive, options)
        for name, options in {
            "adaptive": {},
            "adaptive_nobalance": {"balance": False},
            "adaptive_amsgrad": {"amsgrad": True},
            "adaptive_freeze_dead": {"freeze_dead": True},
            "adaptive_layer_outputs": {"layer_metric": "outputs"},
            "adaptive_layer_all": {"layer_metric": "all"},
            "adaptive_rescale_v": {"rescale_v": True},
            "adaptive_norescale": {"rescale_moments": False},
        }.items()
    },
}
RESCALINGS = ("balance_layers", "balance_neurons", "normalize_units")


class Setup(NamedTuple):
  """Task 1's model, data and both releases' APIs and unit specs."""

  apply: Callable
  params: Any
  apis: tuple[Api, Api]  # (reference, current)
  specs: tuple[Any, Any]
  x: jax.Array
  y: jax.Array


def compare(a, b) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(||b - a|| / ||a||, bitwise equal, b finite)`` over all leaves."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  diff = sum(jnp.sum(jnp.square(x - y)) for x, y in zip(la, lb))
  ref = sum(jnp.sum(jnp.square(x)) for x in la)
  equal = jnp.stack(
      [jnp.array_equal(x, y, equal_nan=True) for x, y in zip(la, lb)]
  ).all()
  finite = jnp.stack([jnp.isfinite(y).all() for y in lb]).all()
  return jnp.sqrt(diff / jnp.maximum(ref, 1e-30)), equal, finite


def lockstep(apply, pair, x, y):
  """``run(carry, idx)``: the reference and the current optimizer (``pair``,
  each ``(tx, post)``) stepped together over the batch indices ``idx``;
  returns the new carry and, after each step, :func:`compare`'s three values
  (each an array with one entry per step)."""

  def loss(p, xb, yb):
    return common.cross_entropy(apply(p, xb), yb)

  def advance(tx, post, p, s, xb, yb):
    u, s = tx.update(jax.grad(loss)(p, xb, yb), s, p)
    p = optax.apply_updates(p, u)
    return (p if post is None else post(p)), s

  def params_compared(c):
    return compare(c[0][0], c[1][0])

  @jax.jit
  def run(carry, idx):
    # Each step compares the parameters it starts from (loop-carried
    # buffers): compared right after the update, XLA may fuse (recompute)
    # the update into the comparison, rounded differently from the carry.
    def body(c, bi):
      before = params_compared(c)
      return (
          tuple(
              advance(*opt, p, s, x[bi], y[bi]) for opt, (p, s) in zip(pair, c)
          ),
          before,
      )

    carry, before = jax.lax.scan(body, carry, idx)
    last = params_compared(carry)
    return carry, tuple(jnp.append(b[1:], l) for b, l in zip(before, last))

  return run


def trajectory(
    setup: Setup, run: str, lam: float, steps: int, seed: int, progress: bool
) -> dict:
  """One run: both releases from the same init, ``steps`` steps in lockstep."""
  pair = [RUNS[run](a, u, lam) for a, u in zip(setup.apis, setup.specs)]
  step = lockstep(setup.apply, pair, setup.x, setup.y)
  carry = tuple((setup.params, tx.init(setup.params)) for tx, _ in pair)
  sampler = common.BatchSampler(len(setup.x), BATCH, seed)
  rel, equal, finite = [], [], []
  bar = common.progress_bar(
      steps, f"{run} lambda={lam:g}", disable=not progress
  )
  t0 = time.perf_counter()
  for start in range(0, steps, CHUNK):
    k = min(CHUNK, steps - start)
    carry, (r, e, f) = step(carry, jnp.asarray(sampler.take(k)))
    rel.append(np.asarray(r))
    equal.append(np.asarray(e))
    finite.append(np.asarray(f))
    bar.update(k)
  bar.close()
  rel, equal = np.concatenate(rel), np.concatenate(equal)
  unequal = np.flatnonzero(~equal)
  active = [
      float(ppx.active_units(p, setup.specs[1]).fraction) for p, _ in carry
  ]
  return {
      "run": run,
      "lambda": lam,
      "steps": steps,
      "max_rel": (
          float(np.nanmax(rel)) if np.isfinite(rel).any() else float("nan")
      ),
      "max_rel_per_chunk": [
          float(np.max(c)) for c in np.array_split(rel, max(1, steps // CHUNK))
      ],
      "bitwise": bool(equal.all()),
      "first_unequal_step": int(unequal[0]) + 1 if unequal.size else None,
      "finite": bool(np.concatenate(finite).all()),
      "active_ref": active[0],
      "active": active[1],
      "seconds": time.perf_counter() - t0,
  }


def rescalings(setup: Setup) -> list[dict]:
  """The pure rescalings of both releases, once on the initial params."""
  out = []
  for name in RESCALINGS:
    a, b = (
        getattr(api.module, name)(setup.params, u)
        for api, u in zip(setup.apis, setup.specs)
    )
    rel, equal, finite = (
        bool(v) if v.dtype == bool else float(v) for v in compare(a, b)
    )
    out.append({
        "run": name,
        "lambda": None,
        "steps": 0,
        "max_rel": rel,
        "bitwise": equal,
        "finite": finite,
    })
  return out


# ---------------------------------------------------------------------- main
def parse_args(argv=None):
  p = common.base_parser(
      __doc__.split("\n\n")[0], quick_time="about 3 minutes", figures=False
  )
  p.add_argument(
      "--against", default=RELEASE, help="git revision of the reference release"
  )
  p.add_argument(
      "--runs",
      nargs="+",
      default=None,
      choices=list(RUNS),
      help="default: pathprox (--quick: all)",
  )
  p.add_argument(
      "--lambdas",
      nargs="+",
      type=float,
      default=None,
      help=f"default: 1e-4 (--quick: {' '.join(map(str, QUICK_LAMBDAS))})",
  )
  p.add_argument("--steps", type=int, default=20000)
  p.add_argument(
      "--tolerance",
      type=float,
      default=1e-6,
      help="largest relative parameter difference accepted",
  )
  args = p.parse_args(argv)
  if args.quick:
    args.steps = min(args.steps, 20)
  args.runs = args.runs or (list(RUNS) if args.quick else ["pathprox"])
  args.lambdas = args.lambdas or (list(QUICK_LAMBDAS) if args.quick else [1e-4])
  return args


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  out, tag, run_dir = common.run_dirs("api_regression", args.out, args.quick)
  data = load_mnist_subset(100, seed=0)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  model = ppx.FactorizedMLP(3, 400, rngs=nnx.Rngs(args.seed))
  f = common.functional(model, with_spec=False)
  config = common.run_config(args, ("runs", "lambdas", "tolerance"))
  rows = []
  with reference_release(args.against) as ref:
    apis = (reference_api(ref), current_api())
    specs = tuple(a.units(f.params, model.unit_pairs()) for a in apis)
    setup = Setup(f.apply, f.params, apis, specs, x, y)
    for run in args.runs:
      for lam in args.lambdas:
        rows.append(
            common.cached_run(
                run_dir,
                f"{run}_lam{lam:g}{tag}",
                dict(config, run=run, lam=lam),
                args.resume,
                lambda: trajectory(
                    setup, run, lam, args.steps, args.seed, not args.no_progress
                ),
            )
        )
    if args.quick:
      rows += rescalings(setup)
  for r in rows:
    r["ok"] = r["bitwise"] or r["max_rel"] <= args.tolerance
  failed = [r for r in rows if not r["ok"]]
  print(
      common.fmt_table(
          [
              [
                  r["run"],
                  "" if r["lambda"] is None else f"{r['lambda']:g}",
                  r["steps"],
                  r["bitwise"],
                  f"{r['max_rel']:.2e}",
                  r["finite"],
                  ""
                  if "active" not in r
                  else f"{r['active_ref']:.4f} / {r['active']:.4f}",
              ]
              for r in rows
          ],
          [
              "run",
              "lambda",
              "steps",
              "bitwise",
              "max rel. diff",
              "finite",
              f"active ({args.against} / now)",
          ],
      )
  )
  common.save_json(
      os.path.join(out, f"api_regression{tag}.json"),
      {"config": vars(args), "environment": common.environment(), "rows": rows},
  )
  print(
      f"{len(rows) - len(failed)} of {len(rows)} runs within relative "
      f"difference {args.tolerance:g} of {args.against}"
      + (
          ": " + ", ".join(f"{r['run']}@{r['lambda']}" for r in failed)
          if failed
          else ""
      )
  )
  return rows


if __name__ == "__main__":
  sys.exit(0 if all(r["ok"] for r in main()) else 1)
