"""Smoke tests of the benchmark scripts in tiny configurations.

Each test runs a script as ``python -m benchmarks.<name> --quick`` (plus even
smaller options) in a subprocess and checks, through the command line and
the files the script writes, that the JSON and PNG outputs exist and hold
finite numbers, and that ``--resume`` / ``--replot`` work. The tests import
no benchmark module: the benchmarks' helpers are the benchmarks' business,
the library's behaviour is tested on the library.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 900


def run_script(name, *args, ok=True):
  """``python -m benchmarks.<name> *args`` from the repository root; returns
  the completed process (asserting success unless ``ok=False``)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "-m", f"benchmarks.{name}", *map(str, args)],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      check=False,
  )
  if ok:
    assert proc.returncode == 0, (
        f"benchmarks.{name} {' '.join(map(str, args))} failed "
        f"({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
  return proc


def _load(path):
  with open(path) as f:
    return json.load(f)


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def test_help_runs():
  for name, option in (
      ("convergence", "--iterations"),
      ("generalization", "--replot"),
  ):
    out = run_script(name, "--help").stdout
    assert "--quick" in out and option in out, name


CONVERGENCE = [
    "--quick",
    "--iterations",
    20,
    "--eval-every",
    10,
    "--jacobian-samples",
    8,
    "--jacobian-track",
    4,
    "--methods",
    "pathprox",
    "weight_decay",
]


def test_convergence_quick_resumes_and_replots(tmp_path):
  # With stderr a pipe (a log file), the progress bar writes whole lines.
  proc = run_script("convergence", *CONVERGENCE, "--out", tmp_path)
  assert "\r" not in proc.stderr
  assert "20/20" in proc.stderr
  data = _load(tmp_path / "convergence_quick.json")
  for m in ("pathprox", "weight_decay"):
    hist = data["results"][m]["history"]
    assert [h["step"] for h in hist] == [0, 10, 20]
    assert all(_finite(h["objective"]) for h in hist)
    # the balanced objective never exceeds the raw one
    assert all(h["objective"] <= h["objective_raw"] * (1 + 1e-5) for h in hist)
    assert all(_finite(h["jacobian_median"]) for h in hist)
  assert "vs_wd_balanced" in data["summary"]
  figures = [
      "figure1_quick.png",
      "figure4_quick.png",
      "figure1_lipschitz_quick.png",
  ]
  for name in figures:
    assert (tmp_path / name).exists(), name
    os.remove(tmp_path / name)
  run_script("convergence", "--replot", tmp_path / "convergence_quick.json")
  for name in figures:
    assert (tmp_path / name).exists(), name
  # Each method was saved as it finished; --resume loads it bit for bit.
  assert (tmp_path / "runs_quick" / "pathprox_quick.json").exists()
  first = data["summary"]["at"]
  run_script(
      "convergence",
      *CONVERGENCE,
      "--no-progress",
      "--out",
      tmp_path,
      "--resume",
  )
  assert _load(tmp_path / "convergence_quick.json")["summary"]["at"] == first


def test_decision_boundary_quick(tmp_path):
  run_script(
      "decision_boundary",
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--iterations",
      20,
      "--long-iterations",
      40,
      "--eval-every",
      20,
      "--grid",
      20,
  )
  assert (tmp_path / "figure2_quick.png").exists()
  summary = _load(tmp_path / "decision_boundary_quick.json")["summary"]
  assert _finite(summary["long"]["pathprox"]["objective"])


def test_sparsity_quick(tmp_path):
  run_script(
      "sparsity",
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--methods",
      "pathprox",
      "group_lasso",
      "--iterations",
      20,
      "--checkpoint-every",
      20,
      "--finetune-iterations",
      10,
  )
  data = _load(tmp_path / "sparsity_quick.json")
  assert len(data["points"]) == 2
  assert all(0 <= p["sparsity"] <= 1 for p in data["points"])
  assert (tmp_path / "figure5_quick.png").exists()
  os.remove(tmp_path / "figure5_quick.png")
  run_script("sparsity", "--replot", tmp_path / "sparsity_quick.json")
  assert (tmp_path / "figure5_quick.png").exists()


def test_generalization_quick(tmp_path):
  proc = run_script(
      "generalization",
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--tasks",
      1,
      "--seeds",
      2,
      "--methods",
      "pathprox",
      "--weight-norm",
      "--iterations-task1",
      10,
      "--eval-every",
      10,
      "--data-dir",
      tmp_path / "no_data",
  )
  table = _load(tmp_path / "generalization_quick.json")["table"]
  rows = {(r["task"], r["method"]): r for r in table}
  assert set(rows) == {(1, "pathprox"), (1, "weight_norm")}
  assert all(
      _finite(r["test_acc"][0]) and _finite(r["test_acc"][1])
      for r in rows.values()
  )
  assert "corrupted-data accuracy skipped" in proc.stdout
  assert (tmp_path / "generalization_quick.png").exists()
  os.remove(tmp_path / "generalization_quick.png")
  run_script(
      "generalization", "--replot", tmp_path / "generalization_quick.json"
  )
  assert (tmp_path / "generalization_quick.png").exists()


def test_generalization_vgg19_synthetic_smoke(tmp_path):
  run_script(
      "generalization",
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--tasks",
      3,
      "--seeds",
      1,
      "--methods",
      "pathprox",
      "--synthetic-cifar",
      8,
      "--width-multiplier",
      0.0625,
      "--max-steps",
      1,
  )
  (row,) = _load(tmp_path / "generalization_quick.json")["table"]
  assert row["task"] == 3 and _finite(row["test_acc"][0])
  assert 0 <= row["active"][0] <= 1


def test_race_quick_tunes_races_resumes_and_replots(tmp_path):
  argv = [
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--workers",
      1,
      "--methods",
      "sgd_wd",
      "adaptive",
      "--seeds",
      2,
      "--iterations",
      16,
      "--eval-every",
      4,
  ]
  run_script("race", *argv)
  summary = _load(tmp_path / "race_quick.json")["summary"]["task1"]
  runs = tmp_path / "runs_quick" / "task1"
  # 3 grid points per method on the tuning seed, then 2 seeds at the winner.
  for m in ("sgd_wd", "adaptive"):
    files = sorted(os.listdir(runs / m))
    assert sum(f.startswith("tune_") for f in files) == 3
    assert sum(f.startswith("race_") for f in files) == 2
    row = summary["methods"][m]
    scores = {float(k): v for k, v in row["tuning"].items()}
    assert row["lr"] == min(scores, key=scores.get)
    # the iteration count is in the file name: a resume never reuses a run
    # of another horizon
    saved = _load(runs / m / f"race_lr{row['lr']:g}_it16_seed0.json")
    hist = saved["history"]
    steps = [h["step"] for h in hist]  # a diverged run stops at the NaN
    assert steps == [0, 4, 8, 12, 16][: len(steps)]
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
  proc = run_script("race", *argv, ok=False)
  assert proc.returncode != 0 and "--resume" in proc.stderr
  assert "0 to run" in run_script("race", *argv, "--resume").stdout
  os.remove(tmp_path / "race_task1_quick.png")
  run_script("race", *argv, "--replot")
  assert (tmp_path / "race_task1_quick.png").exists()


def test_race_ffn_task_quick(tmp_path):
  run_script(
      "race",
      "--quick",
      "--no-progress",
      "--out",
      tmp_path,
      "--workers",
      1,
      "--tasks",
      "ffn",
      "--methods",
      "sgd_wd",
      "adaptive_eps_cosine",
      "--lr",
      1e-3,
      "--seeds",
      1,
      "--iterations",
      8,
      "--eval-every",
      4,
  )
  summary = _load(tmp_path / "race_quick.json")["summary"]["ffn"]
  row = summary["methods"]["adaptive_eps_cosine"]
  assert row["jacobian_median"] is None  # token inputs: no Jacobian
  assert 0 <= row["at"]["8"]["active"][0] <= 1
  assert _finite(row["at"]["8"]["objective"][0])
  assert (
      "validation next-byte accuracy"
      in (tmp_path / "race_quick.md").read_text()
  )


def test_reproducibility_quick(tmp_path):
  run_script(
      "reproducibility",
      "--quick",
      "--out",
      tmp_path,
      "--iterations",
      6,
      "--repeats",
      1,
  )
  result = _load(tmp_path / "reproducibility_quick.json")["result"]
  assert set(result) == {"default_vs_one_thread"}
  assert all(isinstance(r["bitwise_equal"], bool) for r in result.values())


def test_revival_trace_quick(tmp_path):
  run_script("revival_trace", "--quick", "--no-progress", "--out", tmp_path)
  trace = _load(tmp_path / "revival_trace_adaptive_quick.json")["trace"]
  assert [t["step"] for t in trace] == [8, 12, 16]
  assert all(len(t["active"]) == len(t["path_norm"]) == 3 for t in trace)
  assert all(_finite(t["loss"]) for t in trace)
  assert (tmp_path / "revival_trace_adaptive_quick.png").exists()
