"""discover: every homogeneous unit group of a model, found from its trace."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from pathprox_jax.discovery.chains import links as chain_links
from pathprox_jax.discovery.graph import trace
from pathprox_jax.discovery.infer import infer_slice
from pathprox_jax.discovery.primitives import Homogeneity, lookup
from pathprox_jax.discovery.rules import (
    Candidate,
    Context,
    Reject,
    analyse,
    producer,
)
from pathprox_jax.units.slices import UnitGroup
from pathprox_jax.units.spec import UnitSpec


@dataclasses.dataclass(frozen=True)
class Finding:
  """What discovery concluded about one parameter leaf.

  Attributes:
    path: the leaf.
    role: ``"input_kernel"`` ... (a role of :data:`~pathprox_jax.units.LABELS`) for
      a leaf in a group, ``"rejected"`` for the parameter of a candidate that
      is not a homogeneous unit group, ``"overlap"`` for a valid candidate
      that shares a leaf with an earlier group, ``""`` otherwise.
    group: the group index (``-1`` if none).
    reason: why a candidate was rejected (``""`` otherwise).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {f"fc{i}": {"kernel": jnp.ones((3 if i == 1 else 4, 4))}
    ...           for i in (1, 2, 3)}
    >>> def fn(p, x):
    ...   h = jnp.tanh(x @ p["fc1"]["kernel"]) @ p["fc2"]["kernel"]
    ...   return jax.nn.relu(h) @ p["fc3"]["kernel"]
    >>> (finding,) = ppx.discover(fn, params, jnp.zeros((1, 3))).findings
    >>> finding.path, finding.role, finding.reason.split(" ")[0]
    ('fc1/kernel', 'rejected', 'tanh')
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
      outputs=tuple(
          infer_slice(
              f.path,
              f.labels,
              n,
              free_axes=f.free_axes,
              bias=f.bias,
              conv=f.conv,
              output=True,
          )
          for f in cand.outputs
      ),
  )


def discover_groups(
    fn: Callable, params: Any, inputs: tuple
) -> tuple[list[UnitGroup], tuple[bool, ...], list[Finding]]:
  """Groups (in network order), balancing links and per-leaf findings."""
  if not inputs:
    raise ValueError("discover needs example inputs: discover(fn, params, x).")
  graph = trace(fn, params, inputs)
  if not graph.params:
    raise ValueError("discover: params has no array leaves.")
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
          notes.setdefault(
              cand.inputs[0].path,
              (
                  "overlap",
                  f"would be a unit group ({group.describe()}), but "
                  f"shares {sorted(paths & used)} with a group "
                  + (
                      "found earlier"
                      if rectified
                      else "that has a ReLU-like activation, which is preferred"
                  ),
              ),
          )
        continue
      used |= paths
      accepted.append((cand, group))
  accepted.sort(key=lambda cg: cg[0].node)
  if not accepted:
    details = (
        "; ".join(f"'{p}': {r}" for p, (_, r) in notes.items())
        or "no linear map in the parameters"
    )
    raise ValueError(
        f"discover found no homogeneous unit in fn (candidates: {details})."
    )
  cands = [c for c, _ in accepted]
  findings = [
      Finding(p, role, -1, reason)
      for p, (role, reason) in notes.items()
      if p not in used
  ]
  return [g for _, g in accepted], chain_links(ctx, cands), findings


def _candidate_path(ctx: Context, k: int) -> str | None:
  node = ctx.graph.nodes[k]
  if lookup(node.prim).homogeneity is not Homogeneity.PRODUCT:
    return None
  views = [ctx.scaled_view(a) for a in node.ins]
  views = [v for v in views if v is not None]
  return views[0][0] if len(views) == 1 else None


def discover(fn: Callable, params: Any, *example_inputs: Any) -> UnitSpec:
  """Finds every homogeneous unit group of ``fn(params, *example_inputs)``.

  ``fn`` is traced to a jaxpr with abstract inputs (no FLOPs): any pure
  function of the params, a Flax ``Module.apply``, a function merging an
  NNX graph, an Equinox module call (``jax.vmap`` included) or a Haiku
  ``transform``'s ``apply``; ``jit``, ``vmap``, ``custom_jvp`` activations
  are seen through. A group starts at a linear map in one parameter
  (``x @ W``, a convolution, or a per-channel scale such as a norm's
  ``scale``), optionally plus a bias and further linear maps summed into
  the same pre-activation, then passes only through positively homogeneous
  operations that keep each unit separate (ReLU and leaky ReLU however
  written, max and average pooling, reshapes, transposes, slices,
  concatenation), and is read by one or more linear maps in other
  parameters. Candidates that are not are reported with the reason
  (:meth:`UnitSpec.report`). Groups are disjoint, chosen from the input side; a
  norm layer right before the activation makes the norm's ``(scale,
  shift)`` the units' input weights (``docs/algorithms.md``, "Unit
  discovery"). Where layer-wise balancing is exact is recorded in
  :attr:`UnitSpec.links`.

  Args:
    fn: ``fn(params, *inputs) -> outputs``.
    params: the params pytree ``fn`` takes.
    *example_inputs: arrays (or ``jax.ShapeDtypeStruct``) with the
      shapes ``fn`` expects; a batch of one is enough.

  Returns:
    The spec, with :attr:`UnitSpec.findings` for the leaves in no group.

  Raises:
    ValueError: if ``fn`` cannot be traced with these params and inputs
      (naming the shapes), or it has no homogeneous unit (naming every
      candidate and why it was rejected).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> def fn(p, x):
    ...   h = jax.nn.relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    ...   return h @ p["fc2"]["kernel"]
    >>> discover(fn, params, jnp.zeros((1, 3)))
    UnitSpec[(fc1 -> fc2: 4 units)]
  """
  groups, links, findings = discover_groups(fn, params, example_inputs)
  spec = UnitSpec.from_groups(params, groups, links=links)
  return dataclasses.replace(spec, links_checked=True, findings=tuple(findings))


def discover_module(model: Any, *example_inputs: Any) -> UnitSpec:
  """:func:`discover` for a Flax NNX module: the params are
  ``nnx.state(model, nnx.Param)`` and ``fn`` calls the model on a copy of
  its other state (batch statistics, RNG state), so nothing is mutated.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import pathprox_jax as ppx
    >>> model = ppx.MLP(3, 8, in_features=4, num_classes=2, rngs=nnx.Rngs(0))
    >>> discover_module(model, jnp.zeros((1, 4))) == model.unit_spec()
    True
  """
  from flax import nnx

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def fn(p, *xs):
    return nnx.merge(graphdef, p, rest, copy=True)(*xs)

  return discover(fn, params, *example_inputs)
