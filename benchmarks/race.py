"""Convergence race: which optimizer reaches the weight decay objective first.

Every method minimises (or, for AdamW, is scored on) the same weight decay
objective ``L + lambda/2 sum ||K||^2``, evaluated for the balanced
representation of each network (``loss + lambda * path_norm_penalty``, the
minimum over function-preserving rescalings) on the full training set.

Tasks (``--tasks``): ``task1`` (the paper's Task 1: FactorizedMLP(3, 400) on
1000 MNIST digits, 20k iterations, every method and ablation), ``task2``
(MLP(6, 400) on 3500 digits, 10k iterations) and ``ffn`` (a byte-level
transformer LM whose FFN hidden neurons are the units; the objective adds
``lambda/2 ||K||^2`` of the attention and embedding kernels, which no
rescaling can balance; 2k iterations). Tasks 2 and ``ffn`` race the peers
and the recommended adaptive variant (``PEERS``).

Protocol, per task and method:

1. **tuning**: each learning rate of the method family's grid (the same
   size for every method) on a separate seed (``--tune-seed``) for
   ``--tune-iterations`` (default: the task's own horizon, else 1/8 of its
   iterations); the learning rate with the lowest objective there wins (a
   diverged run counts as infinite);
2. **race**: the chosen learning rate on ``--seeds`` seeds (model
   initialisation and batch order) for the task's full iteration count.

Reported (mean +- std over seeds): iterations and training seconds to reach
SGD + weight decay's mean objective at 1/4, 1/2 and all of the iterations;
objective, active units and test accuracy at the checkpoints. Seconds count
training only (evaluation excluded), measured per chunk with
``block_until_ready``; with ``--workers 2`` two single-threaded runs share
the machine, so compare seconds within one run of this script only.

Every finished run is written to ``results/race/runs/<task>/<method>/`` as
soon as it ends; ``--resume`` skips finished runs, ``--replot`` redraws the
table and figures from those files alone.

Run ``python -m benchmarks.race`` (Task 1, about 2 hours on 2 cores),
``--tasks ffn task2`` (about 1 hour) or ``--quick`` for a smoke run (2-3
minutes). The adaptive PathProx variants with options the library does
not have (AMSGrad metric, frozen dead units, per-layer metrics, ``v``
rescaled, moments not rescaled) come from ``benchmarks.adaptive_variants``;
"adaptive PathProx" without a stated ``eps`` uses Adam's 1e-8.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import adaptive_variants, common
from benchmarks.convergence import jacobian_norms, make_evaluator
from pathprox_jax.data import (
    Split,
    byte_windows,
    load_mnist_subset,
    load_stdlib_text,
)

GRIDS = {"sgd": (0.1, 0.3, 1.0), "adam": (3e-4, 1e-3, 3e-3)}


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  title: str
  model: Callable[[bool, int], nnx.Module]  # (quick, seed) -> model
  data: Callable[[], Split]
  lam: float
  iterations: int
  methods: tuple[str, ...]
  batch_size: int = 200
  jacobian: bool = True  # input-output Jacobian (real-valued inputs)
  accuracy: str = "test accuracy"
  tune_iterations: int | None = None  # default: 1/8 of ``iterations``


def _mlp(cls, depth):
  return lambda quick, s: cls(
      depth, 32 if quick else 400, init="pytorch", rngs=nnx.Rngs(s)
  )


def text_split(
    seq: int = 64, train_windows: int = 2048, test_windows: int = 512
) -> Split:
  """Fixed byte windows of the standard library's source: a training set of
  ``train_windows`` windows (the objective is the mean over all of them) and
  validation windows cut from other modules as the test set."""
  text = load_stdlib_text()
  rng = np.random.default_rng(0)
  cut = lambda d, n: byte_windows(d, seq, rng.integers(0, len(d) - seq - 1, n))
  return Split(*cut(text.train, train_windows), *cut(text.val, test_windows))


def _transformer(quick, s):
  dim, ffn = (16, 32) if quick else (64, 256)
  return ppx.Transformer(256, dim, 2, 4, ffn, 64, rngs=nnx.Rngs(s))


@dataclasses.dataclass(frozen=True)
class Method:
  label: str
  family: str  # learning-rate grid
  build: Callable  # (lr, lam, spec, iterations) -> tx
  color: str
  style: str = "-"
  normalize_init: bool = False  # start from normalize_units(init)


def _common(name):
  return lambda lr, lam, spec, n: common.make_method(name, lr, lam, spec)[0]


def _adaptive(schedule=None, eps=adaptive_variants.ADAM_EPS, **options):
  """Adaptive PathProx; exploration ``options`` (``amsgrad``, ...) take
  :func:`~benchmarks.adaptive_variants.adaptive_pathprox_variant`."""

  def build(lr, lam, spec, n):
    return adaptive_variants.make_adaptive(
        schedule(lr, n) if schedule else lr,
        lam,
        spec,
        eps=eps(lam) if callable(eps) else eps,
        **options,
    )

  return build


def _adam_l2_eps(lr, lam, spec, n):
  return optax.chain(common.kernel_decay(lam), optax.adam(lr, eps=lam / 10))


def _adaptive_eps(schedule=None, **options):
  """Adaptive PathProx with ``eps = lambda / 10`` (see ``adaptive``'s docs)."""
  return _adaptive(schedule, eps=lambda lam: lam / 10, **options)


def warmup_cosine(lr, n):
  """Linear warm-up over 5% of the run, then cosine decay to 1% of ``lr``."""
  return optax.warmup_cosine_decay_schedule(
      0.0, lr, max(1, n // 20), n, end_value=lr / 100
  )


def warmup_constant(lr, n):
  """Linear warm-up over 5% of the run, then constant."""
  return optax.join_schedules(
      [
          optax.linear_schedule(0.0, lr, max(1, n // 20)),
          optax.constant_schedule(lr),
      ],
      [max(1, n // 20)],
  )


METHODS = {
    "sgd_wd": Method(
        "SGD + weight decay", "sgd", _common("weight_decay"), "tab:blue"
    ),
    "pathprox": Method("PathProx", "sgd", _common("pathprox"), "tab:red"),
    "adam_l2": Method(
        "Adam + coupled L2", "adam", _common("adam_l2"), "tab:green"
    ),
    "adamw": Method(
        "AdamW (weight_decay=lambda)", "adam", _common("adamw"), "tab:olive"
    ),
    "proxgen_unit": Method(
        "ProxGen-Adam, unit group prox",
        "adam",
        _common("proxgen_unit"),
        "tab:brown",
    ),
    "adam_l2_eps": Method(
        "Adam + coupled L2, eps = lambda/10",
        "adam",
        _adam_l2_eps,
        "tab:green",
        "--",
    ),
    "adaptive": Method("adaptive PathProx", "adam", _adaptive(), "tab:purple"),
    "adaptive_eps": Method(
        "adaptive PathProx, eps = lambda/10", "adam", _adaptive_eps(), "black"
    ),
    "adaptive_eps_nobalance": Method(
        "adaptive PathProx, eps = lambda/10, no balancing",
        "adam",
        _adaptive_eps(balance=False),
        "tab:pink",
    ),
    "adaptive_eps_norescale": Method(
        "adaptive PathProx, eps = lambda/10, moments not rescaled",
        "adam",
        _adaptive_eps(rescale_moments=False),
        "tab:gray",
    ),
    "adaptive_eps_cosine": Method(
        "adaptive PathProx, eps = lambda/10, warm-up + cosine",
        "adam",
        _adaptive_eps(warmup_cosine),
        "black",
        ":",
    ),
    "adaptive_nobalance": Method(
        "adaptive PathProx, no balancing",
        "adam",
        _adaptive(balance=False),
        "tab:pink",
    ),
    "adaptive_norescale": Method(
        "adaptive PathProx, moments not rescaled",
        "adam",
        _adaptive(rescale_moments=False),
        "tab:gray",
    ),
    "adaptive_amsgrad": Method(
        "adaptive PathProx, AMSGrad metric",
        "adam",
        _adaptive(amsgrad=True),
        "black",
    ),
    "adaptive_freeze": Method(
        "adaptive PathProx, dead units' moments frozen",
        "adam",
        _adaptive(freeze_dead=True),
        "tab:olive",
        "--",
    ),
    "adaptive_layer_v": Method(
        "adaptive PathProx, one metric per output layer",
        "adam",
        _adaptive(layer_metric="outputs"),
        "tab:green",
        "--",
    ),
    "adaptive_layer_all": Method(
        "adaptive PathProx, one metric per layer",
        "adam",
        _adaptive(layer_metric="all"),
        "tab:blue",
        "--",
    ),
    "adaptive_eps1e-5": Method(
        "adaptive PathProx, eps 1e-5",
        "adam",
        _adaptive(eps=1e-5),
        "tab:red",
        "--",
    ),
    "adaptive_rescale_v": Method(
        "adaptive PathProx, v rescaled by ||w||",
        "adam",
        _adaptive(rescale_v=True),
        "tab:cyan",
    ),
    "adaptive_warmup": Method(
        "adaptive PathProx, 5% warm-up",
        "adam",
        _adaptive(warmup_constant),
        "tab:orange",
    ),
    "adaptive_normalized": Method(
        "adaptive PathProx, normalised init",
        "adam",
        _adaptive(),
        "indigo",
        normalize_init=True,
    ),
    "adaptive_amsgrad_cosine": Method(
        "adaptive PathProx, AMSGrad, warm-up + cosine",
        "adam",
        _adaptive(warmup_cosine, amsgrad=True),
        "black",
        "--",
    ),
    "adaptive_cosine": Method(
        "adaptive PathProx, warm-up + cosine",
        "adam",
        _adaptive(warmup_cosine),
        "tab:purple",
        "--",
    ),
}
DEFAULT_METHODS = (
    "sgd_wd",
    "pathprox",
    "adam_l2",
    "adam_l2_eps",
    "adamw",
    "proxgen_unit",
    "adaptive",
    "adaptive_eps",
    "adaptive_eps_nobalance",
    "adaptive_eps_norescale",
    "adaptive_eps_cosine",
)
# Tasks 2 and FFN: the peers and the recommended variant (the ablations are
# Task 1's). On the transformer the residual adds leave every FFN group
# unlinked, so balancing has nothing to do there.
PEERS = (
    "sgd_wd",
    "pathprox",
    "adam_l2",
    "adamw",
    "proxgen_unit",
    "adaptive",
    "adaptive_eps_cosine",
)
LAST = ("adaptive_eps_norescale",)  # run after every other method's seeds
EXPLORATION = (
    "adaptive",
    "adaptive_amsgrad",
    "adaptive_rescale_v",
    "adaptive_warmup",
    "adaptive_normalized",
    "adaptive_freeze",
    "adaptive_layer_v",
    "adaptive_layer_all",
    "adaptive_eps1e-5",
)

TASKS = {
    "task1": Task(
        "task1",
        "Task 1: FactorizedMLP(3, 400), 1000 MNIST digits",
        _mlp(ppx.FactorizedMLP, 3),
        lambda: load_mnist_subset(100, seed=0),
        1e-4,
        20000,
        DEFAULT_METHODS,
    ),
    "task2": Task(
        "task2",
        "Task 2: MLP(6, 400), 3500 MNIST digits",
        _mlp(ppx.MLP, 6),
        lambda: load_mnist_subset(350, seed=0),
        1e-4,
        10000,
        PEERS,
    ),
    "ffn": Task(
        "ffn",
        "Transformer FFN units: byte-level LM (2 blocks, "
        "width 64, FFN 256) on 2048 windows of stdlib source",
        _transformer,
        text_split,
        1e-2,
        2000,
        PEERS,
        batch_size=32,
        jacobian=False,
        accuracy="validation next-byte accuracy",
        # A short task: tune over the whole run (SGD + weight decay at
        # lr 1 passes a 250-iteration tuning run, then diverges).
        tune_iterations=2000,
    ),
}


def parse_args(argv=None):
  p = common.base_parser(
      __doc__.split("\n\n")[0],
      quick_time="129-167 s, 37-44 s with --explore",
  )
  p.add_argument("--tasks", nargs="+", default=["task1"], choices=list(TASKS))
  p.add_argument(
      "--methods",
      nargs="+",
      default=None,
      choices=list(METHODS),
      help="default: each task's own list (Task.methods)",
  )
  p.add_argument("--seeds", type=int, default=3, help="race seeds (0, 1, ...)")
  p.add_argument("--tune-seed", type=int, default=100)
  p.add_argument(
      "--tune-iterations",
      type=int,
      default=None,
      help="tuning horizon (default: the task's, else 1/8 of its iterations)",
  )
  p.add_argument(
      "--iterations",
      type=int,
      default=None,
      help="override every task's iteration count",
  )
  p.add_argument("--eval-every", type=int, default=250)
  p.add_argument(
      "--lr",
      type=float,
      default=None,
      help="skip tuning: every method uses this learning rate",
  )
  p.add_argument(
      "--workers",
      type=int,
      default=2,
      help="parallel single-threaded worker processes",
  )
  p.add_argument(
      "--replot",
      action="store_true",
      help="only redraw the table and figures from saved runs",
  )
  p.add_argument(
      "--explore",
      action="store_true",
      help=(
          "the adaptive PathProx exploration instead: every "
          "variant tried, lr 1e-3, one seed, 10k iterations, in "
          "results/race_explore/"
      ),
  )
  p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.explore:
    args.methods, args.lr, args.seeds = list(EXPLORATION), 1e-3, 1
    args.iterations = args.iterations or 10000
    args.out = args.out or os.path.join(
        common.REPO_ROOT, "results", "race_explore"
    )
  if args.quick:
    args.iterations = min(args.iterations or 64, 64)
    args.eval_every = min(args.eval_every, 8)
    args.seeds = min(args.seeds, 2)
  return args


# ------------------------------------------------------------------- setup
class Setup:
  """A task's data, evaluator and per-seed initialisation."""

  def __init__(self, task: Task, quick: bool):
    self.task, self.quick = task, quick
    self.data = task.data()
    if quick:
      self.data = Split(*(x[:300] for x in self.data[:4]))
    f = common.functional(task.model(quick, 0))
    self.apply, self.spec = f.apply, f.spec
    self.x_jac = (
        self.data.x_test[: 64 if quick else 1000] if task.jacobian else None
    )
    self.evaluate = make_evaluator(
        f.apply,
        f.spec,
        task.lam,
        self.data.x_train,
        self.data.y_train,
        self.data.x_test,
        self.data.y_test,
    )

  def init(self, seed: int, normalize: bool):
    params = common.functional(self.task.model(self.quick, seed)).params
    return ppx.normalize_units(params, self.spec) if normalize else params


def run_one(
    setup: Setup,
    method: str,
    lr: float,
    seed: int,
    iterations: int,
    eval_every: int,
    progress: bool,
) -> dict:
  """Trains one (method, lr, seed); history with cumulative train seconds."""
  m, task = METHODS[method], setup.task
  tx = m.build(lr, task.lam, setup.spec, iterations)
  run = common.make_chunk_runner(setup.apply, tx)
  params = setup.init(seed, m.normalize_init)
  state = tx.init(params)
  sampler = common.BatchSampler(len(setup.data.x_train), task.batch_size, seed)
  x, y = jnp.asarray(setup.data.x_train), jnp.asarray(setup.data.y_train)
  key = jax.random.key(seed)
  history, seconds, step = [], 0.0, 0

  def log():
    h = {k: float(v) for k, v in jax.device_get(setup.evaluate(params)).items()}
    history.append(dict(h, step=step, seconds=seconds))
    return h

  log()
  chunk = min(eval_every, iterations)
  compiled = run.lower(
      params,
      state,
      x,
      y,  # compile untimed
      jnp.zeros((chunk, task.batch_size), jnp.int32),
      key,
  ).compile()
  bar = common.progress_bar(
      iterations,
      f"{task.name} {method} lr={lr:g} seed={seed}",
      disable=not progress,
  )
  while step < iterations:
    k = min(eval_every, iterations - step)
    idx = jnp.asarray(sampler.take(k))
    key, sub = jax.random.split(key)
    t = time.perf_counter()
    params, state = (compiled if k == chunk else run)(
        params, state, x, y, idx, sub
    )
    jax.block_until_ready(params)
    seconds += time.perf_counter() - t
    step += k
    h = log()
    bar.update(k)
    bar.set_postfix(obj=f"{h['objective']:.4g}", active=f"{h['active']:.2f}")
    if not np.isfinite(h["objective"]):
      break
  bar.close()
  jac = (
      np.full(1, np.nan)
      if setup.x_jac is None
      else jacobian_norms(setup.apply, params, setup.x_jac)
  )
  upn = np.concatenate(
      [np.asarray(u) for u in ppx.unit_path_norms(params, setup.spec)]
  )
  live = upn[upn > 0]
  return {
      "task": task.name,
      "method": method,
      "lr": lr,
      "seed": seed,
      "iterations": iterations,
      "history": history,
      "seconds": seconds,
      "jacobian_median": float(np.median(jac)),
      "group_path_norms": np.asarray(ppx.path_norms(params, setup.spec)),
      "active_path_norm_mean": float(live.mean()) if live.size else 0.0,
      "active_path_norm_max": float(live.max()) if live.size else 0.0,
      "diverged": not np.isfinite(history[-1]["objective"]),
  }


# ------------------------------------------------------------------- jobs
@dataclasses.dataclass(frozen=True)
class Job:
  task: str
  method: str
  phase: str  # "tune" or "race"
  lr: float
  seed: int
  iterations: int

  def path(self, runs: str) -> str:
    return os.path.join(
        runs,
        self.task,
        self.method,
        f"{self.phase}_lr{self.lr:g}_it{self.iterations}_seed{self.seed}.json",
    )


def task_methods(args, task: str) -> tuple[str, ...]:
  """``--methods`` if given, else the task's own list."""
  return tuple(args.methods or TASKS[task].methods)


def task_iterations(args, task: Task) -> tuple[int, int]:
  """(race iterations, tuning iterations) of ``task`` under ``args``."""
  n = args.iterations or task.iterations
  return n, min(
      n, args.tune_iterations or task.tune_iterations or max(1, n // 8)
  )


def load(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  r = common.load_json(path)  # "inf"/"nan" strings -> floats
  r["history"] = [{k: float(v) for k, v in h.items()} for h in r["history"]]
  return r


def tuning_jobs(args, runs) -> list[Job]:
  if args.lr is not None:
    return []
  out = []
  for t in args.tasks:
    _, n_tune = task_iterations(args, TASKS[t])
    for m in task_methods(args, t):
      out += [
          Job(t, m, "tune", lr, args.tune_seed, n_tune)
          for lr in GRIDS[METHODS[m].family]
      ]
  return out


def chosen_lr(args, runs, task: str, method: str) -> tuple[float | None, dict]:
  """The grid learning rate with the lowest tuning objective, and all scores."""
  if args.lr is not None:
    return args.lr, {}
  scores = {}
  for job in (
      j
      for j in tuning_jobs(args, runs)
      if j.task == task and j.method == method
  ):
    r = load(job.path(runs))
    if r is not None:
      obj = r["history"][-1]["objective"]
      scores[job.lr] = float(obj) if np.isfinite(float(obj)) else np.inf
  if len(scores) < len(GRIDS[METHODS[method].family]):
    return None, scores
  return min(scores, key=lambda lr: (scores[lr], lr)), scores


def race_jobs(args, runs) -> list[Job]:
  """Seed 0 of every method first, then seed 1, ...: an interrupted race has
  every method on its first seeds (ablations last)."""
  out = []
  for t in args.tasks:
    n, _ = task_iterations(args, TASKS[t])
    methods = [m for m in task_methods(args, t) if m not in LAST] + [
        m for m in task_methods(args, t) if m in LAST
    ]
    lrs = {m: chosen_lr(args, runs, t, m)[0] for m in methods}
    out += [
        Job(t, m, "race", lrs[m], s, n)
        for last in (False, True)
        for s in range(args.seeds)
        for m in methods
        if lrs[m] is not None and (m in LAST) == last
    ]
  return out


def work(args, runs, jobs: list[Job]) -> None:
  """Runs every job of ``jobs`` not done yet and not claimed by another worker."""
  setups = {}
  for job in jobs:
    path = job.path(runs)
    if os.path.exists(path):
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
      os.close(os.open(path + ".lock", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
      continue  # another worker has it
    try:
      if job.task not in setups:
        setups[job.task] = Setup(TASKS[job.task], args.quick)
      r = run_one(
          setups[job.task],
          job.method,
          job.lr,
          job.seed,
          job.iterations,
          args.eval_every,
          not args.no_progress,
      )
      r["phase"] = job.phase
      common.save_json(path + ".tmp", r)
      os.replace(path + ".tmp", path)  # a kill never leaves half a file
      h = r["history"][-1]
      print(
          f"[{job.task} {job.method} {job.phase} lr={job.lr:g} "
          f"seed={job.seed}] objective {h['objective']:.4g}, active "
          f"{h['active']:.3f}, {r['seconds']:.0f} s",
          flush=True,
      )
    finally:
      os.remove(path + ".lock")


def run_phase(args, argv, runs, phase: str) -> None:
  jobs = tuning_jobs(args, runs) if phase == "tune" else race_jobs(args, runs)
  todo = [j for j in jobs if not os.path.exists(j.path(runs))]
  print(
      f"{phase}: {len(jobs) - len(todo)} of {len(jobs)} runs done before, "
      f"{len(todo)} to run",
      flush=True,
  )
  if not todo:
    return
  if args.workers <= 1 or len(todo) == 1:
    return work(args, runs, jobs)
  env = dict(
      os.environ,
      XLA_FLAGS=(
          os.environ.get("XLA_FLAGS", "")
          + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
      ).strip(),
  )
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "benchmarks.race",
              *argv,
              "--resume",
              "--worker",
              str(i),
              "--phase",
              phase,
          ],
          env=env,
      )
      for i in range(min(args.workers, len(todo)))
  ]
  codes = [p.wait() for p in procs]
  if any(codes):
    raise SystemExit(
        f"race: a worker failed (exit codes {codes}); finished "
        "runs are saved, rerun with --resume"
    )


# ------------------------------------------------------------------ summary
def mean_std(values) -> tuple[float, float] | None:
  v = [float(x) for x in values if x is not None and np.isfinite(float(x))]
  return (float(np.mean(v)), float(np.std(v))) if v else None


def at(history, step, key):
  for h in history:
    if h["step"] >= step:
      return h[key] if h["step"] == step else None
  return None


def reach(history, target):
  """(iteration, train seconds) of the first evaluation at or below ``target``."""
  for h in history:
    if np.isfinite(h["objective"]) and h["objective"] <= target:
      return h["step"], h["seconds"]
  return None, None


def settle(history, target):
  """First iteration from which every later evaluation is at or below
  ``target`` (``None`` if the last one is above)."""
  ok = [
      np.isfinite(h["objective"]) and h["objective"] <= target for h in history
  ]
  if not ok or not ok[-1]:
    return None
  k = len(ok) - 1
  while k > 0 and ok[k - 1]:
    k -= 1
  return history[k]["step"]


def summarize(args, runs) -> dict:
  out = {}
  for t in args.tasks:
    n, n_tune = task_iterations(args, TASKS[t])
    checkpoints = sorted({n // 8, n // 4, n // 2, n})
    res = {}
    for m in task_methods(args, t):
      lr, scores = chosen_lr(args, runs, t, m)
      rs = [
          load(j.path(runs))
          for j in race_jobs(args, runs)
          if j.task == t and j.method == m
      ]
      rs = [r for r in rs if r is not None]
      if rs:
        res[m] = {"lr": lr, "tuning": scores, "runs": rs}
    base = res.get("sgd_wd")
    targets = {}
    if base:
      for c in (n // 4, n // 2, n):
        mean = mean_std(at(r["history"], c, "objective") for r in base["runs"])
        if mean:
          targets[c] = mean[0]
    table = {}
    for m, r in res.items():
      row = {
          "lr": r["lr"],
          "seeds": len(r["runs"]),
          "tuning": r["tuning"],
          "reach": {},
          "at": {},
          "jacobian_median": mean_std(x["jacobian_median"] for x in r["runs"]),
          "active_path_norm_mean": mean_std(
              x["active_path_norm_mean"] for x in r["runs"] if not x["diverged"]
          ),
      }
      for c, target in targets.items():
        its, secs = zip(*(reach(x["history"], target) for x in r["runs"]))
        stays = [settle(x["history"], target) for x in r["runs"]]
        row["reach"][c] = {
            "target": target,
            "iterations": mean_std(its),
            "seconds": mean_std(secs),
            "reached": sum(i is not None for i in its),
            "stays_below_from": mean_std(stays),
            "stays": sum(i is not None for i in stays),
        }
      for c in checkpoints:
        row["at"][c] = {
            k: mean_std(at(x["history"], c, k) for x in r["runs"])
            for k in ("objective", "active", "test_acc")
        }
      table[m] = row
    every = [
        x
        for r in res.values()
        for x in r["runs"]
        if np.isfinite(x["jacobian_median"])
    ]
    out[t] = {
        "iterations": n,
        "tune_iterations": n_tune,
        "checkpoints": checkpoints,
        "targets": targets,
        "methods": table,
        "jacobian_vs_unit_path_norm": {
            "runs": len(every),
            "spearman": spearman(
                [x["active_path_norm_mean"] for x in every],
                [x["jacobian_median"] for x in every],
            ),
        },
    }
  return out


def spearman(a, b) -> float | None:
  """Spearman rank correlation (no ties expected in float data)."""
  if len(a) < 3:
    return None
  ra, rb = (np.argsort(np.argsort(np.asarray(v))) for v in (a, b))
  return float(np.corrcoef(ra, rb)[0, 1])


def _pm(ms, fmt="{:.4g}", scale=1.0):
  if ms is None:
    return "-"
  return (fmt + " +- " + fmt).format(ms[0] * scale, ms[1] * scale)


def markdown(summary) -> str:
  lines = []
  for t, s in summary.items():
    lines += [
        (
            f"### {TASKS[t].title}, lambda {TASKS[t].lam:g}, "
            f"{s['iterations']} iterations"
        ),
        "",
    ]
    tg = s["targets"]
    last = max(tg) if tg else None
    if tg:
      head = (
          "| method | lr | seeds | "
          + " | ".join(
              f"iterations to SGD+WD@{c} ({v:.4g})" for c, v in tg.items()
          )
          + " | "
          + " | ".join(f"seconds to SGD+WD@{c}" for c in tg)
          + f" | stays below SGD+WD@{last} from |"
      )
      lines += [head, "|" + "---|" * (4 + 2 * len(tg))]
      for m, r in s["methods"].items():
        cells = []
        for key in ("iterations", "seconds"):
          for c in tg:
            x = r["reach"][c]
            v = _pm(x[key], "{:.0f}")
            if x["reached"] < r["seeds"]:
              v += f" ({x['reached']}/{r['seeds']} seeds)"
            cells.append(v)
        x = r["reach"][last]
        v = _pm(x["stays_below_from"], "{:.0f}")
        cells.append(
            v
            + (
                f" ({x['stays']}/{r['seeds']} seeds)"
                if x["stays"] < r["seeds"]
                else ""
            )
        )
        lines.append(
            f"| {METHODS[m].label} | {r['lr']:g} | {r['seeds']} | "
            + " | ".join(cells)
            + " |"
        )
      lines.append("")
    cps = s["checkpoints"]
    lines += [
        "| method | "
        + " | ".join(f"objective@{c}" for c in cps)
        + " | "
        + " | ".join(f"active %@{c}" for c in (cps[1], cps[-1]))
        + " | "
        + " | ".join(f"{TASKS[t].accuracy} %@{c}" for c in (cps[1], cps[-1]))
        + " | Jacobian norm (end) | path norm per active unit (end) |",
        "|" + "---|" * (3 + len(cps) + 4),
    ]
    for m, r in s["methods"].items():
      a = r["at"]
      lines.append(
          f"| {METHODS[m].label} | "
          + " | ".join(_pm(a[c]["objective"]) for c in cps)
          + " | "
          + " | ".join(
              _pm(a[c]["active"], "{:.1f}", 100) for c in (cps[1], cps[-1])
          )
          + " | "
          + " | ".join(
              _pm(a[c]["test_acc"], "{:.2f}", 100) for c in (cps[1], cps[-1])
          )
          + f" | {_pm(r['jacobian_median'], '{:.2f}')} | "
          f"{_pm(r['active_path_norm_mean'], '{:.3g}')} |"
      )
    jv = s["jacobian_vs_unit_path_norm"]
    if jv["spearman"] is not None:
      lines += [
          "",
          (
              f"Across all {jv['runs']} runs: Spearman correlation of the "
              "end Jacobian norm with the mean path norm of the active "
              f"units {jv['spearman']:.2f}."
          ),
      ]
    lines += [
        "",
        (
            "Tuning (objective at iteration "
            f"{s['tune_iterations']}, seed {s.get('tune_seed', '')}):"
        ),
        "",
    ]
    for m, r in s["methods"].items():
      sc = ", ".join(
          f"{lr:g}: {v:.4g}"
          for lr, v in sorted((float(k), v) for k, v in r["tuning"].items())
      )
      lines.append(f"* {METHODS[m].label}: {sc or 'fixed learning rate'}")
    lines.append("")
  return "\n".join(lines)


def plot(args, runs, summary, out, tag):
  plt = common.pyplot()
  figs = []
  for t, s in summary.items():
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for m in s["methods"]:
      rs = [
          load(j.path(runs))
          for j in race_jobs(args, runs)
          if j.task == t and j.method == m
      ]
      rs = [r for r in rs if r is not None]
      diverged = sum(r["diverged"] for r in rs)
      rs = [r for r in rs if not r["diverged"]] or rs  # a NaN ends the curve
      n = min(len(r["history"]) for r in rs)
      steps = np.array([h["step"] for h in rs[0]["history"][:n]])
      obj = np.array([[h["objective"] for h in r["history"][:n]] for r in rs])
      act = np.array([[h["active"] for h in r["history"][:n]] for r in rs])
      secs = np.array([[h["seconds"] for h in r["history"][:n]] for r in rs])
      if not np.isfinite(obj[:, 1:]).any():
        continue  # diverged at once
      meth = METHODS[m]
      kw = dict(color=meth.color, ls=meth.style)
      for ax, x in ((axes[0], steps), (axes[1], secs.mean(0))):
        ax.plot(
            x[1:],
            np.exp(np.log(obj[:, 1:]).mean(0)),
            label=f"{meth.label} ({len(rs)} seed{'s' * (len(rs) > 1)}"
            + (f"; {diverged} more diverged)" if diverged else ")"),
            **kw,
        )
        ax.fill_between(
            x[1:],
            obj[:, 1:].min(0),
            obj[:, 1:].max(0),
            color=meth.color,
            alpha=0.15,
            lw=0,
        )
      axes[2].plot(steps, 100 * act.mean(0), **kw)
      axes[2].fill_between(
          steps,
          100 * act.min(0),
          100 * act.max(0),
          color=meth.color,
          alpha=0.15,
          lw=0,
      )
    for ax in axes[:2]:
      ax.set_yscale("log")
      for c, v in s["targets"].items():
        ax.axhline(v, color="gray", lw=0.7, ls=":")
        ax.text(
            ax.get_xlim()[0],
            v,
            f" SGD+WD@{c}",
            fontsize=6,
            color="gray",
            va="bottom",
        )
      ax.set_ylabel("weight decay objective (balanced, train)")
      ax.grid(alpha=0.3)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("training seconds (mean over seeds)")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("active units (%)")
    axes[2].set_ylim(0, 105)
    axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"{TASKS[t].title}, lambda {TASKS[t].lam:g}: geometric mean "
        f"and min-max over the seeds run (up to {args.seeds}; see the "
        "table), each method at its tuned learning rate"
        + (" [QUICK]" if args.quick else ""),
        fontsize=10,
    )
    fig.tight_layout()
    figs += common.save_figure(
        fig, os.path.join(out, f"race_{t}{tag}.png"), args.copy_figures
    )
  return figs


# -------------------------------------------------------------------- main
def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  out, tag, runs = common.run_dirs("race", args.out, args.quick)
  if args.worker is not None:  # a worker of run_phase
    jobs = (
        tuning_jobs(args, runs)
        if args.phase == "tune"
        else race_jobs(args, runs)
    )
    return work(args, runs, jobs)
  if not args.replot:
    for lock in glob.glob(os.path.join(runs, "**", "*.lock"), recursive=True):
      os.remove(lock)  # left by a killed run
    done = [
        j
        for j in tuning_jobs(args, runs) + race_jobs(args, runs)
        if os.path.exists(j.path(runs))
    ]
    if done and not args.resume:
      raise SystemExit(
          f"race: {len(done)} finished runs are in {runs}; pass "
          "--resume to keep them and run the rest, or delete them"
      )
    t0 = time.perf_counter()
    run_phase(args, argv, runs, "tune")
    run_phase(args, argv, runs, "race")
    print(f"training done in {time.perf_counter() - t0:.0f} s", flush=True)
  summary = summarize(args, runs)
  for s in summary.values():
    s["tune_seed"] = args.tune_seed
  text = markdown(summary)
  print(text)
  figs = plot(args, runs, summary, out, tag)
  with open(os.path.join(out, f"race{tag}.md"), "w") as fh:
    fh.write(text)
  common.save_json(
      os.path.join(out, f"race{tag}.json"),
      {
          "config": vars(args),
          "environment": common.environment(),
          "summary": summary,
      },
  )
  print("figures:", ", ".join(figs))
  return summary


if __name__ == "__main__":
  main()
