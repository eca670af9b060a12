"""Positive homogeneity, followed through the graph one candidate at a time.

A *candidate* starts at a linear map in the parameters whose output channel
``i`` is a would-be unit: ``x @ P`` / ``conv(x, P)`` (unit = output feature
of ``P``) or ``x * P`` (a per-channel scale such as a norm's ``scale``). The
question for each unit ``i``: if ``P``'s slice ``i`` (and the unit's bias
entries) is multiplied by ``a > 0``, does every value computed from the unit
scale by ``a`` until a linear map in other parameters reads it (whose slice
``i`` can then be divided by ``a``)? Each variable depending on the unit
carries an integer *label array*: the unit of each entry (``-1``: none).
Every rule below keeps that property or rejects the candidate with a reason.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple

import numpy as np

from pathprox_jax.discovery.graph import Graph, Lit, Node
from pathprox_jax.discovery.labels import (
    Constants,
    ParamViews,
    apply_layout,
    is_view,
    view,
)
from pathprox_jax.discovery.primitives import Homogeneity as H
from pathprox_jax.discovery.primitives import Moves, lookup

Labels = np.ndarray


class Reject(Exception):
  """A candidate is not a homogeneous unit group: ``reason`` says why."""

  def __init__(self, reason: str, node: Node | None = None):
    where = "" if node is None else f" at `{node.prim}`"
    if node is not None and node.where:
      where += f" in {'/'.join(node.where)}"
    super().__init__(reason + where)
    self.reason = reason + where


@dataclasses.dataclass
class Found:
  """A leaf slice found for a group: ``labels`` has the leaf's shape."""

  path: str
  labels: np.ndarray
  free_axes: tuple[int, ...] = ()  # output slices: leaf axes of the outputs
  conv: bool = False
  bias: str | None = None


@dataclasses.dataclass
class Candidate:
  node: int  # index of the producing node
  num_units: int
  inputs: list[Found]
  biases: list[Found] = dataclasses.field(default_factory=list)
  outputs: list[Found] = dataclasses.field(default_factory=list)
  data_inputs: list[Any] = dataclasses.field(default_factory=list)
  consumer_outs: list[int] = dataclasses.field(default_factory=list)
  producer_nodes: list[int] = dataclasses.field(default_factory=list)
  ends: list[int] = dataclasses.field(default_factory=list)  # after out bias
  rectified: bool = False  # a ReLU-like nonlinearity between the maps
  scale: bool = False  # starts at a per-channel scale (a norm's)

  def paths(self) -> list[str]:
    found = self.inputs + self.biases + self.outputs
    return [f.path for f in found] + [f.bias for f in self.outputs if f.bias]


class Context:
  """Graph-wide facts shared by all candidates."""

  def __init__(self, graph: Graph):
    self.graph = graph
    self.views = ParamViews(graph)
    self.consts = Constants(graph)
    self.producer_of = graph.producer()
    self._memo: dict[int, Any] = {}
    self.deps: dict[int, frozenset[str]] = {
        v: frozenset({p}) for v, p in graph.params.items()
    }
    for n in graph.nodes:
      d = frozenset().union(*(
          self.deps.get(a, frozenset()) for a in n.ins if not isinstance(a, Lit)
      ))
      for o in n.outs:
        self.deps[o] = d
    self.param_uses = collections.Counter()  # non-layout uses of each leaf
    for n in graph.nodes:
      if lookup(n.prim).moves is not Moves.LAYOUT:
        self.param_uses.update({v[0] for v in map(self.views.get, n.ins) if v})

  def scaled_view(self, atom):
    """``(path, index array)`` if ``atom`` is a layout view of one leaf, or
    such a view multiplied entry-wise by values that do not depend on it
    (e.g. a norm's ``scale * rsqrt(var + eps)``)."""
    if isinstance(atom, Lit):
      return None
    if atom not in self._memo:
      self._memo[atom] = self._scaled_view(atom)
    return self._memo[atom]

  def _scaled_view(self, atom):
    v, k = self.views.get(atom), self.producer_of.get(atom)
    if v is not None or isinstance(atom, Lit) or k is None:
      return v
    node = self.graph.nodes[k]
    if _scales_entries(node) and len(node.ins) == 2:
      for a, b in (node.ins, node.ins[::-1]):
        va = self.scaled_view(a)
        if va is not None and va[0] not in self._deps(b):
          return va[0], np.broadcast_to(va[1], self.graph.shapes[atom])
    inner = self.scaled_view(node.ins[0]) if is_view(node) else None
    if inner is None:
      return None
    return inner[0], view(node, inner[1])[node.outs.index(atom)]

  def check_single_use(self, path: str, node: Node) -> None:
    uses = self.param_uses.get(path, 0)
    if uses > 1:
      raise Reject(
          f"'{path}' is used by {uses} operations (weight sharing)", node
      )

  def _deps(self, atom) -> frozenset[str]:
    if isinstance(atom, Lit):
      return frozenset()
    return self.deps.get(atom, frozenset())


def _scales_entries(node: Node) -> bool:
  """Whether ``node`` is an entry-wise product (``x * P``: a per-channel scale)."""
  prim = lookup(node.prim)
  return prim.homogeneity is H.PRODUCT and prim.moves is Moves.ELEMENTWISE


def _shape(graph: Graph, atom) -> tuple[int, ...]:
  return np.shape(atom.value) if isinstance(atom, Lit) else graph.shapes[atom]


def leaf_labels(
    ctx: Context,
    path: str,
    idx: np.ndarray,
    labels: Labels,
    what: str,
    node: Node,
) -> np.ndarray:
  """Per leaf entry, the unit it belongs to, from a view's index array and the
  unit labels at the same positions; rejects inconsistent or partial maps."""
  shape = ctx.graph.leaf_shapes[path]
  out = np.full(int(np.prod(shape)), -1, np.int64)
  idx, labels = np.broadcast_arrays(idx, labels)
  flat_idx, flat_lab = idx.ravel(), labels.ravel()
  out[flat_idx] = flat_lab
  if np.any(out[flat_idx] != flat_lab):
    raise Reject(f"'{path}' ({what}) is broadcast across several units", node)
  if np.any(out < 0):
    raise Reject(
        f"only part of '{path}' ({what}) belongs to the units "
        "(e.g. a concatenation with other features before it)",
        node,
    )
  return out.reshape(shape)


# ------------------------------------------------------------------ producers
class Producer(NamedTuple):
  """A linear map in one parameter whose output channels are units."""

  path: str  # the parameter leaf
  labels: np.ndarray  # per leaf entry, its unit (the input slice)
  out_labels: np.ndarray  # per output entry, its unit
  data: Any  # the other operand: the map's input
  num_units: int


def producer(ctx: Context, k: int) -> Producer | None:
  """The :class:`Producer` at node ``k``, if it is one."""
  node = ctx.graph.nodes[k]
  prim = lookup(node.prim)
  if prim.homogeneity is not H.PRODUCT:
    return None
  return _PRODUCERS[prim.moves](ctx, node)


def _param_sides(ctx: Context, node: Node):
  """``(side, path, index array, data operand)`` for each of the two operands
  that is a (scaled) view of a leaf the other operand does not depend on."""
  for side in (0, 1):
    view, x_atom = ctx.scaled_view(node.ins[side]), node.ins[1 - side]
    if (
        view is not None
        and ctx.scaled_view(x_atom) is None
        and view[0] not in ctx._deps(x_atom)
    ):
      yield side, view[0], view[1], x_atom


def _dot_producer(ctx: Context, node: Node) -> Producer | None:
  for side, path, idx, x_atom in _param_sides(ctx, node):
    contract = node.params["dimension_numbers"][0][side]
    keep = [d for d in range(idx.ndim) if d not in contract]
    sizes = [idx.shape[d] for d in keep]
    n = int(np.prod(sizes))
    if n <= 1:
      continue
    coords = np.indices(idx.shape)
    p_lab = np.ravel_multi_index([coords[d] for d in keep], sizes)
    out_lab = _dot_out(node, side, p_lab, ctx.graph.shapes[node.outs[0]])
    labels = leaf_labels(ctx, path, idx, p_lab, "input slice", node)
    return Producer(path, labels, out_lab, x_atom, n)
  return None


def _conv_producer(ctx: Context, node: Node) -> Producer | None:
  x_atom, p_atom = node.ins
  view = ctx.scaled_view(p_atom)
  if view is None or view[0] in ctx._deps(x_atom):
    return None
  if node.params["feature_group_count"] * node.params["batch_group_count"] > 1:
    raise Reject(
        "a grouped or depthwise convolution mixes units differently "
        "from a dense one",
        node,
    )
  dn, (path, idx) = node.params["dimension_numbers"], view
  p_lab = np.indices(idx.shape)[dn.rhs_spec[0]]
  out_lab = np.indices(ctx.graph.shapes[node.outs[0]])[dn.out_spec[1]]
  labels = leaf_labels(ctx, path, idx, p_lab, "input slice", node)
  return Producer(path, labels, out_lab, x_atom, idx.shape[dn.rhs_spec[0]])


def _scale_producer(ctx: Context, node: Node) -> Producer | None:
  for _, path, idx, x_atom in _param_sides(ctx, node):
    size = int(np.prod(ctx.graph.leaf_shapes[path]))
    out_shape = ctx.graph.shapes[node.outs[0]]
    if size <= 1 or _shape(ctx.graph, x_atom) != out_shape:
      continue
    labels = np.arange(size).reshape(ctx.graph.leaf_shapes[path])
    return Producer(path, labels, np.broadcast_to(idx, out_shape), x_atom, size)
  return None


_PRODUCERS = {
    Moves.DOT: _dot_producer,
    Moves.CONV: _conv_producer,
    Moves.ELEMENTWISE: _scale_producer,
}


def _producer_through_layout(ctx: Context, atom):
  """``(node, producer, labels of atom)`` if ``atom`` is (a view of) a
  producer's output."""
  chain = []
  while not isinstance(atom, Lit) and atom in ctx.producer_of:
    k = ctx.producer_of[atom]
    node = ctx.graph.nodes[k]
    try:
      found = producer(ctx, k)
    except Reject:
      found = None
    if found is not None:
      labels = found.out_labels
      for n, i in reversed(chain):
        labels = view(n, labels)[i]
      return k, found, labels
    if not is_view(node):
      return None
    chain.append((node, node.outs.index(atom)))
    atom = node.ins[0]
  return None


# ------------------------------------------------------------ propagation
def analyse(ctx: Context, k: int) -> Candidate:
  """Follows candidate node ``k`` through the graph; raises :class:`Reject`."""
  found = producer(ctx, k)
  if found is None:
    raise Reject("not a linear map in one parameter")
  graph = ctx.graph
  ctx.check_single_use(found.path, graph.nodes[k])
  cand = Candidate(
      k,
      found.num_units,
      [Found(found.path, found.labels)],
      data_inputs=[found.data],
      producer_nodes=[k],
      scale=_scales_entries(graph.nodes[k]),
  )
  lab: dict[int, Labels] = {graph.nodes[k].outs[0]: found.out_labels}
  invariant: set[int] = set()  # computed from the units, but scale-free

  def labels_of(atom):
    return None if isinstance(atom, Lit) else lab.get(atom)

  for j in range(k + 1, len(graph.nodes)):
    node = graph.nodes[j]
    ins = [labels_of(a) for a in node.ins]
    if all(x is None for x in ins):
      if any(not isinstance(a, Lit) and a in invariant for a in node.ins):
        invariant.update(node.outs)
      continue
    own = set(cand.paths())
    for a in node.ins:
      if (
          not isinstance(a, Lit)
          and labels_of(a) is None
          and a not in invariant
          and ctx._deps(a) & own
          and ctx.scaled_view(a) is None
      ):
        raise Reject(
            "the unit's parameters are used a second time (weight sharing)",
            node,
        )
    for o, out in zip(node.outs, _rule(ctx, cand, node, ins)):
      if out is not None and np.any(out >= 0):
        lab[o] = out
      else:
        invariant.add(o)
  for o in graph.outputs:
    if labels_of(o) is not None:
      raise Reject(
          "its outputs are outputs of fn: no linear layer in the "
          "parameters reads them"
      )
  if not cand.outputs:
    raise Reject("no linear map in the parameters reads the units")
  if cand.scale and not cand.rectified:
    raise Reject(
        "a per-channel scale (a norm's) read directly by a linear "
        "map: that rescales the map's input, there is no activation "
        "in between"
    )
  for k, f in enumerate(cand.outputs):
    f.bias, end = _output_bias(ctx, cand.consumer_outs[k])
    cand.ends.append(end)
  return cand


def _rule(ctx: Context, cand: Candidate, node: Node, ins: list):
  """Labels of each of ``node``'s outputs (``None``: it no longer depends on
  the units' scale, a consumer or a comparison), or raises :class:`Reject`."""
  prim, graph = lookup(node.prim), ctx.graph
  if prim.homogeneity is H.UNKNOWN:
    raise Reject(
        f"`{node.prim}` is not an operation the units can pass through", node
    )
  if prim.homogeneity is H.BROKEN:
    raise Reject(f"{prim.reason} is not positively homogeneous", node)
  data = prim.data_operands(len(ins))
  if any(x is not None for i, x in enumerate(ins) if i not in data):
    raise Reject("the units' values are used as an index or a predicate", node)
  if prim.moves is Moves.LAYOUT:
    args = [a.value if isinstance(a, Lit) else None for a in node.ins]
    for i in data:  # labels, -1 where no unit lives
      x = ins[i]
      args[i] = np.full(_shape(graph, node.ins[i]), -1) if x is None else x
    outs = apply_layout(node, args)
    if outs is None:
      raise Reject("a data-dependent slice of the units", node)
    return outs
  if prim.moves is Moves.DOT:
    return [_dot(ctx, cand, node, ins)]
  if prim.moves is Moves.CONV:
    return [_conv(ctx, cand, node, ins)]
  if prim.moves is Moves.REDUCE:
    ins = [_reduce(ins[0], tuple(node.params["axes"]), node)]
  elif prim.moves is Moves.WINDOW:
    ins = [_pool(graph, ins[0], node)]
  else:  # elementwise ops broadcast size-1 dimensions implicitly
    out_shape = graph.shapes[node.outs[0]]
    ins = [None if x is None else np.broadcast_to(x, out_shape) for x in ins]
  return [_entrywise(ctx, cand, node, ins)]


def _entrywise(ctx: Context, cand: Candidate, node: Node, ins: list):
  """The labels of an entry-wise op's output, by its :class:`Homogeneity`."""
  h = lookup(node.prim).homogeneity
  labelled = [x for x in ins if x is not None]
  if h is H.PRODUCT or h is H.QUOTIENT:
    if len(labelled) == 2:
      raise Reject(
          "a product of two values of the units (a gate, attention "
          "scores or normalisation statistics)",
          node,
      )
    if h is H.QUOTIENT and ins[0] is None:
      raise Reject("divides by a value of the units", node)
    other = ctx.scaled_view(node.ins[1 if ins[0] is not None else 0])
    if other is not None:
      raise Reject(
          f"multiplies the units by the parameter '{other[0]}' (e.g. "
          "a norm's scale after the linear map: that scale would be "
          "the units' input weight)",
          node,
      )
    return labelled[0]
  units = labelled[0]
  for x in labelled[1:]:
    units = _same(units, x, node)
  data = lookup(node.prim).data_operands(len(ins))
  others = [
      a
      for i, (x, a) in enumerate(zip(ins, node.ins))
      if i in data and x is None and not ctx.consts.is_zero(a)
  ]
  if h is H.SUM:
    for a in others:
      _absorb(ctx, cand, node, a, units)
  elif others and h is H.INVARIANT:
    raise Reject(
        "compares the units with a nonzero constant (not scale invariant)", node
    )
  elif others:
    raise Reject(
        f"{node.prim} with a nonzero constant (e.g. ReLU6 or "
        "clipping) is not positively homogeneous",
        node,
    )
  cand.rectified |= h is H.RECTIFIER
  return None if h is H.INVARIANT else units


def _absorb(ctx: Context, cand: Candidate, node: Node, atom, units: Labels):
  """Joins a term added to the units to the group: an input bias or a second
  linear map with the same units; else raises :class:`Reject`."""
  view, own = ctx.views.get(atom), cand.paths()
  if view is not None and view[0] not in own:
    ctx.check_single_use(view[0], node)
    labels = leaf_labels(ctx, view[0], view[1], units, "input bias", node)
    cand.biases.append(Found(view[0], labels))
    return
  absorbed = _producer_through_layout(ctx, atom)
  if (
      absorbed is not None
      and absorbed[1].path not in own
      and np.array_equal(absorbed[2], units)
  ):
    kk, found, _ = absorbed
    ctx.check_single_use(found.path, node)
    cand.inputs.append(Found(found.path, found.labels))
    cand.data_inputs.append(found.data)
    cand.producer_nodes.append(kk)
    return
  raise Reject(
      "adds a term that does not scale with the units (a residual "
      "or skip connection, or a constant shift such as a norm's "
      "running mean)",
      node,
  )


def _same(a: Labels, b: Labels, node: Node) -> Labels:
  if a.shape != b.shape or not np.array_equal(a, b):
    raise Reject("combines values of different units (mixes units)", node)
  return a


def _varying(x: np.ndarray) -> set[int]:
  """The axes along which ``x`` is not constant."""
  return {a for a in range(x.ndim) if not np.all(x == np.take(x, [0], a))}


def _reduce(x: Labels, axes: tuple[int, ...], node: Node) -> Labels:
  if _varying(x) & set(axes):
    raise Reject("a reduction over the unit axis (mixes units)", node)
  return x[tuple(0 if a in axes else slice(None) for a in range(x.ndim))]


def _pool(graph: Graph, x: Labels, node: Node) -> Labels:
  p = node.params
  out_shape = graph.shapes[node.outs[0]]
  for axis in _varying(x):
    if (
        p["window_dimensions"][axis] != 1
        or p["window_strides"][axis] != 1
        or tuple(p["padding"][axis]) != (0, 0)
    ):
      raise Reject("a pooling window over the unit axis (mixes units)", node)
  index = tuple(
      slice(None) if out_shape[a] == x.shape[a] else slice(0, 1)
      for a in range(x.ndim)
  )
  return np.broadcast_to(x[index], out_shape)


def _dot(ctx: Context, cand: Candidate, node: Node, ins) -> Labels | None:
  if ins[0] is not None and ins[1] is not None:
    raise Reject(
        "a product of two values of the units (e.g. attention "
        "scores computed from them)",
        node,
    )
  side = 0 if ins[0] is not None else 1
  contract, s = node.params["dimension_numbers"][0], ins[side]
  s_contract, k_contract = contract[side], contract[1 - side]
  view = ctx.scaled_view(node.ins[1 - side])
  varying = _varying(s)
  if view is not None:  # a consumer
    path, idx = view
    if varying - set(s_contract):
      raise Reject(
          f"'{path}' reads the units without summing over them (the "
          "unit axis is a batch axis of the product)",
          node,
      )
    # Labels on the contracted dims, on the kernel's (paired in order).
    k_lab = _place(s, list(s_contract), list(k_contract), idx.shape)
    free = [d for d in range(idx.ndim) if d not in k_contract]
    return _consume(ctx, cand, node, view, k_lab, free)
  if varying & set(s_contract):
    raise Reject(
        "a parameter-free product across the unit axis (e.g. the "
        "query-key scores of attention) mixes units",
        node,
    )
  # A product with values that do not depend on the units (e.g. attention
  # weights): each output entry scales with one unit.
  return _dot_out(node, side, s, ctx.graph.shapes[node.outs[0]])


def _dot_out(node: Node, side: int, x: Labels, out_shape) -> Labels:
  """A ``dot_general``'s output labels from labels ``x`` of operand ``side``
  (constant over its contracted axes). Output axes: batch, lhs free, rhs free.
  """
  contract, batch = (d[side] for d in node.params["dimension_numbers"])
  free = [a for a in range(x.ndim) if a not in contract and a not in batch]
  start = len(batch) if side == 0 else len(out_shape) - len(free)
  dst = [*range(len(batch)), *range(start, start + len(free))]
  return _place(x, [*batch, *free], dst, out_shape)


def _place(x: Labels, src: list[int], dst: list[int], shape) -> Labels:
  """``x`` (constant over its axes not in ``src``) as an array of ``shape``
  whose axes ``dst`` are ``x``'s axes ``src``, paired in order."""
  x = x[tuple(slice(None) if a in src else 0 for a in range(x.ndim))]
  x = np.transpose(x, [sorted(src).index(a) for a in src])
  x = x.reshape(x.shape + (1,) * (len(shape) - len(src)))
  return np.broadcast_to(np.moveaxis(x, range(len(src)), dst), shape)


def _conv(ctx: Context, cand: Candidate, node: Node, ins) -> Labels | None:
  if ins[1] is not None:
    raise Reject("the units' values are used as a convolution kernel", node)
  view = ctx.scaled_view(node.ins[1])
  if view is None:
    raise Reject("a convolution without parameters across the units", node)
  dn, idx = node.params["dimension_numbers"], view[1]
  if _varying(ins[0]) - {dn.lhs_spec[1]}:
    raise Reject("the unit index varies over positions, not channels", node)
  if node.params["feature_group_count"] * node.params["batch_group_count"] > 1:
    raise Reject("a grouped or depthwise convolution reads the units", node)
  k_lab = _place(ins[0], [dn.lhs_spec[1]], [dn.rhs_spec[1]], idx.shape)
  conv = np.prod([idx.shape[d] for d in dn.rhs_spec[2:]]) > 1
  return _consume(ctx, cand, node, view, k_lab, [dn.rhs_spec[0]], conv)


def _consume(
    ctx: Context, cand: Candidate, node: Node, view, k_lab, free, conv=False
) -> None:
  """Records the leaf ``view`` reads (its entries labelled ``k_lab``, output
  dims ``free``) as an output slice of the units."""
  path, idx = view
  if path in cand.paths():
    raise Reject(f"'{path}' both produces and reads the units", node)
  ctx.check_single_use(path, node)
  labels = leaf_labels(ctx, path, idx, k_lab, "output slice", node)
  axes = _leaf_axes(ctx, path, idx, free)
  cand.outputs.append(Found(path, labels, axes, bool(conv)))
  cand.consumer_outs.append(node.outs[0])
  return None


def _leaf_axes(ctx: Context, path: str, idx, dims) -> tuple[int, ...]:
  """The leaf axes whose coordinate varies along the view's ``dims``."""
  coords = np.unravel_index(idx, ctx.graph.leaf_shapes[path])
  return tuple(a for a, c in enumerate(coords) if _varying(c) & set(dims))


def _output_bias(ctx: Context, v: int) -> tuple[str | None, int]:
  """The bias added right after a consumer's output ``v`` (through views),
  and the variable after it (``v`` if there is no such bias)."""
  graph, start = ctx.graph, v
  while len(graph.uses.get(v, [])) == 1:
    node = graph.nodes[graph.uses[v][0]]
    if is_view(node) and len(node.outs) == 1:
      v = node.outs[0]
      continue
    if lookup(node.prim).homogeneity is H.SUM and len(node.ins) == 2:
      other = node.ins[1] if node.ins[0] == v else node.ins[0]
      view = ctx.views.get(other)
      if view is not None and ctx.param_uses.get(view[0], 0) == 1:
        return view[0], node.outs[0]
    break
  return None, start
