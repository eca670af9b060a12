"""Unit tests of the benchmark helpers (penalties, optimizers, samplers, the
race bookkeeping, the HLO parsers, the step-time summary of
``benchmarks.api_regression``).

They live here, not under ``tests/``: the library's tests import no benchmark
module. Run them with ``python -m pytest benchmarks/test_helpers.py``; the
default ``python -m pytest`` collects them too (``testpaths``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

import pathprox_jax as ppx
from benchmarks import (
    api_regression,
    common,
    convergence,
    race,
    sparsity,
    step_time,
)
from tests.reference import flat


def test_penalties_match_numpy_and_library():
  model = ppx.MLP(3, 6, in_features=5, num_classes=3, rngs=nnx.Rngs(0))
  f = common.functional(model)
  ks = [np.asarray(k) for k in common.dense_kernels(f.params)]
  # group lasso over the hidden ReLU units after layers 0 and 1
  expect = sum(
      np.linalg.norm(ks[l], axis=0).sum()
      + np.linalg.norm(ks[l + 1], axis=1).sum()
      for l in (0, 1)
  )
  got = jax.jit(lambda p: common.group_lasso_penalty(p, (0, 1)))(f.params)
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  np.testing.assert_allclose(
      common.l1_penalty(f.params), sum(np.abs(k).sum() for k in ks), rtol=1e-5
  )
  # zero unit: finite (zero) gradient instead of NaN
  p = jax.tree.map(lambda a: a, f.params)
  p["layers"][0]["kernel"] = p["layers"][0]["kernel"].at[:, 0].set(0.0)
  g = jax.grad(
      lambda q: ppx.path_norm_penalty(q, f.spec)
      + common.group_lasso_penalty(q, (0, 1))
  )(p)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


def test_weight_norm_projects_inputs():
  model = ppx.FactorizedMLP(
      1, 4, in_features=3, num_classes=2, rngs=nnx.Rngs(0)
  )
  f = common.functional(model)
  tx, _ = common.make_method("weight_norm", 0.1, 1e-3, f.spec)
  state = tx.init(f.params)
  grads = jax.tree.map(jnp.ones_like, f.params)
  upd, _ = jax.jit(tx.update)(grads, state, f.params)
  new = jax.tree.map(lambda a, b: a + b, f.params, upd)
  norms = np.linalg.norm(np.asarray(new["layers"][0]["kernel"]), axis=0)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_unit_mask_and_batch_sampler():
  model = ppx.MLP(3, 4, in_features=3, num_classes=2, rngs=nnx.Rngs(0))
  p = common.functional(model).params
  p["layers"][1]["kernel"] = p["layers"][1]["kernel"].at[2, :].set(0.0)
  mask, kept = sparsity.unit_mask(p, (0, 1))
  assert kept == pytest.approx(7 / 8)
  assert float(jnp.sum(mask["layers"][0]["kernel"][:, 2])) == 0.0
  assert float(mask["layers"][0]["bias"][2]) == 0.0
  s = common.BatchSampler(10, 5, seed=0)
  idx = s.take(4)
  assert idx.shape == (4, 5)
  assert sorted(idx[:2].ravel()) == list(range(10))  # one epoch, no repeats


def test_crossing_step():
  steps = [0, 10, 20, 30, 40]
  assert (
      convergence.crossing_step(steps, [5, 4, 2, 1, 1], [5, 3, 3, 2, 2]) == 20
  )
  assert (
      convergence.crossing_step(steps, [5, 4, 2, 1, 3], [5, 3, 3, 2, 2]) is None
  )


def test_race_tuning_horizon_is_per_task_and_in_the_file_name():
  args = race.parse_args([])
  assert race.task_iterations(args, race.TASKS["task1"]) == (20000, 2500)
  assert race.task_iterations(args, race.TASKS["ffn"]) == (2000, 2000)
  args = race.parse_args(["--tune-iterations", "100"])
  assert race.task_iterations(args, race.TASKS["ffn"]) == (2000, 100)
  # A run with another horizon is another file: a resume never reuses it.
  a, b = (race.Job("ffn", "sgd_wd", "tune", 1.0, 100, n) for n in (250, 2000))
  assert a.path("runs") != b.path("runs")


def test_functional_keeps_the_models_links():
  # A transformer's FFN groups are separated by residual adds: never linked.
  model = ppx.Transformer(256, 16, 2, 4, 32, 64, rngs=nnx.Rngs(0))
  spec = common.functional(model).spec
  assert spec.links == (False,) and spec == model.unit_spec()


def test_race_reach_and_checkpoints():
  hist = [
      {"step": s, "objective": o, "seconds": 0.5 * s}
      for s, o in [(0, 2.0), (10, 1.0), (20, float("nan")), (30, 0.4)]
  ]
  assert race.reach(hist, 1.0) == (10, 5.0)
  assert race.reach(hist, 0.5) == (30, 15.0)
  assert race.reach(hist, 0.1) == (None, None)
  assert race.at(hist, 30, "objective") == 0.4
  assert race.at(hist, 25, "objective") is None
  assert race.mean_std([1.0, 3.0, None, float("inf")]) == (2.0, 1.0)
  assert race.settle(hist, 1.0) == 30  # the NaN at 20 breaks the run
  assert race.settle(hist, 0.1) is None
  a, b = [1.0, 2.0, 5.0, 3.0], [0.1, 0.4, 0.9, 0.2]
  expect = scipy.stats.spearmanr(a, b).statistic
  assert expect == pytest.approx(0.8)
  assert race.spearman(a, b) == pytest.approx(expect)


def test_progress_lines_in_a_log_file(capsys):
  bar = common.progress_bar(100, "run")  # stderr is not a terminal
  for _ in range(100):
    bar.update(1)
  bar.close()
  err = capsys.readouterr().err
  assert "\r" not in err and err.count("\n") <= 3 and "100/100" in err


def test_race_proxgen_decays_the_kernels_in_no_group():
  # The FFN objective charges lambda/2 ||K||^2 on the attention kernels; the
  # ProxGen peer must minimise it there too (Adam's first step).
  f = common.functional(race.TASKS["ffn"].model(True, 0))
  tx = common.make_method("proxgen_unit", 1e-3, 0.1, f.spec)[0]
  zeros = jax.tree.map(jnp.zeros_like, f.params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(f.params), f.params)
  u, x, roles = flat(updates), flat(f.params), f.spec.roles
  ungrouped = [p for p, r in roles.items() if r == "ungrouped_kernel"]
  inputs = [p for p, r in roles.items() if r == "input_kernel"]
  assert ungrouped and inputs
  for p in ungrouped:
    g = 0.1 * x[p]  # m^ = g, sqrt(v^) = |g|
    np.testing.assert_allclose(u[p], -1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-4)
  for p in inputs:  # no decay, zero gradient: unchanged
    np.testing.assert_array_equal(u[p], 0.0)


def test_hlo_parser_on_known_text():
  hlo = """HloModule m

%fc (a: f32[4,3], b: f32[4,3]) -> f32[4,3] {
  ROOT %x = f32[4,3]{1,0} add(%a, %b)
}

ENTRY %main (p.1: f32[4,3], g.1: f32[4,3]) -> (f32[4,3], f32[3]) {
  %p.1 = f32[4,3]{1,0} parameter(0)
  %g.1 = f32[4,3]{1,0} parameter(1)
  %z = f32[4,3]{1,0} fusion(%p.1, %g.1), kind=kLoop, calls=%fc
  %n = f32[3]{0} fusion(%z), kind=kCustom, calls=%fc
  %o = f32[4,3]{1,0} fusion(%p.1, %z, %n), kind=kLoop, calls=%fc
  ROOT %t = (f32[4,3]{1,0}, f32[3]{0}) tuple(%o, %n)
}
"""
  assert api_regression.hlo_op_counts(hlo) == {"ops": 7, "fusions": 3}
  h = step_time.analyze_hlo(hlo, param_elems=12, spec=None)
  assert h["fusions"] == 3
  assert h["param_sized_reductions"] == 1
  assert h["param_sized_temporaries"] == 1  # %z
  assert h["reads_by_argument"] == {"p.1": 2.0, "g.1": 1.0}


def test_hlo_op_counts_of_tuple_results():
  hlo = """ENTRY %main (a: f32[3]) -> (f32[3], (f32[3], f32[])) {
  %a = f32[3]{0} parameter(0)
  %f = (f32[3]{0}, f32[]) fusion(%a), kind=kLoop, calls=%fc
  ROOT %t = (f32[3]{0}, (f32[3]{0}, f32[])) tuple(%a, %f)
}
"""
  assert api_regression.hlo_op_counts(hlo) == {"ops": 3, "fusions": 1}


def test_step_time_ratios_are_per_round():
  # A load burst in round 1 slows every variant: the per-round ratios keep it
  # out, the pooled times do not.
  seconds = {
      "sgd_wd": [1.0, 3.0, 1.0],
      "pathprox_ref": [1.1, 3.3, 1.1],
      "pathprox": [1.0, 3.3, 1.1],
  }
  out = api_regression.summarize_rounds(
      seconds, "sgd_wd", {"pathprox": "pathprox_ref"}
  )
  assert out["sgd_wd"]["ratio"]["median"] == 1.0
  assert out["pathprox_ref"]["ratio"]["median"] == pytest.approx(1.1)
  assert out["pathprox_ref"]["ratio"]["q75"] == pytest.approx(1.1)
  assert out["pathprox"]["ratio"]["median"] == pytest.approx(1.1)
  assert out["pathprox"]["ratio"]["q25"] == pytest.approx(1.05)
  assert out["pathprox"]["vs_ref"]["median"] == pytest.approx(1.0)
  assert out["pathprox"]["ms"]["median"] == pytest.approx(1100.0)
  assert "vs_ref" not in out["pathprox_ref"]
