"""The transforms under data and model parallelism on 8 forced CPU devices.

The work happens in ``tests/_sharding_worker.py``, run in a subprocess
because ``--xla_force_host_platform_device_count`` must be set before jax is
imported. Each sharded step starts from the same params and optimizer state
as the single-device reference step and must agree with it up to float
reduction order (relative error <= ``SHARD_TOLERANCE``, derived below), with
units being pruned in the compared steps.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.multidevice

WORKER = pathlib.Path(__file__).with_name("_sharding_worker.py")
# XLA's CPU collectives are slow when the machine is busy: be generous.
TIMEOUT_S = 900

# One sharded step against one single-device step from the same state: only
# the order of the float32 reductions differs (the batch mean is summed per
# device and all-reduced; model-parallel matmuls are summed per shard). A sum
# reordered as a balanced tree changes by about one rounding per level,
# log2(64) = 6 levels for the worker's batch of 64, in the forward and in
# the backward pass: 2 * 6 = 12 ulps relative to a leaf's largest entry,
# budgeted as 16 ulps = 1.9e-6 (measured on one x86-64 CPU: at most 6.8 ulps,
# the momentum trace in the "other" layout). A sharding bug (a missing
# all-reduce, a wrong slice) is an O(1) error.
SHARD_TOLERANCE = 16 * float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def report():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, str(WORKER)],
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      env=env,
      check=False,
  )
  assert proc.returncode == 0, (
      f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
      f"{proc.stderr[-3000:]}"
  )
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _ids(report):
  return [(r["optimizer"], r["layout"]) for r in report["results"]]


def test_worker_saw_eight_devices(report):
  assert report["devices"] == 8


def test_every_layout_was_checked(report):
  ids = _ids(report)
  for layout in ("data", "units", "other", "2d"):
    assert ("pathprox", layout) in ids
  assert ("pathprox_momentum", "units") in ids
  assert ("pathprox_momentum", "other") in ids


def test_sharded_steps_match_single_device(report):
  for r in report["results"]:
    assert r["max_rel_err"] <= SHARD_TOLERANCE, (SHARD_TOLERANCE, r)


def test_pruning_happens_in_compared_steps(report):
  for r in report["results"]:
    first, last = r["active_counts"][0], r["active_counts"][-1]
    assert sum(last) < sum(first), r  # some units were zeroed ...
    assert sum(r["active_counts"][-2]) > 0, r  # ... starting from live ones


def test_xla_inserted_collectives_and_kept_shardings(report):
  for r in report["results"]:
    assert r["all_reduce"], r
    assert r["shardings_ok"], r


def test_sharded_checkpoint_round_trip(report):
  assert report["checkpoint"] == {"bitwise": True, "shardings": True}


def _free_port():
  import socket  # noqa: PLC0415

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process():
  """examples/data_parallel.py over 2 processes x 4 CPU devices (gloo on
  localhost, as on a 2-host cluster) reports the same loss as 1 x 8."""
  example = WORKER.parent.parent / "examples" / "data_parallel.py"
  common = [sys.executable, str(example), "--steps", "5", "--layout", "data"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  procs = [
      subprocess.Popen(
          common
          + [
              "--devices",
              "4",
              "--coordinator",
              f"127.0.0.1:{port}",
              "--num-processes",
              "2",
              "--process-id",
              str(i),
          ],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
          env=env,
      )
      for i in range(2)
  ]
  outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  single = subprocess.run(
      common,
      capture_output=True,
      text=True,
      env=env,
      timeout=TIMEOUT_S,
      check=True,
  ).stdout

  def final_line(text):
    return [l for l in text.splitlines() if "after 5 steps" in l][-1].strip()

  assert "2 process(es), 8 devices" in outs[0][0]
  assert final_line(outs[0][0]) == final_line(single)
