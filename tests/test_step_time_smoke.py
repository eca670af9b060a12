"""Smoke test of benchmarks/step_time.py --quick: it runs and writes valid JSON.

No timing assertions: the machine is shared and timings are noise here; only
the structure of the output and the static HLO facts are checked.
"""

import json
import math
import os

import pytest

from benchmarks import step_time


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("step_time")
  results = step_time.main(["--quick", "--no-progress", "--out", str(out),
                            "--variants", "sgd_wd", "pathprox",
                            "pathprox_nobalance"])
  return out, results


def test_writes_json_and_figures(quick_run):
  out, _ = quick_run
  with open(os.path.join(out, "step_time_quick.json")) as f:
    data = json.load(f)
  assert set(data) >= {"config", "environment", "models", "sweep",
                       "dispatch_us", "table", "runtime_s"}
  assert os.path.getsize(os.path.join(out, "step_time_ratios_quick.png")) > 0
  assert os.path.getsize(os.path.join(out, "step_time_width_sweep_quick.png")) > 0
  m = data["models"]["mlp3f"]
  for kind in ("step", "update"):
    assert set(m[kind]) == {"sgd_wd", "pathprox", "pathprox_nobalance"}
    for v, d in m[kind].items():
      q = d["ms"]
      assert q["n"] == 2 * 3            # rounds * block in --quick
      assert 0 < q["min"] <= q["median"] <= q["max"]
      assert math.isfinite(d["ratio"]["median"]) and d["ratio"]["median"] > 0
      assert d["baseline"] == "sgd_wd"
  for v, d in m["step"].items():
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
  h = step_time.analyze_hlo(hlo, param_elems=12, spec=None)
  assert h["fusions"] == 3
  assert h["param_sized_reductions"] == 1
  assert h["param_sized_temporaries"] == 1          # %z
  assert h["reads_by_argument"] == {"p.1": 2.0, "g.1": 1.0}
