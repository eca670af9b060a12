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

``--step-time`` is the claim "the step-time ratios do not regress": in one
process it times jit-compiled full training steps (forward, backward,
``tx.update``, ``optax.apply_updates``; parameter and optimizer-state
buffers donated, one fixed batch of 200 digits on the device) of
``FactorizedMLP(3, --width)`` for SGD + weight decay (kernels decayed, the
baseline of ``benchmarks.step_time``, lr 0.05 as there) and, in each
release, ``pathprox`` (lr 0.05, lambda 1e-4), the in-place form
(``pathprox_gradient``, then ``pathprox_params`` after ``apply_updates``)
and ``adaptive_pathprox`` (lr 1e-3, eps 1e-5). After compilation and
``--warmup`` untimed steps, the variants are interleaved in ``--rounds``
rounds (the first variant rotates every round): each runs ``--block`` steps,
then ``jax.block_until_ready``, timed with ``perf_counter``. Reported per
variant: the median ms per step, the median [IQR] over rounds of its ratio
to SGD + weight decay's time in the same round, and of the current
release's time to the reference's in the same round; the instruction and
fusion counts of the compiled step and of the compiled update alone
(``tx.update`` + ``apply_updates`` + in-place prox, on fixed gradients);
whether the parameters are still finite at the end. It is a measurement on
a shared machine: the exit status is 0 (read the ratios).

Usage::

    python -m benchmarks.api_regression            # PathProx, 20k steps (*)
    python -m benchmarks.api_regression --quick    # every run, 20 steps, ~3 min
    python -m benchmarks.api_regression --runs adaptive inplace --steps 2000
    python -m benchmarks.api_regression --step-time             # width 400
    python -m benchmarks.api_regression --step-time --width 1600 --rounds 8

(*) Not timed here; ``--steps 1000`` took 15 s on 2 shared cores. Each
finished run (and each step-time measurement) is saved to
``results/api_regression/runs/``; ``--resume`` loads it instead of training
(measuring) again. ``benchmarks/RESULTS.md``, section 12, has the
measured comparison.
"""

from __future__ import annotations

import collections
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
# --step-time: lambda, adaptive's eps, and the SGD family's learning rate,
# that of benchmarks.step_time (lr 0.3 drives PathProx's parameters to NaN
# within 10 steps at width 1600 on the fixed batch: timed on NaNs).
STEP_LAMBDA, STEP_EPS, STEP_LR = 1e-4, 1e-5, 0.05
# Options only --step-time uses (what the trajectory runs do not depend on).
STEP_TIME_OPTIONS = ("step_time", "width", "rounds", "block", "warmup")


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


def apply_update(opt, g, s, p):
  """One optimizer step from the gradients ``g``: ``opt`` is ``(tx, post)``
  (``post``: the in-place prox applied after ``apply_updates``, or None)."""
  tx, post = opt
  u, s = tx.update(g, s, p)
  p = optax.apply_updates(p, u)
  return (p if post is None else post(p)), s


def lockstep(apply, pair, x, y):
  """``run(carry, idx)``: the reference and the current optimizer (``pair``,
  each ``(tx, post)``) stepped together over the batch indices ``idx``;
  returns the new carry and, after each step, :func:`compare`'s three values
  (each an array with one entry per step)."""

  def loss(p, xb, yb):
    return common.cross_entropy(apply(p, xb), yb)

  def advance(opt, p, s, xb, yb):
    return apply_update(opt, jax.grad(loss)(p, xb, yb), s, p)

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
              advance(opt, p, s, x[bi], y[bi]) for opt, (p, s) in zip(pair, c)
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


# ---------------------------------------------------------------- step time
STEP_VARIANTS = {  # name: (label, (api, units) -> (transform, post or None))
    "pathprox": (
        "pathprox",
        lambda a, u: (a.module.pathprox(STEP_LR, STEP_LAMBDA, u), None),
    ),
    "inplace": (
        "in-place (pathprox_params)",
        lambda a, u: (
            a.module.pathprox_gradient(STEP_LR, STEP_LAMBDA, u),
            lambda p: a.pathprox_params(p, u, STEP_LR, STEP_LAMBDA),
        ),
    ),
    "adaptive": (
        f"adaptive_pathprox (eps {STEP_EPS:g})",
        lambda a, u: (
            a.module.adaptive_pathprox(ADAM_LR, STEP_LAMBDA, u, eps=STEP_EPS),
            None,
        ),
    ),
}
BASELINE = "sgd_wd"
REF_SUFFIX = "_ref"  # the reference release's variant: f"{name}{REF_SUFFIX}"


def step_optimizers(setup: Setup) -> dict[str, tuple]:
  """``{name: (tx, post)}``: the baseline, then each variant of
  :data:`STEP_VARIANTS` in the reference and in the current release."""
  opts = {BASELINE: (common.weight_decay_sgd(STEP_LR, STEP_LAMBDA), None)}
  for name, (_, make) in STEP_VARIANTS.items():
    for suffix, api, units in zip((REF_SUFFIX, ""), setup.apis, setup.specs):
      opts[name + suffix] = make(api, units)
  return opts


def hlo_op_counts(hlo: str) -> dict[str, int]:
  """Instructions (in every computation, fused ones included) and fusions
  of an HLO module's text."""
  ops = collections.Counter()
  for line in hlo.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = ", line)
    if not m:
      continue
    rest = line[m.end() :]
    if rest.startswith("("):  # tuple type: skip to its closing parenthesis
      depth, end = 0, 0
      while end < len(rest):
        depth += (rest[end] == "(") - (rest[end] == ")")
        end += 1
        if depth == 0:
          break
      rest = rest[end:].lstrip()
    else:
      rest = rest.partition(" ")[2]
    ops[rest.split("(", 1)[0]] += 1
  return {"ops": sum(ops.values()), "fusions": ops["fusion"]}


def _shapes_of(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def summarize_rounds(
    seconds: dict[str, np.ndarray], base: str, pairs: dict[str, str]
) -> dict[str, dict]:
  """Per variant: ``ms`` (quantiles of the per-step time of its blocks),
  ``ratio`` (quantiles over rounds of its time / ``base``'s time in the same
  round) and, for the current variants in ``pairs`` (``{current:
  reference}``), ``vs_ref`` (the same with the reference as the base).
  ``seconds``: ``{name: per-step seconds of each round's block}``."""

  def quantiles(a):
    q25, q50, q75 = np.percentile(np.asarray(a, float), [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75)}

  out = {}
  for name, t in seconds.items():
    t = np.asarray(t, float)
    out[name] = {
        "ms": quantiles(1e3 * t),
        "ms_rounds": (1e3 * t).tolist(),
        "ratio": quantiles(t / np.asarray(seconds[base])),
    }
    if name in pairs:
      out[name]["vs_ref"] = quantiles(t / np.asarray(seconds[pairs[name]]))
  return out


def step_time(setup: Setup, args, progress: bool) -> dict:
  """Interleaved step time of :func:`step_optimizers`, one process."""
  load_before, t_start = os.getloadavg(), time.perf_counter()
  x, y = setup.x[:BATCH], setup.y[:BATCH]

  def loss(p, xb, yb):
    return common.cross_entropy(setup.apply(p, xb), yb)

  opts = step_optimizers(setup)
  steps, carry, hlo = {}, {}, {}
  grads = _shapes_of(setup.params)
  for name, opt in opts.items():

    def step(p, s, xb, yb, opt=opt):
      return apply_update(opt, jax.grad(loss)(p, xb, yb), s, p)

    state = opt[0].init(setup.params)
    carry[name] = common.copy_tree((setup.params, state))
    t = time.perf_counter()
    steps[name] = (
        jax.jit(step, donate_argnums=(0, 1)).lower(*carry[name], x, y).compile()
    )
    compile_s = time.perf_counter() - t
    update = jax.jit(lambda g, s, p, opt=opt: apply_update(opt, g, s, p))
    hlo[name] = {
        "step": hlo_op_counts(steps[name].as_text()),
        "update": hlo_op_counts(
            update.lower(grads, _shapes_of(state), grads).compile().as_text()
        ),
        "compile_s": compile_s,
    }
    for _ in range(args.warmup):
      carry[name] = steps[name](*carry[name], x, y)
    jax.block_until_ready(carry[name])

  names = list(opts)
  wall = {n: [] for n in names}
  cpu = {n: [] for n in names}
  bar = common.progress_bar(args.rounds, "step time", disable=not progress)
  for r in range(args.rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      p, s = carry[n]
      c, t = time.process_time(), time.perf_counter()
      for _ in range(args.block):
        p, s = steps[n](p, s, x, y)
      jax.block_until_ready((p, s))
      wall[n].append((time.perf_counter() - t) / args.block)
      cpu[n].append((time.process_time() - c) / args.block)
      carry[n] = (p, s)
    bar.update(1)
  bar.close()
  pairs = {n: n + REF_SUFFIX for n in STEP_VARIANTS}
  out = summarize_rounds(wall, BASELINE, pairs)
  cpu_ratio = summarize_rounds(cpu, BASELINE, pairs)
  for n in names:
    out[n]["cpu_ratio"] = cpu_ratio[n]["ratio"]
    out[n]["hlo"] = hlo[n]
    out[n]["finite"] = bool(
        all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(carry[n][0]))
    )
  return {
      "variants": out,
      "params": int(sum(np.size(a) for a in jax.tree.leaves(setup.params))),
      "load_average_before": list(load_before),  # 1, 5, 15 min
      "load_average_after": list(os.getloadavg()),
      "seconds": time.perf_counter() - t_start,  # compilation included
  }


def step_time_table(result: dict, releases: tuple[str, str]) -> str:
  """The measured step time as a printed table (``releases``: the labels of
  the reference and of the current release)."""

  def fmt(q):
    return f"{q['median']:.3f} [{q['q25']:.3f}, {q['q75']:.3f}]"

  rows = []
  for name, d in result["variants"].items():
    base = name.removesuffix(REF_SUFFIX)
    label = "SGD + weight decay" if name == BASELINE else STEP_VARIANTS[base][0]
    release = (
        ""
        if name == BASELINE
        else releases[0]
        if name.endswith(REF_SUFFIX)
        else releases[1]
    )
    h = d["hlo"]
    rows.append([
        label,
        release,
        f"{d['ms']['median']:.2f}",
        fmt(d["ratio"]),
        fmt(d["vs_ref"]) if "vs_ref" in d else "",
        f"{h['step']['ops']} ({h['step']['fusions']})",
        f"{h['update']['ops']} ({h['update']['fusions']})",
        d["finite"],
    ])
  return common.fmt_table(
      rows,
      [
          "variant",
          "release",
          "ms/step",
          "/ SGD+WD, median [IQR] over rounds",
          f"{releases[1]} / {releases[0]}",
          "step HLO ops (fusions)",
          "update HLO ops (fusions)",
          "finite at end",
      ],
  )


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
  st = p.add_argument_group("--step-time")
  st.add_argument(
      "--step-time",
      action="store_true",
      help=(
          "instead of the trajectories: time the full training steps of "
          "both releases, interleaved in this process"
      ),
  )
  st.add_argument(
      "--width", type=int, default=400, help="FactorizedMLP(3, width)"
  )
  st.add_argument(
      "--rounds", type=int, default=None, help="default: 30 (--quick: 3)"
  )
  st.add_argument(
      "--block",
      type=int,
      default=None,
      help="timed steps per variant per round; default: 20 (--quick: 3)",
  )
  st.add_argument(
      "--warmup", type=int, default=5, help="untimed steps per variant"
  )
  args = p.parse_args(argv)
  args.rounds = args.rounds or (3 if args.quick else 30)
  args.block = args.block or (3 if args.quick else 20)
  if args.quick:
    args.steps = min(args.steps, 20)
  args.runs = args.runs or (list(RUNS) if args.quick else ["pathprox"])
  args.lambdas = args.lambdas or (list(QUICK_LAMBDAS) if args.quick else [1e-4])
  return args


def main_step_time(args, setup: Setup, releases: tuple[str, str]) -> dict:
  """``--step-time``: measured (or, with ``--resume``, loaded), printed and
  written to ``api_regression_step_time_w<width>.json``."""
  out, tag, run_dir = common.run_dirs("api_regression", args.out, args.quick)
  config = common.run_config(args, ("runs", "lambdas", "tolerance", "steps"))
  result = common.cached_run(
      run_dir,
      f"step_time_w{args.width}{tag}",
      config,
      args.resume,
      lambda: step_time(setup, args, not args.no_progress),
  )
  print(
      f"FactorizedMLP(3, {args.width}), batch {BATCH}: {args.rounds} rounds "
      f"of {args.block} steps per variant, interleaved"
  )
  print(step_time_table(result, releases))
  common.save_json(
      os.path.join(out, f"api_regression_step_time_w{args.width}{tag}.json"),
      {
          "config": vars(args),
          "releases": releases,
          "environment": common.environment(),
          "result": result,
      },
  )
  return result


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  out, tag, run_dir = common.run_dirs("api_regression", args.out, args.quick)
  data = load_mnist_subset(100, seed=0)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  width = args.width if args.step_time else 400  # the trajectories: Task 1
  model = ppx.FactorizedMLP(3, width, rngs=nnx.Rngs(args.seed))
  f = common.functional(model, with_spec=False)
  config = common.run_config(
      args, ("runs", "lambdas", "tolerance", *STEP_TIME_OPTIONS)
  )
  rows = []
  with reference_release(args.against) as ref:
    apis = (reference_api(ref), current_api())
    specs = tuple(a.units(f.params, model.unit_pairs()) for a in apis)
    setup = Setup(f.apply, f.params, apis, specs, x, y)
    if args.step_time:
      releases = (f"{ref.__version__} ({args.against})", ppx.__version__)
      main_step_time(args, setup, releases)
      return []
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
