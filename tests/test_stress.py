"""Long-run numerical stress of PathProx (``-m slow``; out of the default suite).

Run: ``python -m pytest tests/test_stress.py -m slow -s``. Each scenario
trains a tiny factorized MLP for up to 1e5 steps inside ``jax.lax.fori_loop``
(chunks of 10k steps per compiled call, batches drawn on device), tracking at
every step whether anything is non-finite, the largest ``|param|`` and the
smallest and largest group path norms. Set ``PATHPROX_STRESS_REPORT=file.json``
to save the figures (docs/SCALING.md quotes them).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx

pytestmark = pytest.mark.slow

IN, OUT, N_DATA, BATCH = 8, 4, 512, 32
CHUNK = 10_000
REPORT: dict[str, dict[str, Any]] = {}


def _sizes(width, groups):
  return [IN] + [width] * (2 * groups - 1) + [OUT]


def init_params(key, width, groups, dtype=jnp.float32):
  params = {}
  sizes = _sizes(width, groups)
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, k1, k2 = jax.random.split(key, 3)
    bound = 1.0 / np.sqrt(a)
    params[f"l{i}"] = {
        "kernel": (
            jax.random.uniform(k1, (a, b), jnp.float32, -bound, bound).astype(
                dtype
            )
        ),
        "bias": (
            jax.random.uniform(k2, (b,), jnp.float32, -bound, bound).astype(
                dtype
            )
        ),
    }
  return params


def pairs(groups):
  return [(f"l{2 * g}", f"l{2 * g + 1}") for g in range(groups)]


def apply(params, x):
  n = len(params)
  x = x.astype(params["l0"]["kernel"].dtype)
  for i in range(n):
    x = x @ params[f"l{i}"]["kernel"] + params[f"l{i}"]["bias"]
    if i % 2 == 0:
      x = jax.nn.relu(x)
  return x.astype(jnp.float32)


def loss_fn(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(
      apply(params, x), y
  ).mean()


def teacher_data():
  kx, kt = jax.random.split(jax.random.key(42))
  x = jax.random.normal(kx, (N_DATA, IN))
  teacher = init_params(kt, 32, 1)
  return x, jnp.argmax(apply(teacher, x), axis=-1)


class Stats(NamedTuple):
  finite: jax.Array
  max_abs: jax.Array
  min_path: jax.Array  # smallest group path norm seen
  max_path: jax.Array  # largest group path norm seen


def _max_abs(tree):
  return jnp.max(
      jnp.stack([
          jnp.max(jnp.abs(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)
      ])
  )


def _finite(tree):
  checks = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def train(params, spec, tx, steps):
  """Runs ``steps`` steps, returning final params, state and run-long stats."""
  x_all, y_all = teacher_data()
  key = jax.random.key(0)

  @jax.jit
  def chunk(carry, start, n):
    def body(i, c):
      p, s, st = c
      idx = jax.random.randint(
          jax.random.fold_in(key, start + i), (BATCH,), 0, N_DATA
      )
      g = jax.grad(loss_fn)(p, x_all[idx], y_all[idx])
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      pn = ppx.path_norms(p, spec)
      st = Stats(
          st.finite & _finite(p) & _finite(s),
          jnp.maximum(st.max_abs, _max_abs(p)),
          jnp.minimum(st.min_path, jnp.min(pn)),
          jnp.maximum(st.max_path, jnp.max(pn)),
      )
      return p, s, st

    return jax.lax.fori_loop(0, n, body, carry)

  stats = Stats(
      jnp.array(True), jnp.array(0.0), jnp.array(jnp.inf), jnp.array(0.0)
  )
  carry = (params, tx.init(params), stats)
  t0 = time.perf_counter()
  compiled = chunk.lower(carry, 0, 1).compile()
  compile_s = time.perf_counter() - t0
  start = 0
  t0 = time.perf_counter()
  while start < steps:
    n = min(CHUNK, steps - start)
    carry = compiled(carry, start, n)
    start += n
  jax.block_until_ready(carry)
  return carry[0], carry[1], carry[2], time.perf_counter() - t0, compile_s


def record(name, params, spec, stats, elapsed, compile_s, steps, dtype, width):
  active = ppx.active_units(params, spec)
  unit_pn = np.concatenate(
      [np.asarray(u) for u in ppx.unit_path_norms(params, spec)]
  )
  live = unit_pn[unit_pn > 0]
  x, y = teacher_data()
  acc = float(jnp.mean(jnp.argmax(apply(params, x), -1) == y))
  REPORT[name] = {
      "steps": steps,
      "dtype": jnp.dtype(dtype).name,
      "width": width,
      "seconds": round(elapsed, 2),
      "compile_seconds": round(compile_s, 2),
      "steps_per_s": round(steps / elapsed),
      "finite": bool(stats.finite),
      "max_abs_param": float(stats.max_abs),
      "min_group_path_norm": float(stats.min_path),
      "max_group_path_norm": float(stats.max_path),
      "final_group_path_norms": [
          float(v) for v in ppx.path_norms(params, spec)
      ],
      "min_live_unit_path_norm": float(live.min()) if live.size else 0.0,
      "active_fraction": float(active.fraction),
      "train_accuracy": acc,
  }
  print(f"\n[stress] {name}: {json.dumps(REPORT[name])}")
  path = os.environ.get("PATHPROX_STRESS_REPORT")
  if path:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(REPORT, f, indent=1)
  return REPORT[name]


class Scenario(NamedTuple):
  width: int
  groups: int
  steps: int
  lr: float
  wd: float
  dtype: Any = jnp.float32
  prepare: Callable[[dict], dict] | None = None


def _zero_columns(p):
  """Half the units of group 0 have zero input weights and bias (dead kink)."""
  p = jax.tree.map(lambda x: x, p)
  k = p["l0"]["kernel"].shape[1] // 2
  p["l0"]["kernel"] = p["l0"]["kernel"].at[:, :k].set(0)
  p["l0"]["bias"] = p["l0"]["bias"].at[:k].set(0)
  return p


def _dead_group(p):
  """Group 0 entirely zero: path norm 0 for the whole run."""
  p = jax.tree.map(lambda x: x, p)
  for name in ("l0", "l1"):
    p[name]["kernel"] = jnp.zeros_like(p[name]["kernel"])
  p["l0"]["bias"] = jnp.zeros_like(p["l0"]["bias"])
  return p


STEPS = 100_000
SCENARIOS = {
    "baseline": Scenario(16, 2, STEPS, 0.1, 1e-3),
    "zero_columns": Scenario(16, 2, STEPS, 0.1, 1e-3, prepare=_zero_columns),
    "dead_group": Scenario(16, 2, STEPS, 0.1, 1e-3, prepare=_dead_group),
    "all_pruned_lambda_large": Scenario(16, 2, STEPS, 0.1, 1.0),
    "lambda_zero": Scenario(16, 2, STEPS, 0.1, 0.0),
    "lr_zero": Scenario(16, 2, STEPS, 0.0, 1e-3),
    "float16": Scenario(16, 2, STEPS, 0.1, 1e-3, jnp.float16),
    "bfloat16": Scenario(16, 2, STEPS, 0.1, 1e-3, jnp.bfloat16),
    "wide_16k_units": Scenario(16_384, 1, 5_000, 0.1, 1e-3),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stress(name):
  sc = SCENARIOS[name]
  params = init_params(jax.random.key(1), sc.width, sc.groups, sc.dtype)
  if sc.prepare is not None:
    params = sc.prepare(params)
  spec = ppx.UnitSpec.from_pairs(params, pairs(sc.groups))
  tx = ppx.pathprox(sc.lr, sc.wd, spec)
  final, state, stats, elapsed, compile_s = train(params, spec, tx, sc.steps)
  rep = record(
      name, final, spec, stats, elapsed, compile_s, sc.steps, sc.dtype, sc.width
  )

  assert rep["finite"], rep
  assert bool(_finite(final)) and bool(_finite(state))
  for leaf in jax.tree.leaves(final):
    assert leaf.dtype == jnp.dtype(sc.dtype)
  assert rep["max_abs_param"] < 1e3, rep

  if name == "zero_columns":
    k = sc.width // 2
    np.testing.assert_array_equal(final["l0"]["kernel"][:, :k], 0.0)
    assert rep["active_fraction"] > 0
  if name == "dead_group":
    pn = rep["final_group_path_norms"]
    assert pn[0] == 0.0 and pn[1] > 0.0, rep  # the live group keeps weights
  if name == "all_pruned_lambda_large":
    assert rep["active_fraction"] == 0.0, rep
  if name == "lambda_zero":
    assert rep["active_fraction"] == 1.0, rep
  if name == "lr_zero":
    # Step 1 projects the input weights (changing the path norms), step 2
    # re-balances; from then on the iterate is a fixed point: compare with
    # the state after two steps.
    two = train(params, spec, tx, 2)[0]
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(two)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  if name in ("baseline", "float16", "bfloat16", "wide_16k_units"):
    assert rep["train_accuracy"] > 0.5, rep  # it did learn something
