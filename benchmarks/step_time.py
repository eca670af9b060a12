"""Step time of PathProx against SGD + weight decay (and ProxGen-Adam vs Adam).

What is measured (all on the default JAX backend, float32):

* **full step**: one jit-compiled training step -- forward, backward,
  ``tx.update``, ``optax.apply_updates`` -- with the parameter and optimizer
  state buffers donated (``donate_argnums``), on one fixed batch that stays
  on the device (no input pipeline). Each call is timed on the host with
  ``block_until_ready``; the dispatch overhead is included, identically for
  every variant.
* **update alone**: ``tx.update`` + ``apply_updates`` jitted on fixed
  gradients (same donation), i.e. the optimizer's own cost.
* **interleaving**: the machine is shared, so every variant of one
  measurement is run in the same process in round-robin blocks of
  ``--block`` calls for ``--rounds`` rounds (the starting variant rotates
  every round). Reported: the median over all timed calls with the
  inter-quartile range, and the ratio to the baseline computed per round
  (median of the variant's block / median of the baseline's block in the
  same round), summarised by the median and IQR over rounds -- so a load
  burst that hits one round moves both numbers of that round.
* **compile time**: ``jax.jit(f).lower(...)`` (tracing) and ``.compile()``
  (XLA) timed separately, on a fresh ``jax.jit`` object.
* **memory**: XLA's static buffer assignment of the compiled step
  (``compiled.memory_analysis()``): arguments, outputs, aliased (donated)
  bytes and temporaries; ``peak = args + outputs - aliased + temps``. It is
  exact for what XLA allocates and independent of the machine load (it does
  not include the Python process or the runtime).
* **HLO of the update**: fusions/kernels in the compiled update, the number
  of reductions over parameter-sized arrays (the per-unit norms: a fused
  balance + prox computes ``||w_i||`` and ``||v_i||`` once, i.e. ``2G`` for
  ``G`` groups), parameter-sized intermediates written (values such as
  ``z = params + updates`` that are not outputs; buffer assignment decides
  whether they get a temporary or reuse a donated buffer: see the temp
  bytes of ``memory_analysis``), how often each parameter buffer is read,
  and XLA's ``cost_analysis`` bytes accessed.
* **width sweep**: update-alone time on ``FactorizedMLP(3, width)`` against
  the parameter count, with a log-log slope (1 = linear).

Models: MLP-3-400 factorized (``FactorizedMLP(3, 400)``, batch 200), MLP-6-400
(``MLP(6, 400)``, batch 200) on 784-d inputs, and VGG19 (no BatchNorm) on
32x32x3 images, batch 128, at ``--width-multiplier`` (default 0.25: channels
16 ... 128, about 1.25M parameters, instead of 64 ... 512; a CPU-sized
stand-in). Inputs are standard-normal and labels uniform (a fixed batch), so
the data has no effect on speed.

Targets (issue 5): PathProx full step / SGD+WD full step <= 1.03 on MLP-3-400
factorized and <= 1.02 on VGG19; PathProx update alone <= 3x SGD+WD update
alone; update cost linear in the parameter count.

Usage::

    python -m benchmarks.step_time            # default, ~8-10 min on 2 cores
    python -m benchmarks.step_time --quick    # smoke test, 13-32 s

The dispatch floor, each model and the width sweep are saved to
``results/step_time/runs/`` as soon as each is measured; ``--resume`` loads
them instead of measuring again (each part's ratios come from its own
interleaved rounds, so parts measured at different times stay comparable
within themselves). Measured numbers: ``benchmarks/RESULTS.md``, "Step time".
"""

from __future__ import annotations

import os
import re
import resource
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common

BASELINES = {
    "pathprox": "sgd_wd",
    "pathprox_nobalance": "sgd_wd",
    "pathprox_inplace": "sgd_wd",
    "sgd_wd": "sgd_wd",
    "proxgen_adam": "adam",
    "adam": "adam",
}
VARIANT_LABELS = {
    "sgd_wd": "SGD + weight decay",
    "pathprox": "PathProx (balance)",
    "pathprox_nobalance": "PathProx (no balance)",
    "pathprox_inplace": "PathProx in-place (pathprox_params)",
    "adam": "Adam",
    "proxgen_adam": "ProxGen-Adam (l1)",
}
TARGETS = {
    ("mlp3f", "pathprox", "step"): 1.03,
    ("vgg19", "pathprox", "step"): 1.02,
    ("*", "pathprox", "update"): 3.0,
}
# Options only the width sweep uses, and options the sweep does not use (what
# each saved part does not depend on; see ``--resume``).
SWEEP_OPTIONS = (
    "sweep_widths",
    "sweep_rounds",
    "sweep_block",
    "big_step_rounds",
    "big_step_block",
    "no_sweep",
)
MODEL_OPTIONS = (
    "vgg_step_variants",
    "vgg_batch",
    "width_multiplier",
    "vgg_rounds",
    "vgg_block",
    "no_hlo",
    "no_sweep",
)


# ------------------------------------------------------------------ options
def parse_args(argv=None):
  p = common.base_parser(__doc__.split("\n\n")[0], quick_time="13-32 s")
  p.add_argument(
      "--models",
      nargs="+",
      default=None,
      choices=["mlp3f", "mlp6", "vgg19"],
      help="default: all three (--quick: mlp3f only)",
  )
  p.add_argument(
      "--variants",
      nargs="+",
      default=[
          "sgd_wd",
          "pathprox",
          "pathprox_nobalance",
          "pathprox_inplace",
          "adam",
          "proxgen_adam",
      ],
      choices=list(VARIANT_LABELS),
  )
  p.add_argument(
      "--vgg-step-variants",
      nargs="+",
      default=["sgd_wd", "pathprox", "pathprox_inplace"],
      choices=list(VARIANT_LABELS),
      help=(
          "variants whose VGG19 full step is timed (each VGG "
          "step takes ~1 s here; all --variants get the "
          "update-alone timing)"
      ),
  )
  p.add_argument("--lr", type=float, default=0.05, help="learning rate")
  p.add_argument("--weight-decay", type=float, default=1e-4, help="lambda")
  p.add_argument("--mlp-batch", type=int, default=200)
  p.add_argument("--vgg-batch", type=int, default=128)
  p.add_argument(
      "--width-multiplier",
      type=float,
      default=0.25,
      help="VGG19 channel multiplier (1.0 = 64..512 channels)",
  )
  p.add_argument(
      "--warmup",
      type=int,
      default=3,
      help="untimed calls per variant after compilation",
  )
  p.add_argument(
      "--rounds",
      type=int,
      default=10,
      help="round-robin rounds (MLP full steps and updates)",
  )
  p.add_argument(
      "--block", type=int, default=8, help="timed calls per variant per round"
  )
  p.add_argument("--vgg-rounds", type=int, default=6)
  p.add_argument("--vgg-block", type=int, default=9)
  p.add_argument(
      "--sweep-widths", type=int, nargs="+", default=[100, 200, 400, 800, 1600]
  )
  p.add_argument("--sweep-rounds", type=int, default=5)
  p.add_argument("--sweep-block", type=int, default=8)
  p.add_argument(
      "--big-step-rounds",
      type=int,
      default=3,
      help="rounds of full steps at the largest sweep width (0: skip)",
  )
  p.add_argument("--big-step-block", type=int, default=4)
  p.add_argument("--no-sweep", action="store_true")
  p.add_argument(
      "--from-json",
      default=None,
      help=(
          "re-print the tables and re-draw the figures of a "
          "saved results JSON (no measurement)"
      ),
  )
  p.add_argument(
      "--no-hlo",
      action="store_true",
      help="skip the HLO analysis of the updates",
  )
  args = p.parse_args(argv)
  if args.models is None:
    args.models = ["mlp3f"] if args.quick else ["mlp3f", "mlp6", "vgg19"]
  if args.quick:
    args.rounds, args.block = 2, 3
    args.vgg_rounds, args.vgg_block = 2, 2
    args.sweep_rounds, args.sweep_block = 2, 2
    args.big_step_rounds, args.big_step_block = 1, 2
    args.sweep_widths = [16, 32]
    args.warmup = 1
    args.width_multiplier = min(args.width_multiplier, 1 / 16)
    args.vgg_batch = min(args.vgg_batch, 8)
    args.mlp_batch = min(args.mlp_batch, 32)
    args.quick_width = 32
  else:
    args.quick_width = None
  return args


# ------------------------------------------------------------------ setup
class Setup(NamedTuple):
  name: str
  label: str
  fn: common.Functional
  x: jax.Array
  y: jax.Array


def make_model(name: str, args, width: int | None = None) -> Setup:
  rngs = nnx.Rngs(args.seed)
  w = width or args.quick_width or 400
  if name == "mlp3f":
    model, label = ppx.FactorizedMLP(3, w, rngs=rngs), f"MLP-3-{w} factorized"
    shape, batch = (784,), args.mlp_batch
  elif name == "mlp6":
    model, label = ppx.MLP(6, w, rngs=rngs), f"MLP-6-{w}"
    shape, batch = (784,), args.mlp_batch
  elif name == "vgg19":
    model = ppx.VGG19(width_multiplier=args.width_multiplier, rngs=rngs)
    label = f"VGG19 x{args.width_multiplier:g}"
    shape, batch = (32, 32, 3), args.vgg_batch
  else:
    raise ValueError(f"Unknown model {name!r}.")
  r = np.random.default_rng(args.seed)
  x = jnp.asarray(r.normal(size=(batch, *shape)).astype(np.float32))
  y = jnp.asarray(r.integers(0, 10, size=(batch,)).astype(np.int32))
  return Setup(name, f"{label}, batch {batch}", common.functional(model), x, y)


def make_tx(variant: str, spec: ppx.UnitSpec, lr: float, lam: float):
  if variant == "sgd_wd":
    return common.weight_decay_sgd(lr, lam)
  if variant == "pathprox":
    return ppx.pathprox(lr, lam, spec)
  if variant == "pathprox_nobalance":
    return ppx.pathprox(lr, lam, spec, balance=False)
  if variant == "pathprox_inplace":
    return pathprox_inplace(lr, lam, spec)
  if variant == "adam":
    return optax.adam(lr)
  if variant == "proxgen_adam":
    return ppx.proxgen_adam(lr, lam, ppx.prox.prox_l1)
  raise ValueError(f"Unknown variant {variant!r}.")


class InPlaceProx(NamedTuple):
  """An optimizer as ``tx`` (gradient part) + ``post(params)`` applied after
  ``optax.apply_updates`` (how optax's own projections are used)."""

  tx: optax.GradientTransformation
  post: Callable[[Any], Any]


def pathprox_inplace(
    lr: float, lam: float, spec: ppx.UnitSpec, balance: bool = True
) -> InPlaceProx:
  """``ppx.pathprox_gradient`` then ``ppx.pathprox_params`` after
  ``optax.apply_updates``: the same math as ``ppx.pathprox``, applied to the
  parameters instead of returning ``prox(z) - params`` as an update.
  ``params`` is then dead once ``z`` exists, so XLA can write ``z`` and
  ``prox(z)`` into the donated parameter buffers: no parameter-sized
  temporary (``benchmarks/RESULTS.md``, "Step time")."""
  return InPlaceProx(
      ppx.pathprox_gradient(lr, lam, spec),
      lambda params: ppx.pathprox_params(
          params, spec, lr, lam, balance=balance
      ),
  )


def init_state(tx, params):
  return (tx.tx if isinstance(tx, InPlaceProx) else tx).init(params)


def apply_tx(tx, grads, state, params):
  """``(new_params, new_state)`` for an optax transform or an InPlaceProx."""
  if isinstance(tx, InPlaceProx):
    u, state = tx.tx.update(grads, state, params)
    return tx.post(optax.apply_updates(params, u)), state
  u, state = tx.update(grads, state, params)
  return optax.apply_updates(params, u), state


# ------------------------------------------------------------ compiled fns
class Runner:
  """A compiled function called repeatedly; donated outputs feed back in.

  ``compiled(*args)`` returns a tuple whose first ``n_carry`` entries
  replace ``args[:n_carry]`` (the donated buffers) for the next call.
  """

  def __init__(self, name, fn, args, n_carry, donate):
    self.name = name
    jitted = jax.jit(fn, donate_argnums=donate)
    t = time.perf_counter()
    lowered = jitted.lower(*args)
    self.lower_s = time.perf_counter() - t
    t = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - t
    self.args = list(common.copy_tree(args[:n_carry])) + list(args[n_carry:])
    self.n_carry = n_carry
    t = time.perf_counter()
    self.call()
    self.first_call_s = time.perf_counter() - t

  def call(self) -> tuple[float, float, int]:
    """One call: (wall seconds, process CPU seconds, minor page faults)."""
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c = time.process_time()
    t = time.perf_counter()
    out = self.compiled(*self.args)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t
    dc = time.process_time() - c
    df = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
    self.args[: self.n_carry] = out[: self.n_carry]
    self.last = out
    return dt, dc, df

  def memory(self) -> dict:
    try:
      m = self.compiled.memory_analysis()
    except Exception as e:  # pragma: no cover - backend dependent
      return {"error": str(e)}
    d = {
        k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
        for k in ("argument", "output", "alias", "temp", "generated_code")
    }
    d["peak"] = d["argument"] + d["output"] - d["alias"] + d["temp"]
    return d

  def cost(self) -> dict:
    try:
      c = self.compiled.cost_analysis()
      c = c[0] if isinstance(c, (list, tuple)) else c
      return {
          "flops": float(c.get("flops", float("nan"))),
          "bytes_accessed": float(c.get("bytes accessed", float("nan"))),
      }
    except Exception as e:  # pragma: no cover
      return {"error": str(e)}


def cross_entropy_loss(apply_fn):
  def loss_fn(p, x, y):
    return common.cross_entropy(apply_fn(p, x), y)

  return loss_fn


def step_runner(variant: str, setup: Setup, tx) -> Runner:
  loss_fn = cross_entropy_loss(setup.fn.apply)

  def step(params, state, x, y):
    loss, g = jax.value_and_grad(loss_fn)(params, x, y)
    params, state = apply_tx(tx, g, state, params)
    return params, state, loss

  params = setup.fn.params
  return Runner(
      variant,
      step,
      (params, init_state(tx, params), setup.x, setup.y),
      n_carry=2,
      donate=(0, 1),
  )


def fixed_grads(setup: Setup):
  """Gradients of the loss at the initial parameters (a realistic scale)."""
  loss_fn = cross_entropy_loss(setup.fn.apply)
  return jax.jit(jax.grad(loss_fn))(setup.fn.params, setup.x, setup.y)


def update_fn(tx):
  def upd(params, state, grads):
    return apply_tx(tx, grads, state, params)

  return upd


def update_runner(variant: str, params, grads, tx) -> Runner:
  return Runner(
      variant,
      update_fn(tx),
      (params, init_state(tx, params), grads),
      n_carry=2,
      donate=(0, 1),
  )


# ------------------------------------------------------------------ timing
def interleave(
    runners: dict[str, Runner],
    rounds: int,
    block: int,
    warmup: int,
    desc: str,
    progress: bool,
) -> dict[str, np.ndarray]:
  """Round-robin timing; returns ``{name: array[rounds, block, 3]}``.

  The last axis is (wall clock s, process CPU time s, minor page faults) of
  each call.
  """
  names = list(runners)
  for n in names:
    for _ in range(warmup):
      runners[n].call()
  times = {n: np.zeros((rounds, block, 3)) for n in names}
  bar = common.progress_bar(rounds * len(names), desc, disable=not progress)
  for r in range(rounds):
    order = names[r % len(names) :] + names[: r % len(names)]
    for n in order:
      for b in range(block):
        times[n][r, b] = runners[n].call()
      bar.update(1)
  bar.close()
  return times


def quantiles(a) -> dict:
  a = np.asarray(a, float).ravel()
  q25, q50, q75 = np.percentile(a, [25, 50, 75])
  return {
      "median": q50,
      "q25": q25,
      "q75": q75,
      "min": float(a.min()),
      "max": float(a.max()),
      "n": int(a.size),
  }


def summarize(times: dict[str, np.ndarray], baselines: dict[str, str]) -> dict:
  """Medians/IQR of wall (``ms``) and CPU (``cpu_ms``) time, and the ratios
  to the baseline per round (``ratio``: wall, ``cpu_ratio``: CPU time)."""
  out = {}
  for n, t in times.items():
    d = {
        "ms": quantiles(1e3 * t[..., 0]),
        "cpu_ms": quantiles(1e3 * t[..., 1]),
        "page_faults": float(np.median(t[..., 2])),
    }
    base = baselines.get(n)
    if base in times:
      d["baseline"] = base
      for key, k in (("ratio", 0), ("cpu_ratio", 1)):
        per_round = np.median(t[..., k], axis=1) / np.median(
            times[base][..., k], axis=1
        )
        d[key] = quantiles(per_round)
        d[key + "_rounds"] = per_round
      d["ratio_pooled"] = float(
          np.median(t[..., 0]) / np.median(times[base][..., 0])
      )
      # best case: the fastest call of each (load only ever adds time)
      d["ratio_min"] = float(np.min(t[..., 0]) / np.min(times[base][..., 0]))
    out[n] = d
  return out


# ------------------------------------------------------------- HLO analysis
_SIZES = {
    "f64": 8,
    "f32": 4,
    "bf16": 2,
    "f16": 2,
    "s32": 4,
    "u32": 4,
    "s64": 8,
    "u64": 8,
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
}
_SKIP_OPS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _shapes(type_str: str) -> list[tuple[str, tuple[int, ...]]]:
  out = []
  for dt, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", type_str):
    out.append((dt, tuple(int(d) for d in dims.split(",") if d)))
  return out


def _nbytes(type_str: str) -> int:
  return sum(
      _SIZES.get(dt, 4) * int(np.prod(s, dtype=np.int64))
      for dt, s in _shapes(type_str)
  )


def _closing_paren(text: str, depth: int) -> int:
  """Index of the character of ``text`` that brings the parenthesis
  ``depth`` to 0 (the last index if none does; 0 for an empty text)."""
  for j, ch in enumerate(text):
    depth += (ch == "(") - (ch == ")")
    if depth == 0:
      return j
  return max(len(text) - 1, 0)


def _parse_entry(hlo: str) -> list[dict]:
  """Instructions of the ENTRY computation: name, type, op, operands."""
  lines = hlo.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("ENTRY"))
  instrs = []
  for line in lines[start + 1 :]:
    if line.startswith("}"):
      break
    m = re.match(r"\s*(?:ROOT )?%(\S+) = ", line)
    if not m:
      continue
    rest = line[m.end() :]
    if rest.startswith("("):  # tuple type: balanced parentheses
      j = _closing_paren(rest, 0)
      type_str, rest = rest[: j + 1], rest[j + 2 :]
    else:
      type_str, _, rest = rest.partition(" ")
    op = rest.split("(", 1)[0]
    args = rest[len(op) + 1 :]
    operands = re.findall(r"%([\w.\-]+)", args[: _closing_paren(args, 1)])
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    instrs.append({
        "name": m.group(1),
        "type": type_str,
        "op": op,
        "operands": operands,
        "root": line.lstrip().startswith("ROOT"),
        "calls": calls.group(1) if calls else None,
        "kind": (re.search(r"kind=(\w+)", rest) or [None, None])[1],
    })
  return instrs


def _computation_text(hlo: str, name: str) -> str:
  m = re.search(r"^%?" + re.escape(name) + r" .*?^}", hlo, re.M | re.S)
  return m.group(0) if m else ""


def analyze_hlo(hlo: str, param_elems: int, spec: ppx.UnitSpec | None) -> dict:
  """Counts kernels and parameter-sized passes in a compiled update's HLO.

  ``param_elems``: the element count of the smallest grouped kernel (arrays
  at least this big count as "parameter-sized").
  """
  instrs = _parse_entry(hlo)
  by_name = {i["name"]: i for i in instrs}
  work = [i for i in instrs if i["op"] not in _SKIP_OPS]
  fusions = [i for i in work if i["op"] == "fusion"]
  big = lambda t: any(
      np.prod(s, dtype=np.int64) >= param_elems for _, s in _shapes(t)
  )
  big_params = {
      i["name"] for i in instrs if i["op"] == "parameter" and big(i["type"])
  }
  root = next(i for i in instrs if i["root"])
  root_ops = set(root["operands"])
  reductions, temps, traffic = [], [], 0
  reads = {p: 0 for p in big_params}  # entry ops reading each big argument
  for ins in work:
    in_types = [by_name[o]["type"] for o in ins["operands"] if o in by_name]
    traffic += _nbytes(ins["type"]) + sum(_nbytes(t) for t in in_types)
    for o in ins["operands"]:
      if o in reads:
        reads[o] += 1
    if any(big(t) for t in in_types) and not big(ins["type"]):
      reductions.append(ins["name"])
    if big(ins["type"]) and ins["name"] not in root_ops:
      temps.append(ins["name"])
  # what the reductions compute (reduce over which shapes)
  red_shapes = []
  for n in reductions:
    ins = by_name[n]
    ops = [
        by_name[o]["type"]
        for o in ins["operands"]
        if o in by_name and big(by_name[o]["type"])
    ]
    red_shapes.append(
        f"{ops[0].split('{')[0] if ops else '?'} -> {ins['type'].split('{')[0]}"
    )
  n_groups = len(spec.groups) if spec is not None else 0
  return {
      "entry_ops": len(work),
      "fusions": len(fusions),
      "fusion_kinds": {
          k: sum(1 for f in fusions if f["kind"] == k)
          for k in sorted({f["kind"] for f in fusions if f["kind"]})
      },
      "param_sized_reductions": len(reductions),
      "param_sized_reduction_shapes": red_shapes,
      "expected_norm_reductions": 2 * n_groups,
      "param_sized_temporaries": len(temps),
      "param_sized_temporary_bytes": int(
          sum(_nbytes(by_name[t]["type"]) for t in temps)
      ),
      "reads_per_param_buffer": (
          float(np.mean(list(reads.values()))) if reads else 0.0
      ),
      # per argument (params / grads / ...): mean reads of its big buffers
      "reads_by_argument": {
          a: float(
              np.mean([c for p, c in reads.items() if p.split("__")[0] == a])
          )
          for a in sorted({p.split("__")[0] for p in reads})
      },
      "entry_traffic_bytes": int(traffic),
  }


def param_count(tree) -> int:
  return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def min_kernel_elems(spec: ppx.UnitSpec | None, params) -> int:
  if spec is None or not spec.groups:
    return min(np.size(a) for a in jax.tree.leaves(params) if np.ndim(a) >= 2)
  return int(
      min(np.prod(s.shape) for g in spec.groups for s in g.inputs + g.outputs)
  )


# --------------------------------------------------------------- benchmark
def bench_model(name: str, args, variants: list[str], progress: bool) -> dict:
  setup = make_model(name, args)
  spec, params = setup.fn.spec, setup.fn.params
  vgg = name == "vgg19"
  rounds = args.vgg_rounds if vgg else args.rounds
  block = args.vgg_block if vgg else args.block
  txs = {v: make_tx(v, spec, args.lr, args.weight_decay) for v in variants}
  baselines = {v: BASELINES[v] for v in variants}
  res = {
      "label": setup.label,
      "params": param_count(params),
      "groups": len(spec.groups),
      "units": list(spec.num_units),
  }

  step_variants = (
      [v for v in variants if v in args.vgg_step_variants] if vgg else variants
  )
  steps = {v: step_runner(v, setup, txs[v]) for v in step_variants}
  t = interleave(steps, rounds, block, args.warmup, f"{name} step", progress)
  res["step"] = summarize(t, baselines)
  for v, r in steps.items():
    res["step"][v].update(
        lower_s=r.lower_s,
        compile_s=r.compile_s,
        first_call_s=r.first_call_s,
        memory=r.memory(),
        cost=r.cost(),
        final_loss=float(r.last[2]),
    )
  del steps

  grads = fixed_grads(setup)
  upds = {v: update_runner(v, params, grads, txs[v]) for v in variants}
  if "pathprox" in upds and "pathprox_inplace" in upds:
    # both did one update from the same params and grads at construction
    res["inplace_max_abs_diff"] = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(upds["pathprox"].args[0]),
            jax.tree.leaves(upds["pathprox_inplace"].args[0]),
        )
    )
  t = interleave(
      upds, args.rounds, args.block, args.warmup, f"{name} update", progress
  )
  res["update"] = summarize(t, baselines)
  # Step ratio predicted from the update cost alone (fastest calls):
  # 1 + (update_v - update_base) / step_base.
  for v, d in res["step"].items():
    base = d.get("baseline")
    if base in res["step"] and base in res["update"]:
      extra = res["update"][v]["ms"]["min"] - res["update"][base]["ms"]["min"]
      d["ratio_predicted"] = 1.0 + extra / res["step"][base]["ms"]["min"]
  elems = min_kernel_elems(spec, params)
  for v, r in upds.items():
    res["update"][v].update(
        lower_s=r.lower_s,
        compile_s=r.compile_s,
        memory=r.memory(),
        cost=r.cost(),
    )
    if not args.no_hlo:
      res["update"][v]["hlo"] = analyze_hlo(r.compiled.as_text(), elems, spec)
  return res


def bench_overhead(progress: bool, rounds: int, block: int) -> dict:
  """Host dispatch + sync floor: a donated scalar increment."""
  r = Runner("noop", lambda c: (c + 1,), (jnp.zeros([], jnp.int32),), 1, (0,))
  t = interleave({"noop": r}, rounds, block, 2, "dispatch", progress)
  return quantiles(1e6 * t["noop"][..., 0])  # microseconds


def width_sweep(args, variants: list[str], progress: bool) -> dict:
  rows = []
  for w in args.sweep_widths:
    setup = make_model("mlp3f", args, width=w)
    grads = fixed_grads(setup)
    upds = {
        v: update_runner(
            v,
            setup.fn.params,
            grads,
            make_tx(v, setup.fn.spec, args.lr, args.weight_decay),
        )
        for v in variants
    }
    t = interleave(
        upds,
        args.sweep_rounds,
        args.sweep_block,
        args.warmup,
        f"sweep w={w}",
        progress,
    )
    s = summarize(t, {v: BASELINES[v] for v in variants})
    rows.append(
        {"width": w, "params": param_count(setup.fn.params), "update": s}
    )
    del upds
  # full steps at the largest width: does the update's growth show up?
  big = {}
  step_vs = [
      v for v in variants if v in ("sgd_wd", "pathprox", "pathprox_inplace")
  ]
  if "sgd_wd" in step_vs and args.big_step_rounds > 0:
    runners = {
        v: step_runner(
            v, setup, make_tx(v, setup.fn.spec, args.lr, args.weight_decay)
        )
        for v in step_vs
    }
    t = interleave(
        runners,
        args.big_step_rounds,
        args.big_step_block,
        args.warmup,
        f"step w={args.sweep_widths[-1]}",
        progress,
    )
    big = summarize(t, {v: "sgd_wd" for v in step_vs})
    for v, r in runners.items():
      big[v]["memory"] = r.memory()
    big = {
        "width": args.sweep_widths[-1],
        "label": setup.label,
        "params": param_count(setup.fn.params),
        "step": big,
    }
    del runners
  fits = {}
  for v in variants:
    n = np.array([r["params"] for r in rows], float)
    ms = np.array([r["update"][v]["ms"]["median"] for r in rows], float)
    cpu = np.array([r["update"][v]["cpu_ms"]["median"] for r in rows], float)
    fit = {
        "slope_all": float(np.polyfit(np.log(n), np.log(ms), 1)[0]),
        "slope_cpu_all": float(np.polyfit(np.log(n), np.log(cpu), 1)[0]),
    }
    if len(n) >= 3:
      fit["slope_top3"] = float(
          np.polyfit(np.log(n[-3:]), np.log(ms[-3:]), 1)[0]
      )
    # linear model ms = a + b * params: per-parameter cost b (ns / param)
    b, a = np.polyfit(n, ms, 1)
    fit.update(intercept_ms=float(a), ns_per_param=float(1e6 * b))
    fits[v] = fit
  return {"rows": rows, "fits": fits, "largest_step": big}


# ---------------------------------------------------------------- reporting
def _fmt_ms(q: dict) -> str:
  return f"{q['median']:.3f} [{q['q25']:.3f}, {q['q75']:.3f}]"


def _fmt_ratio(d: dict) -> str:
  if "ratio" not in d:
    return "-"
  q = d["ratio"]
  return f"{q['median']:.3f} [{q['q25']:.3f}, {q['q75']:.3f}]"


def _target(model: str, variant: str, kind: str) -> float | None:
  return TARGETS.get((model, variant, kind), TARGETS.get(("*", variant, kind)))


def tables(results: dict) -> str:
  rows = []
  for m, r in results["models"].items():
    for kind in ("step", "update"):
      for v, d in r[kind].items():
        tgt = _target(m, v, kind)
        ok = ""
        if tgt is not None and "ratio" in d:
          ok = f"<= {tgt:g}: {'yes' if d['ratio']['median'] <= tgt else 'NO'}"
        cpu = (
            f"{d['cpu_ratio']['median']:.3f} [{d['cpu_ratio']['q25']:.3f}, "
            f"{d['cpu_ratio']['q75']:.3f}]"
            if "cpu_ratio" in d
            else "-"
        )
        best = f"{d['ratio_min']:.3f}" if "ratio_min" in d else "-"
        pred = f"{d['ratio_predicted']:.3f}" if "ratio_predicted" in d else ""
        rows.append([
            r["label"],
            kind,
            VARIANT_LABELS[v],
            _fmt_ms(d["ms"]),
            _fmt_ratio(d),
            cpu,
            best,
            pred,
            f"{d.get('page_faults', float('nan')):.0f}",
            ok,
        ])
  t1 = common.fmt_table(
      rows,
      [
          "model",
          "what",
          "variant",
          "wall ms median [IQR]",
          "wall ratio [IQR over rounds]",
          "CPU-time ratio [IQR]",
          "min/min",
          "predicted",
          "faults/call",
          "target (wall median)",
      ],
  )
  rows = []
  for m, r in results["models"].items():
    for v, u in r["update"].items():
      d = r["step"].get(
          v, {"lower_s": float("nan"), "compile_s": float("nan"), "memory": {}}
      )
      mem = d["memory"]
      h = u.get("hlo", {})
      rows.append([
          m,
          VARIANT_LABELS[v],
          f"{d['lower_s']:.2f}",
          f"{d['compile_s']:.2f}",
          f"{u['compile_s']:.2f}",
          f"{mem['peak'] / 2**20:.1f}" if "peak" in mem else "-",
          f"{mem['temp'] / 2**20:.1f}" if "temp" in mem else "-",
          h.get("fusions", "-"),
          (
              f"{h.get('param_sized_reductions', '-')}/"
              f"{h.get('expected_norm_reductions', '-')}"
          ),
          h.get("param_sized_temporaries", "-"),
          " ".join(
              f"{a}:{c:.1f}" for a, c in h.get("reads_by_argument", {}).items()
          )
          or "-",
          f"{u['cost'].get('bytes_accessed', float('nan')) / 2**20:.1f}",
      ])
  t2 = common.fmt_table(
      rows,
      [
          "model",
          "variant",
          "trace s",
          "compile s",
          "upd compile s",
          "step peak MiB",
          "step temp MiB",
          "upd fusions",
          "upd norm passes/2G",
          "upd big intermediates",
          "upd reads per big arg buffer",
          "upd MiB accessed",
      ],
  )
  out = [t1, "", t2]
  for m, r in results["models"].items():
    if "inplace_max_abs_diff" in r:
      out.append(
          f"{m}: max |pathprox - pathprox_inplace| after one update: "
          f"{r['inplace_max_abs_diff']:.2e}"
      )
  if "sweep" in results:
    sw = results["sweep"]
    vs = list(sw["fits"])
    rows = [
        [r["width"], r["params"]]
        + [
            f"{r['update'][v]['ms']['median']:.3f}"
            f" ({r['update'][v]['cpu_ms']['median']:.3f})"
            for v in vs
        ]
        + [f"{r['update'][v]['page_faults']:.0f}" for v in vs]
        for r in sw["rows"]
    ]
    out += [
        "",
        (
            "update alone vs width: wall ms median (CPU ms median); "
            "minor page faults per call"
        ),
        common.fmt_table(
            rows,
            ["width", "params"]
            + [f"{v} ms" for v in vs]
            + [f"{v} faults" for v in vs],
        ),
    ]
    big = sw.get("largest_step") or {}
    if big:
      rows = [
          [
              VARIANT_LABELS[v],
              _fmt_ms(d["ms"]),
              _fmt_ratio(d),
              (
                  f"{d['cpu_ratio']['median']:.3f}"
                  f" [{d['cpu_ratio']['q25']:.3f}, {d['cpu_ratio']['q75']:.3f}]"
              ),
              f"{d['page_faults']:.0f}",
              f"{d['memory'].get('temp', 0) / 2**20:.1f}",
          ]
          for v, d in big["step"].items()
      ]
      out += [
          "",
          (
              f"full step at the largest width ({big['label']}, "
              f"{big['params']} params)"
          ),
          common.fmt_table(
              rows,
              [
                  "variant",
                  "wall ms median [IQR]",
                  "wall ratio [IQR]",
                  "CPU-time ratio [IQR]",
                  "page faults/step",
                  "temp MiB",
              ],
          ),
      ]
    num = lambda f, k: float(f.get(k, "nan"))  # JSON stores nan as "nan"
    rows = [
        [
            v,
            f"{num(f, 'slope_all'):.2f}",
            f"{num(f, 'slope_top3'):.2f}",
            f"{num(f, 'slope_cpu_all'):.2f}",
            f"{num(f, 'ns_per_param'):.3f}",
            f"{num(f, 'intercept_ms'):.3f}",
        ]
        for v, f in sw["fits"].items()
    ]
    out += [
        "",
        common.fmt_table(
            rows,
            [
                "variant",
                "log-log slope (wall, all)",
                "slope (wall, 3 largest)",
                "slope (CPU, all)",
                "ns/param (wall)",
                "intercept ms",
            ],
        ),
    ]
  return "\n".join(out)


def plot(results: dict, out_dir: str, tag: str, copy: bool) -> list[str]:
  plt = common.pyplot()
  paths = []
  models = results["models"]
  short = {
      "pathprox": "PathProx",
      "pathprox_nobalance": "PP no-bal",
      "pathprox_inplace": "PP in-place",
      "proxgen_adam": "ProxGen",
  }
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
  for ax, kind in zip(axes, ("step", "update")):
    labels, bars = [], {"ratio": [], "cpu_ratio": []}
    for m, r in models.items():
      for v, d in r[kind].items():
        if "ratio" not in d or d["baseline"] == v:
          continue
        labels.append(f"{m}\n{short.get(v, v)}")
        for key in bars:
          q = d[key]
          bars[key].append(
              (q["median"], q["median"] - q["q25"], q["q75"] - q["median"])
          )
    x = np.arange(len(labels))
    for off, (key, lab, col) in zip(
        (-0.2, 0.2),
        (
            ("ratio", "wall clock", "tab:gray"),
            ("cpu_ratio", "process CPU time", "tab:red"),
        ),
    ):
      b = np.array(bars[key]).reshape(-1, 3)
      ax.bar(
          x + off,
          b[:, 0],
          width=0.4,
          yerr=[b[:, 1], b[:, 2]],
          color=col,
          capsize=2,
          label=lab,
          alpha=0.85,
      )
    ax.axhline(1.0, color="k", lw=0.8)
    if kind == "step":
      ax.axhline(
          1.03, color="tab:blue", ls="--", lw=0.8, label="1.03 (MLP target)"
      )
      ax.axhline(
          1.02, color="tab:purple", ls=":", lw=0.8, label="1.02 (VGG target)"
      )
    else:
      ax.axhline(3.0, color="tab:blue", ls="--", lw=0.8, label="3 (target)")
    ax.set_xticks(x, labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("time / baseline: median, IQR over rounds")
    ax.set_title(
        "full training step"
        if kind == "step"
        else "optimizer update alone (fixed grads)"
    )
    ax.legend(fontsize=7)
  fig.suptitle(
      "Cost relative to SGD+WD (PathProx variants) or Adam (ProxGen); "
      "shared 2-core CPU, interleaved rounds",
      fontsize=10,
  )
  paths += common.save_figure(
      fig, os.path.join(out_dir, f"step_time_ratios{tag}.png"), copy
  )
  if "sweep" in results:
    sw = results["sweep"]
    colors = {
        "sgd_wd": "tab:blue",
        "pathprox": "tab:red",
        "pathprox_nobalance": "tab:orange",
        "pathprox_inplace": "tab:purple",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    n = np.array([r["params"] for r in sw["rows"]], float)
    for ax, key, slope, what in zip(
        axes,
        ("ms", "cpu_ms"),
        ("slope_all", "slope_cpu_all"),
        ("wall clock", "process CPU time"),
    ):
      for v, f in sw["fits"].items():
        q = [r["update"][v][key] for r in sw["rows"]]
        ms = np.array([x["median"] for x in q])
        lo = ms - np.array([x["q25"] for x in q])
        hi = np.array([x["q75"] for x in q]) - ms
        ax.errorbar(
            n,
            ms,
            yerr=[lo, hi],
            marker="o",
            capsize=2,
            color=colors.get(v),
            label=(
                f"{VARIANT_LABELS[v]} "
                f"(log-log slope {float(f.get(slope, 'nan')):.2f})"
            ),
        )
      base = (
          np.array([r["update"]["sgd_wd"][key]["median"] for r in sw["rows"]])
          if "sgd_wd" in sw["fits"]
          else ms
      )
      ax.plot(
          n, base[0] * n / n[0], "k:", lw=0.8, label="linear from smallest SGD"
      )
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("parameters of FactorizedMLP(3, width)")
      ax.set_ylabel(f"update alone, {what} ms (median, IQR)")
      ax.set_title(f"optimizer update vs size: {what}")
      ax.legend(fontsize=7)
    paths += common.save_figure(
        fig, os.path.join(out_dir, f"step_time_width_sweep{tag}.png"), copy
    )
  return paths


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.from_json:
    import json

    with open(args.from_json) as f:
      results = json.load(f)
    out_dir = os.path.dirname(os.path.abspath(args.from_json))
    print(tables(results))
    print(
        "wrote",
        *plot(
            results, out_dir, "_quick" if args.quick else "", args.copy_figures
        ),
    )
    return results
  t0 = time.perf_counter()
  progress = not args.no_progress
  out_dir, tag, run_dir = common.run_dirs("step_time", args.out, args.quick)
  variants = list(args.variants)
  results = {
      "config": {k: v for k, v in vars(args).items()},
      "environment": common.environment(),
      "timing": (
          "host wall clock per call incl. dispatch, "
          "block_until_ready; interleaved round-robin blocks"
      ),
      "memory": "compiled.memory_analysis(): XLA buffer assignment",
      "models": {},
  }

  def part(name, skip, compute):
    """One measurement, saved as soon as it is done (``--resume``)."""
    return common.cached_run(
        run_dir,
        name + tag,
        common.run_config(args, ("from_json",) + skip),
        args.resume,
        compute,
    )

  results["dispatch_us"] = part(
      "dispatch", tuple(vars(args)), lambda: bench_overhead(progress, 3, 20)
  )
  for m in args.models:
    results["models"][m] = part(
        m,
        ("models",) + SWEEP_OPTIONS,
        lambda m=m: bench_model(m, args, variants, progress),
    )
  if not args.no_sweep:
    sweep_variants = [
        v
        for v in variants
        if v in ("sgd_wd", "pathprox", "pathprox_nobalance", "pathprox_inplace")
    ]
    results["sweep"] = part(
        "sweep",
        ("models",) + MODEL_OPTIONS,
        lambda: width_sweep(args, sweep_variants, progress),
    )
  results["runtime_s"] = time.perf_counter() - t0
  text = tables(results)
  print(text)
  print(
      f"dispatch floor: {results['dispatch_us']['median']:.1f} us; "
      f"runtime {results['runtime_s']:.0f} s"
  )
  results["table"] = text
  path = os.path.join(out_dir, f"step_time{tag}.json")
  common.save_json(path, results)
  figs = plot(results, out_dir, tag, args.copy_figures)
  print("wrote", path, *figs)
  return results


if __name__ == "__main__":
  main()
