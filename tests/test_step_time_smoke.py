"""Smoke test of ``python -m benchmarks.step_time --quick``: it runs and writes valid JSON.

Run as a subprocess (the tests import no benchmark module). No timing
assertions: the machine is shared and timings are noise here; only the
structure of the output and the static HLO facts are checked.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("step_time")
  env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "benchmarks.step_time",
          "--quick",
          "--no-progress",
          "--out",
          str(out),
          "--variants",
          "sgd_wd",
          "pathprox",
          "pathprox_nobalance",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(out, "step_time_quick.json")) as f:
    return out, json.load(f)


def test_writes_json_and_figures(quick_run):
  out, data = quick_run
  assert set(data) >= {
      "config",
      "environment",
      "models",
      "sweep",
      "dispatch_us",
      "table",
      "runtime_s",
  }
  assert os.path.getsize(os.path.join(out, "step_time_ratios_quick.png")) > 0
  assert (
      os.path.getsize(os.path.join(out, "step_time_width_sweep_quick.png")) > 0
  )
  m = data["models"]["mlp3f"]
  for kind in ("step", "update"):
    assert set(m[kind]) == {"sgd_wd", "pathprox", "pathprox_nobalance"}
    for d in m[kind].values():
      q = d["ms"]
      assert q["n"] == 2 * 3  # rounds * block in --quick
      assert 0 < q["min"] <= q["median"] <= q["max"]
      assert math.isfinite(d["ratio"]["median"]) and d["ratio"]["median"] > 0
      assert d["baseline"] == "sgd_wd"
  for d in m["step"].values():
    assert math.isfinite(d["final_loss"])
    assert d["compile_s"] > 0 and d["memory"]["peak"] > 0


def test_hlo_facts(quick_run):
  """Norms computed once per unit and side: 2 reductions per group."""
  _, results = quick_run
  upd = results["models"]["mlp3f"]["update"]
  for v in ("pathprox", "pathprox_nobalance"):
    h = upd[v]["hlo"]
    assert h["param_sized_reductions"] == h["expected_norm_reductions"] == 6
  assert upd["sgd_wd"]["hlo"]["param_sized_reductions"] == 0


def test_sweep_fit(quick_run):
  _, results = quick_run
  sw = results["sweep"]
  assert [r["width"] for r in sw["rows"]] == [16, 32]
  assert sw["rows"][0]["params"] < sw["rows"][1]["params"]
  for f in sw["fits"].values():
    assert math.isfinite(f["slope_all"])
