"""Smoke tests of the benchmark scripts in tiny configurations.

Each test runs a script's ``main`` in-process with ``--quick`` plus even
smaller options, and checks that the JSON and PNG outputs exist and hold
finite numbers. Also unit tests of the benchmark helpers against NumPy.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pathprox_jax as ppx
from benchmarks import common, convergence, decision_boundary, generalization
from benchmarks import race, reproducibility, revival_trace, sparsity
from tests.reference import flat


def _load(path):
  with open(path) as f:
    return json.load(f)


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def test_help_runs(capsys):
  for mod in (convergence, decision_boundary, sparsity, generalization):
    with pytest.raises(SystemExit) as e:
      mod.parse_args(["--help"])
    assert e.value.code == 0
  assert "--iterations" in capsys.readouterr().out


def test_penalties_match_numpy_and_library():
  model = ppx.MLP(3, 6, in_features=5, num_classes=3, rngs=nnx.Rngs(0))
  f = common.functional(model)
  ks = [np.asarray(k) for k in common.dense_kernels(f.params)]
  # group lasso over the hidden ReLU units after layers 0 and 1
  expect = sum(np.linalg.norm(ks[l], axis=0).sum()
               + np.linalg.norm(ks[l + 1], axis=1).sum() for l in (0, 1))
  got = jax.jit(lambda p: common.group_lasso_penalty(p, (0, 1)))(f.params)
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  np.testing.assert_allclose(common.l1_penalty(f.params),
                             sum(np.abs(k).sum() for k in ks), rtol=1e-5)
  # zero unit: finite (zero) gradient instead of NaN
  p = jax.tree.map(lambda a: a, f.params)
  p["layers"][0]["kernel"] = p["layers"][0]["kernel"].at[:, 0].set(0.0)
  g = jax.grad(lambda q: ppx.path_norm_penalty(q, f.spec)
               + common.group_lasso_penalty(q, (0, 1)))(p)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


def test_weight_norm_projects_inputs():
  model = ppx.FactorizedMLP(1, 4, in_features=3, num_classes=2,
                            rngs=nnx.Rngs(0))
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
  assert convergence.crossing_step(steps, [5, 4, 2, 1, 1], [5, 3, 3, 2, 2]) == 20
  assert convergence.crossing_step(steps, [5, 4, 2, 1, 3], [5, 3, 3, 2, 2]) is None


def test_convergence_quick(tmp_path):
  s = convergence.main(["--quick", "--no-progress", "--out", str(tmp_path),
                        "--iterations", "20", "--eval-every", "10",
                        "--jacobian-samples", "8", "--jacobian-track", "4",
                        "--methods", "pathprox", "weight_decay"])
  data = _load(tmp_path / "convergence_quick.json")
  for m in ("pathprox", "weight_decay"):
    hist = data["results"][m]["history"]
    assert [h["step"] for h in hist] == [0, 10, 20]
    assert all(_finite(h["objective"]) for h in hist)
    # the balanced objective never exceeds the raw one
    assert all(h["objective"] <= h["objective_raw"] * (1 + 1e-5) for h in hist)
    assert all(_finite(h["jacobian_median"]) for h in hist)
  assert os.path.exists(tmp_path / "figure1_quick.png")
  assert os.path.exists(tmp_path / "figure4_quick.png")
  assert "vs_wd_balanced" in s
  figs = convergence.main(["--replot", str(tmp_path / "convergence_quick.json")])
  assert len(figs) == 3
  # Each method was saved as it finished; --resume loads it bit for bit.
  saved = tmp_path / "runs_quick" / "pathprox_quick.json"
  assert saved.exists()
  again = convergence.main(["--quick", "--no-progress", "--out", str(tmp_path),
                            "--iterations", "20", "--eval-every", "10",
                            "--jacobian-samples", "8", "--jacobian-track", "4",
                            "--methods", "pathprox", "weight_decay",
                            "--resume"])
  assert again["at"] == s["at"]


def test_decision_boundary_quick(tmp_path):
  s = decision_boundary.main(["--quick", "--no-progress", "--out",
                              str(tmp_path), "--iterations", "20",
                              "--long-iterations", "40", "--eval-every", "20",
                              "--grid", "20"])
  assert os.path.exists(tmp_path / "figure2_quick.png")
  assert _finite(s["long"]["pathprox"]["objective"])


def test_sparsity_quick(tmp_path):
  sparsity.main(["--quick", "--no-progress", "--out", str(tmp_path),
                 "--methods", "pathprox", "group_lasso", "--iterations", "20",
                 "--checkpoint-every", "20", "--finetune-iterations", "10"])
  data = _load(tmp_path / "sparsity_quick.json")
  assert len(data["points"]) == 2
  assert all(0 <= p["sparsity"] <= 1 for p in data["points"])
  assert os.path.exists(tmp_path / "figure5_quick.png")
  os.remove(tmp_path / "figure5_quick.png")
  sparsity.main(["--replot", str(tmp_path / "sparsity_quick.json")])
  assert os.path.exists(tmp_path / "figure5_quick.png")


def test_generalization_quick(tmp_path, capsys):
  out = generalization.main([
      "--quick", "--no-progress", "--out", str(tmp_path), "--tasks", "1",
      "--seeds", "2", "--methods", "pathprox", "--weight-norm",
      "--iterations-task1", "10", "--eval-every", "10",
      "--data-dir", str(tmp_path / "no_data")])
  rows = {(r["task"], r["method"]): r for r in out["table"]}
  assert set(rows) == {(1, "pathprox"), (1, "weight_norm")}
  assert all(_finite(r["test_acc"][0]) and _finite(r["test_acc"][1])
             for r in rows.values())
  assert "corrupted-data accuracy skipped" in capsys.readouterr().out
  assert os.path.exists(tmp_path / "generalization_quick.png")
  os.remove(tmp_path / "generalization_quick.png")
  generalization.main(["--replot", str(tmp_path / "generalization_quick.json")])
  assert os.path.exists(tmp_path / "generalization_quick.png")


def test_generalization_vgg19_synthetic_smoke(tmp_path):
  out = generalization.main([
      "--quick", "--no-progress", "--out", str(tmp_path), "--tasks", "3",
      "--seeds", "1", "--methods", "pathprox", "--synthetic-cifar", "8",
      "--width-multiplier", "0.0625", "--max-steps", "1"])
  (row,) = out["table"]
  assert row["task"] == 3 and _finite(row["test_acc"][0])
  assert 0 <= row["active"][0] <= 1


def test_race_quick_tunes_races_resumes_and_replots(tmp_path, capsys):
  argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--workers", "1",
          "--methods", "sgd_wd", "adaptive", "--seeds", "2",
          "--iterations", "16", "--eval-every", "4"]
  summary = race.main(argv)["task1"]
  runs = tmp_path / "runs_quick" / "task1"
  # 3 grid points per method on the tuning seed, then 2 seeds at the winner.
  for m in ("sgd_wd", "adaptive"):
    files = sorted(os.listdir(runs / m))
    assert sum(f.startswith("tune_") for f in files) == 3
    assert sum(f.startswith("race_") for f in files) == 2
    row = summary["methods"][m]
    scores = {float(k): v for k, v in row["tuning"].items()}
    assert row["lr"] == min(scores, key=scores.get)
    saved = _load(runs / m / f"race_lr{row['lr']:g}_it16_seed0.json")
    hist = saved["history"]
    steps = [h["step"] for h in hist]      # a diverged run stops at the NaN
    assert steps == [0, 4, 8, 12, 16][:len(steps)]
    assert len(steps) == 5 or saved["diverged"]
    secs = [h["seconds"] for h in hist]
    assert secs[0] == 0 and all(b >= a for a, b in zip(secs, secs[1:]))
  # the targets are SGD + weight decay's own mean objectives
  base = summary["methods"]["sgd_wd"]["at"]
  for c, target in summary["targets"].items():
    assert target == pytest.approx(base[c]["objective"][0])
  assert (tmp_path / "race_task1_quick.png").exists()
  assert "iterations to SGD+WD@" in (tmp_path / "race_quick.md").read_text()
  # Without --resume a second run refuses to overwrite; with it, nothing reruns.
  with pytest.raises(SystemExit, match="--resume"):
    race.main(argv)
  capsys.readouterr()
  race.main(argv + ["--resume"])
  assert "0 to run" in capsys.readouterr().out
  os.remove(tmp_path / "race_task1_quick.png")
  race.main(argv + ["--replot"])
  assert (tmp_path / "race_task1_quick.png").exists()


def test_race_ffn_task_quick(tmp_path):
  argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--workers", "1",
          "--tasks", "ffn", "--methods", "sgd_wd", "adaptive_eps_cosine",
          "--lr", "1e-3", "--seeds", "1", "--iterations", "8",
          "--eval-every", "4"]
  summary = race.main(argv)["ffn"]
  row = summary["methods"]["adaptive_eps_cosine"]
  assert row["jacobian_median"] is None          # token inputs: no Jacobian
  assert 0 <= row["at"][8]["active"][0] <= 1
  assert np.isfinite(row["at"][8]["objective"][0])
  assert "validation next-byte accuracy" in (tmp_path / "race_quick.md").read_text()


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
  hist = [{"step": s, "objective": o, "seconds": 0.5 * s}
          for s, o in [(0, 2.0), (10, 1.0), (20, float("nan")), (30, 0.4)]]
  assert race.reach(hist, 1.0) == (10, 5.0)
  assert race.reach(hist, 0.5) == (30, 15.0)
  assert race.reach(hist, 0.1) == (None, None)
  assert race.at(hist, 30, "objective") == 0.4 and race.at(hist, 25, "objective") is None
  assert race.mean_std([1.0, 3.0, None, float("inf")]) == (2.0, 1.0)
  assert race.settle(hist, 1.0) == 30          # the NaN at 20 breaks the run
  assert race.settle(hist, 0.1) is None
  a, b = [1.0, 2.0, 5.0, 3.0], [0.1, 0.4, 0.9, 0.2]
  assert race.spearman(a, b) == pytest.approx(0.8)   # scipy.stats.spearmanr


def test_reproducibility_quick(tmp_path):
  result = reproducibility.main(["--quick", "--out", str(tmp_path),
                                 "--iterations", "6", "--repeats", "1"])
  assert set(result) == {"default_vs_one_thread"}
  assert all(isinstance(r["bitwise_equal"], bool) for r in result.values())
  assert (tmp_path / "reproducibility_quick.json").exists()


def test_progress_lines_in_a_log_file(capsys):
  bar = common.progress_bar(100, "run")            # stderr is not a terminal
  for _ in range(100):
    bar.update(1)
  bar.close()
  err = capsys.readouterr().err
  assert "\r" not in err and err.count("\n") <= 3 and "100/100" in err


def test_revival_trace_quick():
  rows = revival_trace.main(["--quick"])
  assert [r[0] for r in rows] == [8, 12, 16]
  assert all(len(r[1].split()) == 3 for r in rows)       # three groups


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
    g = 0.1 * x[p]                           # m^ = g, sqrt(v^) = |g|
    np.testing.assert_allclose(u[p], -1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-4)
  for p in inputs:                 # no decay, zero gradient: unchanged
    np.testing.assert_array_equal(u[p], 0.0)
