"""Shared pieces of the benchmark scripts: functional models, optimizers,
penalties, a scan-based training loop, evaluation, JSON/figure output.

Training never syncs with the host per step: ``make_chunk_runner`` jit-compiles
``k`` optimizer steps as one ``lax.scan`` over batch indices sampled on the
host in advance (donated parameter and optimizer-state buffers); metrics are
computed by a separate jitted evaluator every ``eval_every`` steps.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHOD_LABELS = {
    "pathprox": "PathProx",
    "pathprox_nobalance": "PathProx (no balancing)",
    "weight_decay": "SGD + weight decay",
    "pathnorm_sgd": "SGD on path-norm objective",
    "lasso": "SGD + lasso",
    "group_lasso": "SGD + group lasso",
    "weight_norm": "SGD + weight decay + weight norm",
}
METHOD_COLORS = {
    "pathprox": "tab:red",
    "pathprox_nobalance": "tab:orange",
    "weight_decay": "tab:blue",
    "pathnorm_sgd": "tab:green",
    "lasso": "tab:purple",
    "group_lasso": "tab:brown",
    "weight_norm": "tab:cyan",
}


# --------------------------------------------------------------------- models
class Functional(NamedTuple):
  """A Flax NNX model split into a pure ``apply(params, x)`` and its params.

  ``params`` is a plain nested dict (``nnx.to_pure_dict``), so optax and
  :class:`~pathprox_jax.UnitSpec` see ordinary pytrees.
  """

  apply: Callable[[Any, jax.Array], jax.Array]
  params: Any
  spec: ppx.UnitSpec | None


def functional(model: nnx.Module, with_spec: bool = True) -> Functional:
  """Splits ``model`` into a pure apply function and a dict of parameters."""
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)

  def apply(p, x):
    s = jax.tree.map(lambda a: a, state)
    nnx.replace_by_pure_dict(s, p)
    return nnx.merge(graphdef, s)(x)

  spec = model.unit_spec() if with_spec else None  # the model's own links
  return Functional(apply, params, spec)


def copy_tree(tree: Any) -> Any:
  """A fresh device copy (inputs to donating functions must not be shared)."""
  return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def dense_kernels(params: Any) -> list[jax.Array]:
  """The kernels of a ``layers/i`` model, in layer order."""
  layers = params["layers"]
  return [layers[i]["kernel"] for i in sorted(layers)]


# ------------------------------------------------------------------ penalties
def l1_penalty(params: Any) -> jax.Array:
  """``sum |K|`` over all kernels (lasso)."""
  leaves = jax.tree.leaves(
      jax.tree.map(
          lambda m, x: jnp.sum(jnp.abs(x)) if m else 0.0,
          ppx.units.kernel_mask(params),
          params,
      )
  )
  return sum(leaves, jnp.zeros([], jnp.float32))


def hidden_layer_specs(
    params: Any, relu_after: Sequence[int]
) -> list[ppx.UnitSpec]:
  """One single-group spec per ReLU hidden layer of a ``layers/i`` model (the
  layer after ``l`` in ``relu_after`` and the next one). Consecutive hidden
  layers share a kernel, so they cannot be groups of one (disjoint) spec."""
  return [
      ppx.UnitSpec.from_pairs(params, [(f"layers/{l}", f"layers/{l + 1}")])
      for l in relu_after
  ]


def hidden_unit_norms(
    params: Any, relu_after: Sequence[int]
) -> list[tuple[jax.Array, jax.Array]]:
  """For every ReLU hidden layer, the library's per-neuron ``(||w_i||, ||v_i||)``."""
  return [
      ppx.prox.unit_norms(s.split(params)[0][0])
      for s in hidden_layer_specs(params, relu_after)
  ]


def group_lasso_penalty(params: Any, relu_after: Sequence[int]) -> jax.Array:
  """``sum over hidden ReLU neurons of ||w_i|| + ||v_i||`` (group lasso on the
  input and on the output weights of every unit)."""
  return sum(
      (
          jnp.sum(nw) + jnp.sum(nv)
          for nw, nv in hidden_unit_norms(params, relu_after)
      ),
      jnp.zeros([], jnp.float32),
  )


def hidden_unit_path_norms(
    params: Any, relu_after: Sequence[int]
) -> list[jax.Array]:
  """``||w_i|| ||v_i||`` for every ReLU hidden neuron, per hidden layer."""
  return [nw * nv for nw, nv in hidden_unit_norms(params, relu_after)]


# ----------------------------------------------------------------- optimizers
def project_inputs(spec: ppx.UnitSpec) -> optax.GradientTransformationExtraArgs:
  """Projects every unit's input weights to the unit sphere after the step
  (weight normalisation as a projection, paper Table 2)."""
  return ppx.map_units(
      spec, lambda groups: [ppx.prox.project_unit_sphere(x) for x in groups]
  )


def kernel_decay(lam: float) -> optax.GradientTransformation:
  """Coupled weight decay: ``g + lam K`` on every kernel (biases not decayed),
  the gradient of ``lam/2 sum ||K||^2``."""
  return optax.add_decayed_weights(lam, mask=ppx.units.kernel_mask)


def weight_decay_sgd(lr, lam: float) -> optax.GradientTransformation:
  """SGD on ``L + lam/2 sum ||K||^2`` (kernels only, biases not decayed)."""
  return optax.chain(kernel_decay(lam), optax.sgd(lr))


def make_method(
    method: str,
    lr,
    lam: float,
    spec: ppx.UnitSpec | None,
    relu_after: Sequence[int] | None = None,
):
  """``(optax transform, penalty(params) added to the training loss)``."""
  zero = lambda p: jnp.zeros([], jnp.float32)
  if method == "pathprox":
    return ppx.pathprox(lr, lam, spec), zero
  if method == "pathprox_nobalance":
    return ppx.pathprox(lr, lam, spec, balance=False), zero
  if method == "weight_decay":
    return weight_decay_sgd(lr, lam), zero
  if method == "weight_norm":
    return optax.chain(weight_decay_sgd(lr, lam), project_inputs(spec)), zero
  if method == "pathnorm_sgd":
    return optax.sgd(lr), lambda p: lam * ppx.path_norm_penalty(p, spec)
  if method == "adam_l2":  # Adam on L + lam/2 ||K||^2 (coupled decay)
    return optax.chain(kernel_decay(lam), optax.adam(lr)), zero
  if method == "adamw":  # decoupled decay, as a user writes it
    return optax.adamw(lr, weight_decay=lam, mask=ppx.units.kernel_mask), zero
  if method == "proxgen_unit":  # ProxGen-Adam, group lasso on every unit's v
    # Kernels in no group (a transformer's attention) get the objective's
    # coupled decay, as pathprox and adaptive_pathprox give them.
    return (
        optax.chain(
            ppx.ungrouped_weight_decay(lam, spec),
            ppx.proxgen_adam(lr, lam, ppx.prox.unit_group_lasso(spec)),
        ),
        zero,
    )
  if method == "lasso":
    return optax.sgd(lr), lambda p: lam * l1_penalty(p)
  if method == "group_lasso":
    return optax.sgd(lr), lambda p: lam * group_lasso_penalty(p, relu_after)
  raise ValueError(f"Unknown method {method!r}; known: {sorted(METHOD_LABELS)}")


# ------------------------------------------------------------------- training
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class BatchSampler:
  """Epoch-wise shuffled batch indices (like a PyTorch DataLoader with
  ``shuffle=True, drop_last=True``), produced ``k`` steps at a time."""

  def __init__(self, n: int, batch_size: int, seed: int):
    if batch_size > n:
      raise ValueError(f"batch_size {batch_size} > number of examples {n}")
    self.n, self.batch_size = n, batch_size
    self.rng = np.random.default_rng(seed)
    self.buffer = np.zeros((0,), np.int32)

  def take(self, steps: int) -> np.ndarray:
    need = steps * self.batch_size
    per_epoch = self.n - self.n % self.batch_size
    while len(self.buffer) < need:
      self.buffer = np.concatenate([
          self.buffer,
          self.rng.permutation(self.n)[:per_epoch].astype(np.int32),
      ])
    out, self.buffer = self.buffer[:need], self.buffer[need:]
    return out.reshape(steps, self.batch_size)


def make_chunk_runner(apply_fn, tx, penalty=None, augment=None):
  """Returns ``run(params, opt_state, x, y, idx, key, mask=None)`` doing
  ``idx.shape[0]`` optimizer steps in one jitted ``lax.scan`` (parameter and
  optimizer-state buffers donated).

  Args:
    apply_fn: ``apply(params, x) -> logits``.
    tx: optax transform (``update`` receives ``params``).
    penalty: optional ``params -> scalar`` added to the mean cross-entropy.
    augment: optional ``(key, images) -> images`` applied to every batch.

  ``mask`` (a pytree of 0/1 arrays shaped like the params, or ``None``)
  multiplies the gradients and the parameters after every step, so pruned
  units stay exactly zero; it is an argument, so changing it does not
  recompile.
  """
  penalty = penalty or (lambda p: jnp.zeros([], jnp.float32))

  def loss_fn(p, xb, yb):
    return cross_entropy(apply_fn(p, xb), yb) + penalty(p)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def run(params, opt_state, x, y, idx, key, mask=None):
    def body(carry, bi):
      p, s, k = carry
      xb, yb = x[bi], y[bi]
      if augment is not None:
        k, sub = jax.random.split(k)
        xb = augment(sub, xb)
      g = jax.grad(loss_fn)(p, xb, yb)
      if mask is not None:
        g = jax.tree.map(lambda a, m: a * m, g, mask)
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      if mask is not None:
        p = jax.tree.map(lambda a, m: a * m, p, mask)
      return (p, s, k), None

    (params, opt_state, _), _ = jax.lax.scan(
        body, (params, opt_state, key), idx
    )
    return params, opt_state

  return run


def predict_batched(apply_fn, params, x, batch: int = 1000) -> jax.Array:
  """Logits for ``x`` in chunks (inside jit: static shapes)."""
  n = x.shape[0]
  if n <= batch:
    return apply_fn(params, x)
  outs = [apply_fn(params, x[i : i + batch]) for i in range(0, n, batch)]
  return jnp.concatenate(outs)


def train(
    params,
    tx,
    run,
    x_train,
    y_train,
    *,
    iterations: int,
    batch_size: int,
    eval_every: int,
    evaluate,
    seed: int,
    desc: str = "train",
    progress: bool = True,
    on_eval=None,
    postfix: Sequence[str] = (
        "objective",
        "loss",
        "active",
        "test_acc",
        "val_acc",
    ),
    mask=None,
):
  """Runs ``iterations`` steps in chunks of ``eval_every``; evaluates at 0 and
  after every chunk. Returns ``(params, history)`` where ``history`` is a list
  of metric dicts (with key ``step``).

  ``evaluate(params) -> dict`` must be jitted; ``on_eval(step, params,
  metrics)`` is an optional host callback (checkpoint selection; copy the
  params there to keep them: their buffers are donated to the next chunk).
  ``mask`` is passed to ``run`` (see :func:`make_chunk_runner`).
  """
  opt_state = tx.init(params)
  sampler = BatchSampler(len(x_train), batch_size, seed)
  key = jax.random.key(seed)
  x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)
  history = []

  def log(step, p):
    m = {k: float(v) for k, v in jax.device_get(evaluate(p)).items()}
    m["step"] = step
    history.append(m)
    if on_eval is not None:
      on_eval(step, p, m)
    return m

  m = log(0, params)
  bar = progress_bar(iterations, desc, disable=not progress)
  step = 0
  while step < iterations:
    k = min(eval_every, iterations - step)
    idx = jnp.asarray(sampler.take(k))
    key, sub = jax.random.split(key)
    params, opt_state = run(params, opt_state, x_dev, y_dev, idx, sub, mask)
    step += k
    m = log(step, params)
    bar.update(k)
    shown = [kk for kk in postfix if kk in m] or [
        kk for kk in m if kk != "step"
    ][:3]
    bar.set_postfix({kk: f"{m[kk]:.4g}" for kk in shown})
  bar.close()
  return params, history


class _LineWriter:
  """A file for tqdm that turns its carriage-return redraws into lines."""

  def __init__(self, stream, every: float = 30.0):
    self.stream, self.every, self.last = stream, every, -float("inf")

  def write(self, text):
    text = text.replace("\r", "").strip()
    now = time.monotonic()
    if text and (now - self.last >= self.every or "100%" in text):
      self.last = now
      self.stream.write(text + "\n")

  def flush(self):
    self.stream.flush()


def progress_bar(total: int, desc: str, *, disable: bool = False):
  """A tqdm bar; in a log file (stderr not a terminal) at most one line every
  30 s (and the last) instead of carriage-return redraws."""
  import sys

  from tqdm.auto import tqdm

  if disable or sys.stderr.isatty():
    return tqdm(
        total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True
    )
  return tqdm(
      total=total,
      desc=desc,
      file=_LineWriter(sys.stderr),
      mininterval=1,
      ncols=110,
      ascii=True,
  )


# ------------------------------------------------------------------ metrics
def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def count_time(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


# ------------------------------------------------------------------ latency
def latency(
    fns: dict[str, Callable[[], Any]], rounds: int, block: int, warmup: int = 3
) -> dict[str, dict]:
  """Interleaved timing of zero-argument jitted calls (see module doc)."""
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times = {k: [] for k in fns}
  per_round = {k: [] for k in fns}
  names = list(fns)
  for r in range(rounds):
    for k in names[r % len(names) :] + names[: r % len(names)]:
      block_times = []
      for _ in range(block):
        t = time.perf_counter()
        jax.block_until_ready(fns[k]())
        block_times.append(time.perf_counter() - t)
      times[k] += block_times
      per_round[k].append(float(np.median(block_times)))
  out = {}
  for k in names:
    t = np.asarray(times[k]) * 1e3
    out[k] = {
        "median_ms": float(np.median(t)),
        "iqr_ms": [float(np.percentile(t, 25)), float(np.percentile(t, 75))],
        "calls": len(t),
    }
  base = names[0]
  for k in names[1:]:
    ratios = np.asarray(per_round[base]) / np.asarray(per_round[k])
    out[k]["speedup_vs_" + base] = {
        "median": float(np.median(ratios)),
        "iqr": [
            float(np.percentile(ratios, 25)),
            float(np.percentile(ratios, 75)),
        ],
    }
  return out


# ------------------------------------------------------------------------ IO
def results_dir(name: str, out: str | None) -> str:
  path = out or os.path.join(REPO_ROOT, "results", name)
  os.makedirs(path, exist_ok=True)
  return path


def run_dirs(name: str, out: str | None, quick: bool) -> tuple[str, str, str]:
  """``(results dir, "_quick" or "", dir of the per-run JSON files)`` of a
  resumable benchmark (both directories created)."""
  path = results_dir(name, out)
  tag = "_quick" if quick else ""
  runs = os.path.join(path, f"runs{tag}")
  os.makedirs(runs, exist_ok=True)
  return path, tag, runs


def _jsonable(obj):
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)):
    return _jsonable(np.asarray(obj).tolist())
  if isinstance(obj, (np.floating,)):
    obj = float(obj)
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.bool_,)):
    return bool(obj)
  return obj


def save_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically (a kill never leaves half a file)."""
  with open(path + ".tmp", "w") as f:
    json.dump(_jsonable(obj), f, indent=1)
  os.replace(path + ".tmp", path)


def _from_json(obj):
  """Inverse of :func:`_jsonable` for non-finite floats ("inf", "nan")."""
  if isinstance(obj, dict):
    return {k: _from_json(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_from_json(v) for v in obj]
  if obj in ("inf", "-inf", "nan"):
    return float(obj)
  return obj


def load_json(path: str) -> Any:
  with open(path) as f:
    return _from_json(json.load(f))


OUTPUT_OPTIONS = (
    "out",
    "no_progress",
    "copy_figures",
    "replot",
    "tag",
    "resume",
)


def run_config(args, skip: Sequence[str] = ()) -> dict:
  """What a saved run depends on: ``args`` without output/display options."""
  return {
      k: v
      for k, v in vars(args).items()
      if k not in OUTPUT_OPTIONS and k not in skip
  }


def cached_run(
    run_dir: str,
    name: str,
    config: dict,
    resume: bool,
    compute: Callable[[], Any],
) -> Any:
  """``compute()``, saved to ``run_dir/name.json`` as soon as it returns.

  With ``resume`` a saved result of the same ``config`` is loaded instead.
  Either way the result comes back through JSON (arrays as lists), so a
  resumed run and a fresh one are used identically.
  """
  path = os.path.join(run_dir, name + ".json")
  want = _from_json(json.loads(json.dumps(_jsonable(config))))
  if resume and os.path.exists(path):
    saved = load_json(path)
    if saved["config"] == want:
      print(f"[{name}] finished before, loaded {path}", flush=True)
      return saved["result"]
    print(f"[{name}] {path} holds another configuration: running", flush=True)
  save_json(path, {"config": config, "result": compute()})
  return load_json(path)["result"]


def environment() -> dict:
  return {
      "jax": jax.__version__,
      "optax": optax.__version__,
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
  }


def pyplot():
  """matplotlib.pyplot with the Agg backend."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, path: str, copy_to_docs: bool = False) -> list[str]:
  """Saves ``fig`` as PNG at ``path`` (and, if asked, into ``docs/figures``),
  then closes it."""
  fig.savefig(path, dpi=130, bbox_inches="tight")
  paths = [path]
  if copy_to_docs:
    docs = os.path.join(REPO_ROOT, "docs", "figures")
    os.makedirs(docs, exist_ok=True)
    dst = os.path.join(docs, os.path.basename(path))
    fig.savefig(dst, dpi=130, bbox_inches="tight")
    paths.append(dst)
  pyplot().close(fig)
  return paths


def base_parser(
    description: str,
    *,
    quick_time: str,
    resume: bool = True,
    figures: bool = True,
) -> argparse.ArgumentParser:
  """The options every benchmark shares.

  Args:
    description: the ``--help`` summary.
    quick_time: the measured wall time of ``--quick`` on the 2 shared CPU
      cores of the development machine, e.g. ``"about 30 s"`` (shown in
      ``--help``; ``benchmarks/RESULTS.md``, "Smoke runs", has the table).
    resume: offer ``--resume`` (only where finished parts are saved).
    figures: offer ``--copy-figures`` (only where PNGs are drawn).
  """
  p = argparse.ArgumentParser(
      description=description,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help=(
          "tiny configuration, a smoke test (measured: "
          f"{quick_time} on 2 shared CPU cores)"
      ),
  )
  p.add_argument("--seed", type=int, default=0, help="model init / batch seed")
  p.add_argument(
      "--out",
      default=None,
      help="output directory (default: results/<benchmark>/)",
  )
  p.add_argument(
      "--no-progress", action="store_true", help="disable the tqdm progress bar"
  )
  if figures:
    p.add_argument(
        "--copy-figures",
        action="store_true",
        help="also write the PNGs into docs/figures/",
    )
  if resume:
    p.add_argument(
        "--resume",
        action="store_true",
        help=(
            "load the parts a previous run of the same command "
            "saved (results/<benchmark>/runs/) and do only the "
            "missing ones"
        ),
    )
  return p


def fmt_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
  rows = [[str(c) for c in r] for r in rows]
  widths = [
      max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
      for i, h in enumerate(header)
  ]
  line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
  return "\n".join(
      [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
  )
