"""UnitSpec.discover: every homogeneous unit group of a model, found from its trace."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from pathprox_jax.discovery.chains import links as chain_links
from pathprox_jax.discovery.graph import trace
from pathprox_jax.discovery.infer import infer_slice
from pathprox_jax.discovery.rules import Candidate, Context, Reject, analyse, producer
from pathprox_jax.units.slices import UnitGroup


@dataclasses.dataclass(frozen=True)
class Finding:
  """What discovery concluded about one parameter leaf.

  Attributes:
    path: the leaf.
    role: ``"input_kernel"`` ... (a role of :data:`~pathprox_jax.LABELS`) for
      a leaf in a group, ``"rejected"`` for the parameter of a candidate that
      is not a homogeneous unit group, ``"overlap"`` for a valid candidate
      that shares a leaf with an earlier group, ``""`` otherwise.
    group: the group index (``-1`` if none).
    reason: why a candidate was rejected (``""`` otherwise).
  """
  path: str
  role: str
  group: int = -1
  reason: str = ""


def _group_of(cand: Candidate) -> UnitGroup:
  n = cand.num_units
  return UnitGroup(
      inputs=tuple(infer_slice(f.path, f.labels, n) for f in cand.inputs),
      biases=tuple(infer_slice(f.path, f.labels, n) for f in cand.biases),
      outputs=tuple(infer_slice(f.path, f.labels, n, free_axes=f.free_axes,
                                bias=f.bias, conv=f.conv, output=True)
                    for f in cand.outputs))


def discover_groups(fn: Callable, params: Any, inputs: tuple
                    ) -> tuple[list[UnitGroup], tuple[bool, ...], list[Finding]]:
  """Groups (in network order), balancing links and per-leaf findings."""
  if not inputs:
    raise ValueError("UnitSpec.discover needs example inputs: "
                     "UnitSpec.discover(fn, params, x).")
  graph = trace(fn, params, inputs)
  if not graph.params:
    raise ValueError("UnitSpec.discover: params has no array leaves.")
  ctx = Context(graph)
  found: list[tuple[Candidate, UnitGroup]] = []
  notes: dict[str, tuple[str, str]] = {}
  for k in range(len(graph.nodes)):
    try:
      if producer(ctx, k) is None:
        continue
      cand = analyse(ctx, k)
      found.append((cand, _group_of(cand)))
    except Reject as e:
      path = _candidate_path(ctx, k)
      if path is not None:
        notes.setdefault(path, ("rejected", e.reason))
  # Units with a rectifier between the maps first (real neurons), then units
  # whose activation is the identity (a factorised or norm-scaled linear map),
  # each pass in network order.
  accepted, used = [], set()
  for rectified in (True, False):
    for cand, group in found:
      if cand.rectified != rectified:
        continue
      paths = set(cand.paths())
      if paths & used:
        if not paths <= used:
          notes.setdefault(cand.inputs[0].path, (
              "overlap", f"would be a unit group ({group.describe()}), but "
              f"shares {sorted(paths & used)} with a group "
              + ("found earlier" if rectified else "that has a ReLU-like "
                 "activation, which is preferred")))
        continue
      used |= paths
      accepted.append((cand, group))
  accepted.sort(key=lambda cg: cg[0].node)
  if not accepted:
    details = "; ".join(f"'{p}': {r}" for p, (_, r) in notes.items()) or \
        "no linear map in the parameters"
    raise ValueError("UnitSpec.discover found no homogeneous unit in fn "
                     f"(candidates: {details}).")
  cands = [c for c, _ in accepted]
  findings = [Finding(p, role, -1, reason) for p, (role, reason) in notes.items()
              if p not in used]
  return [g for _, g in accepted], chain_links(ctx, cands), findings


def _candidate_path(ctx: Context, k: int) -> str | None:
  node = ctx.graph.nodes[k]
  if node.prim not in ("dot_general", "conv_general_dilated", "mul"):
    return None
  views = [ctx.scaled_view(a) for a in node.ins]
  views = [v for v in views if v is not None]
  return views[0][0] if len(views) == 1 else None
