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

import dataclasses
from typing import Any

import numpy as np

from pathprox_jax.discovery.graph import Graph, Lit, Node
from pathprox_jax.discovery.labels import (LAYOUT, Constants, ParamViews,
                                           apply_layout, literal_starts)

Labels = np.ndarray

#: Why a primitive is not positively homogeneous, for the report.
_NON_HOMOGENEOUS = {
    "tanh": "tanh (a tanh activation, or GELU's tanh approximation)",
    "logistic": "sigmoid (a sigmoid, SiLU/swish or gated activation)",
    "erf": "erf (GELU)",
    "exp": "exp (softmax, ELU or another exponential activation)",
    "log": "log", "log1p": "log (softplus?)", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "integer_pow": "a power of the unit's value (GELU's x^3, or a square)",
    "pow": "a power of the unit's value", "sin": "sin", "cos": "cos",
    "square": "a square of the unit's value (normalisation statistics)",
    "erf_inv": "erf_inv", "sign": "sign", "floor": "floor", "round": "round",
}
_UNARY_SAME = frozenset({"neg", "abs"})
_COMPARE = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
_ELEMENTWISE = _COMPARE | _UNARY_SAME | frozenset(_NON_HOMOGENEOUS) | frozenset(
    {"add", "sub", "add_any", "mul", "div", "max", "min", "select_n"})


class Reject(Exception):
  """A candidate is not a homogeneous unit group: ``reason`` says why."""

  def __init__(self, reason: str, node: Node | None = None):
    where = ""
    if node is not None:
      where = f" at `{node.prim}`" + (f" in {'/'.join(node.where)}"
                                       if node.where else "")
    super().__init__(reason + where)
    self.reason = reason + where


@dataclasses.dataclass
class Found:
  """A leaf slice found for a group: ``labels`` has the leaf's shape."""
  path: str
  labels: np.ndarray
  free_axes: tuple[int, ...] = ()        # output slices: leaf axes of the outputs
  conv: bool = False
  bias: str | None = None


@dataclasses.dataclass
class Candidate:
  node: int                               # index of the producing node
  num_units: int
  inputs: list[Found]
  biases: list[Found] = dataclasses.field(default_factory=list)
  outputs: list[Found] = dataclasses.field(default_factory=list)
  data_inputs: list[Any] = dataclasses.field(default_factory=list)
  consumer_outs: list[int] = dataclasses.field(default_factory=list)
  producer_nodes: list[int] = dataclasses.field(default_factory=list)
  rectified: bool = False      # a ReLU-like nonlinearity between the maps
  scale: bool = False          # starts at a per-channel scale (a norm's)

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
        v: frozenset({p}) for v, p in graph.params.items()}
    for n in graph.nodes:
      d = frozenset().union(*(self.deps.get(a, frozenset()) for a in n.ins
                              if not isinstance(a, Lit)))
      for o in n.outs:
        self.deps[o] = d
    self.param_uses: dict[str, int] = {}
    for n in graph.nodes:
      if n.prim in LAYOUT:
        continue
      for p in {self.views.get(a)[0] for a in n.ins
                if self.views.get(a) is not None}:
        self.param_uses[p] = self.param_uses.get(p, 0) + 1

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
    v = self.views.get(atom)
    if v is not None or isinstance(atom, Lit):
      return v
    k = self.producer_of.get(atom)
    if k is None:
      return None
    node = self.graph.nodes[k]
    if node.prim == "mul" and len(node.ins) == 2:
      for a, b in (node.ins, node.ins[::-1]):
        va = self.scaled_view(a)
        if va is not None and va[0] not in self._deps(b):
          return va[0], np.broadcast_to(va[1], self.graph.shapes[atom])
    if node.prim in LAYOUT and node.prim not in ("concatenate", "pad"):
      inner = self.scaled_view(node.ins[0])
      if inner is not None and (node.prim != "dynamic_slice"
                                or literal_starts(self.graph, node)):
        return inner[0], apply_layout(node.prim, node.params,
                                      [inner[1]] + [None] * (len(node.ins) - 1))
    return None

  def check_single_use(self, path: str, node: Node) -> None:
    uses = self.param_uses.get(path, 0)
    if uses > 1:
      raise Reject(f"'{path}' is used by {uses} operations (weight sharing)",
                   node)

  def _deps(self, atom) -> frozenset[str]:
    return frozenset() if isinstance(atom, Lit) else self.deps.get(atom, frozenset())


def _shape(graph: Graph, atom) -> tuple[int, ...]:
  return np.shape(atom.value) if isinstance(atom, Lit) else graph.shapes[atom]


def leaf_labels(ctx: Context, path: str, idx: np.ndarray, labels: Labels,
                what: str, node: Node) -> np.ndarray:
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
    raise Reject(f"only part of '{path}' ({what}) belongs to the units "
                 "(e.g. a concatenation with other features before it)", node)
  return out.reshape(shape)


# ------------------------------------------------------------------ producers
def producer(ctx: Context, k: int):
  """``(param path, leaf labels, output labels, data operand, n)`` if node ``k``
  is a linear map in one parameter whose output channels are units."""
  node = ctx.graph.nodes[k]
  shapes = ctx.graph.shapes
  if node.prim == "dot_general":
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    for side in (0, 1):
      p_atom, x_atom = node.ins[side], node.ins[1 - side]
      view = ctx.scaled_view(p_atom)
      if view is None or ctx.scaled_view(x_atom) is not None:
        continue
      path, idx = view
      if path in ctx._deps(x_atom):
        continue
      contract, batch = (rc, rb) if side else (lc, lb)
      keep = [d for d in range(idx.ndim) if d not in contract]
      sizes = [idx.shape[d] for d in keep]
      n = int(np.prod(sizes))
      if n <= 1:
        continue
      coords = np.indices(idx.shape)
      p_lab = np.ravel_multi_index([coords[d] for d in keep], sizes)
      # Output dims: batch, lhs free, rhs free.
      other = _shape(ctx.graph, x_atom)
      other_contract, other_batch = (lc, lb) if side else (rc, rb)
      n_other_free = len(other) - len(other_contract) - len(other_batch)
      free = [d for d in keep if d not in batch]
      out_shape = shapes[node.outs[0]]
      oc = np.indices(out_shape)
      free_start = len(batch) + (0 if side == 0 else n_other_free)
      where = {b: oc[i] for i, b in enumerate(batch)}
      where.update({d: oc[free_start + i] for i, d in enumerate(free)})
      out_lab = np.ravel_multi_index([where[d] for d in keep], sizes)
      labels = leaf_labels(ctx, path, idx, p_lab, "input slice", node)
      return path, labels, out_lab, x_atom, n
    return None
  if node.prim == "conv_general_dilated":
    x_atom, p_atom = node.ins
    view = ctx.scaled_view(p_atom)
    if view is None or view[0] in ctx._deps(x_atom):
      return None
    if node.params["feature_group_count"] != 1 or node.params["batch_group_count"] != 1:
      raise Reject("a grouped or depthwise convolution mixes units differently "
                   "from a dense one", node)
    dn = node.params["dimension_numbers"]
    path, idx = view
    n = idx.shape[dn.rhs_spec[0]]
    p_lab = np.indices(idx.shape)[dn.rhs_spec[0]]
    out_lab = np.indices(shapes[node.outs[0]])[dn.out_spec[1]]
    return (path, leaf_labels(ctx, path, idx, p_lab, "input slice", node),
            out_lab, x_atom, n)
  if node.prim == "mul" and len(node.ins) == 2:
    for p_atom, x_atom in (node.ins, node.ins[::-1]):
      view = ctx.scaled_view(p_atom)
      if view is None or ctx.scaled_view(x_atom) is not None:
        continue
      path, idx = view
      size = int(np.prod(ctx.graph.leaf_shapes[path]))
      out_shape = shapes[node.outs[0]]
      if size <= 1 or path in ctx._deps(x_atom) or \
          _shape(ctx.graph, x_atom) != out_shape:
        continue
      labels = np.arange(size).reshape(ctx.graph.leaf_shapes[path])
      return path, labels, np.broadcast_to(idx, out_shape), x_atom, size
  return None


def _producer_through_layout(ctx: Context, atom):
  """Labels of ``atom`` if it is (a layout view of) a producer's output."""
  chain = []
  while not isinstance(atom, Lit) and atom in ctx.producer_of:
    k = ctx.producer_of[atom]
    node = ctx.graph.nodes[k]
    try:
      found = producer(ctx, k)
    except Reject:
      found = None
    if found is not None:
      labels = found[2]
      for n in reversed(chain):
        labels = apply_layout(n.prim, n.params, [labels], -1)
      return k, found, labels
    if node.prim not in LAYOUT or node.prim in ("concatenate", "pad"):
      return None
    chain.append(node)
    atom = node.ins[0]
  return None


# ------------------------------------------------------------ propagation
def analyse(ctx: Context, k: int) -> Candidate:
  """Follows candidate node ``k`` through the graph; raises :class:`Reject`."""
  found = producer(ctx, k)
  if found is None:
    raise Reject("not a linear map in one parameter")
  path, labels, out_lab, x_atom, n = found
  graph = ctx.graph
  ctx.check_single_use(path, graph.nodes[k])
  cand = Candidate(k, n, [Found(path, labels)], data_inputs=[x_atom],
                   producer_nodes=[k], scale=graph.nodes[k].prim == "mul")
  lab: dict[int, Labels] = {graph.nodes[k].outs[0]: out_lab}
  invariant: set[int] = set()     # computed from the units, but scale-free
  own = {path}

  def labels_of(atom):
    return None if isinstance(atom, Lit) else lab.get(atom)

  for j in range(k + 1, len(graph.nodes)):
    node = graph.nodes[j]
    ins = [labels_of(a) for a in node.ins]
    if all(x is None for x in ins):
      continue
    for a in node.ins:
      if not isinstance(a, Lit) and labels_of(a) is None and \
          a not in invariant and ctx._deps(a) & own and \
          ctx.scaled_view(a) is None:
        raise Reject("the unit's parameters are used a second time (weight "
                     "sharing)", node)
    if node.prim == "split":
      for o, piece in zip(node.outs, _split(ins[0], node)):
        if np.any(piece >= 0):
          lab[o] = piece
      continue
    out = _rule(ctx, cand, node, ins, own)
    if out is not None:
      lab[node.outs[0]] = out
    else:
      invariant.update(node.outs)
  for o in graph.outputs:
    if labels_of(o) is not None:
      raise Reject("its outputs are outputs of fn: no linear layer in the "
                   "parameters reads them")
  if not cand.outputs:
    raise Reject("no linear map in the parameters reads the units")
  if cand.scale and not cand.rectified:
    raise Reject("a per-channel scale (a norm's) read directly by a linear "
                 "map: that rescales the map's input, there is no activation "
                 "in between")
  for f in cand.outputs:
    if f.bias is None:
      f.bias = _output_bias(ctx, cand, f)
  return cand


def _rule(ctx: Context, cand: Candidate, node: Node, ins: list, own: set):
  """Labels of ``node``'s output, ``None`` if it no longer depends on the
  units' scale (a consumer or a comparison), or raises :class:`Reject`."""
  prim, graph = node.prim, ctx.graph
  if prim in _ELEMENTWISE:
    # Elementwise ops broadcast size-1 dimensions implicitly.
    out_shape = graph.shapes[node.outs[0]]
    ins = [None if x is None else np.broadcast_to(x, out_shape) for x in ins]
  labelled = [x for x in ins if x is not None]
  if prim in LAYOUT:
    if prim == "dynamic_slice" and not literal_starts(graph, node):
      raise Reject("a data-dependent slice of the units", node)
    args = [x if x is not None else np.full(_shape(graph, a), -1)
            for x, a in zip(ins, node.ins)]
    if prim != "concatenate":
      args = [args[0]] + [a.value if isinstance(a, Lit) else None
                          for a in node.ins[1:]]
    return apply_layout(prim, node.params, args, -1)
  if prim in _UNARY_SAME:
    return ins[0]
  if prim in _NON_HOMOGENEOUS:
    raise Reject(f"{_NON_HOMOGENEOUS[prim]} is not positively homogeneous",
                 node)
  if prim in ("add", "sub", "add_any"):
    if len(labelled) == 2:
      return _same(ins[0], ins[1], node)
    s_idx = 0 if ins[0] is not None else 1
    other = node.ins[1 - s_idx]
    if ctx.consts.is_zero(other):
      return ins[s_idx]
    view = ctx.views.get(other)
    if view is not None and view[0] not in own:
      ctx.check_single_use(view[0], node)
      own.add(view[0])
      cand.biases.append(Found(view[0], leaf_labels(
          ctx, view[0], view[1], ins[s_idx], "input bias", node)))
      return ins[s_idx]
    absorbed = _producer_through_layout(ctx, other)
    if absorbed is not None and absorbed[1][0] not in own and \
        np.array_equal(absorbed[2], ins[s_idx]):
      kk, (p, leaf_lab, _, x_atom, _n), _ = absorbed
      ctx.check_single_use(p, node)
      own.add(p)
      cand.inputs.append(Found(p, leaf_lab))
      cand.data_inputs.append(x_atom)
      cand.producer_nodes.append(kk)
      return ins[s_idx]
    raise Reject("adds a term that does not scale with the units (a residual "
                 "or skip connection, or a constant shift such as a norm's "
                 "running mean)", node)
  if prim in ("mul", "div"):
    if len(labelled) == 2:
      raise Reject("a product of two values of the units (a gate, attention "
                   "scores or normalisation statistics)", node)
    if prim == "div" and ins[1] is not None:
      raise Reject("divides by a value of the units", node)
    s_idx = 0 if ins[0] is not None else 1
    other = node.ins[1 - s_idx]
    if ctx.scaled_view(other) is not None:
      raise Reject(f"multiplies the units by the parameter "
                   f"'{ctx.scaled_view(other)[0]}' (e.g. a norm's scale after "
                   "the linear map: that scale would be the units' input "
                   "weight)", node)
    return ins[s_idx]
  if prim in ("max", "min"):
    if len(labelled) == 2:
      cand.rectified = True
      return _same(ins[0], ins[1], node)
    s_idx = 0 if ins[0] is not None else 1
    if ctx.consts.is_zero(node.ins[1 - s_idx]):
      cand.rectified = True
      return ins[s_idx]
    raise Reject(f"{prim} with a nonzero constant (e.g. ReLU6 or clipping) is "
                 "not positively homogeneous", node)
  if prim in _COMPARE:
    if len(labelled) == 2:
      _same(ins[0], ins[1], node)
      return None
    if ctx.consts.is_zero(node.ins[1] if ins[0] is not None else node.ins[0]):
      return None
    raise Reject("compares the units with a nonzero constant (not scale "
                 "invariant)", node)
  if prim == "select_n":
    if ins[0] is not None:
      raise Reject("selects with a predicate that scales", node)
    cases = [(x, a) for x, a in zip(ins[1:], node.ins[1:])]
    cand.rectified = True
    result = None
    for x, a in cases:
      if x is None:
        if not ctx.consts.is_zero(a):
          raise Reject("selects between the units and a nonzero constant",
                       node)
        continue
      result = x if result is None else _same(result, x, node)
    return result
  if prim in ("reduce_sum", "reduce_max", "reduce_min"):
    return _reduce(ins[0], tuple(node.params["axes"]), node)
  if prim in ("reduce_window_sum", "reduce_window_max", "reduce_window_min",
              "reduce_window"):
    return _pool(graph, ins[0], node)
  if prim in ("argmax", "argmin"):
    return None
  if prim == "dot_general":
    return _dot(ctx, cand, node, ins, own)
  if prim == "conv_general_dilated":
    return _conv(ctx, cand, node, ins, own)
  raise Reject(f"`{prim}` is not an operation the units can pass through", node)


def _split(x: Labels, node: Node) -> list[Labels]:
  """The pieces of a ``split`` (one per output)."""
  bounds = np.cumsum(node.params["sizes"])[:-1]
  return np.split(x, bounds, axis=node.params["axis"])


def _same(a: Labels, b: Labels, node: Node) -> Labels:
  if a.shape != b.shape or not np.array_equal(a, b):
    raise Reject("combines values of different units (mixes units)", node)
  return a


def _reduce(x: Labels, axes: tuple[int, ...], node: Node) -> Labels:
  first = x[tuple(slice(0, 1) if a in axes else slice(None)
                  for a in range(x.ndim))]
  if not np.all(x == first):
    raise Reject("a reduction over the unit axis (mixes units)", node)
  return np.squeeze(first, axis=axes)


def _pool(graph: Graph, x: Labels, node: Node) -> Labels:
  p = node.params
  out_shape = graph.shapes[node.outs[0]]
  for axis in range(x.ndim):
    first = np.take(x, [0], axis=axis)
    if np.all(x == first):
      continue
    if p["window_dimensions"][axis] != 1 or p["window_strides"][axis] != 1 \
        or tuple(p["padding"][axis]) != (0, 0):
      raise Reject("a pooling window over the unit axis (mixes units)", node)
  index = tuple(slice(None) if out_shape[a] == x.shape[a] else slice(0, 1)
                for a in range(x.ndim))
  return np.broadcast_to(x[index], out_shape)


def _dot(ctx: Context, cand: Candidate, node: Node, ins, own) -> Labels | None:
  (lc, rc), (lb, rb) = node.params["dimension_numbers"]
  if ins[0] is not None and ins[1] is not None:
    raise Reject("a product of two values of the units (e.g. attention "
                 "scores computed from them)", node)
  side = 0 if ins[0] is not None else 1
  s, s_contract, s_batch = (ins[0], lc, lb) if side == 0 else (ins[1], rc, rb)
  k_atom = node.ins[1 - side]
  k_contract, k_batch = (rc, rb) if side == 0 else (lc, lb)
  view = ctx.scaled_view(k_atom)
  varying = [a for a in range(s.ndim) if not np.all(s == np.take(s, [0], a))]
  if view is not None:                         # a consumer
    path, idx = view
    if path in own:
      raise Reject(f"'{path}' both produces and reads the units", node)
    ctx.check_single_use(path, node)
    if set(varying) - set(s_contract) or s_batch and set(varying) & set(s_batch):
      raise Reject(f"'{path}' reads the units without summing over them (the "
                   "unit axis is a batch axis of the product)", node)
    # Labels on the contracted dims (constant over the other dims), placed
    # on the kernel's contracted dims (paired positionally).
    reduced = s[tuple(slice(None) if a in s_contract else 0
                      for a in range(s.ndim))]
    order = sorted(s_contract)
    reduced = np.transpose(reduced, [order.index(a) for a in s_contract])
    m = len(k_contract)
    k_lab = np.moveaxis(reduced.reshape(reduced.shape + (1,) * (idx.ndim - m)),
                        list(range(m)), list(k_contract))
    k_lab = np.broadcast_to(k_lab, idx.shape)
    labels = leaf_labels(ctx, path, idx, k_lab, "output slice", node)
    free = [d for d in range(idx.ndim) if d not in k_contract]
    own.add(path)
    cand.outputs.append(Found(path, labels, _leaf_axes(ctx, path, idx, free)))
    cand.consumer_outs.append(node.outs[0])
    return None
  if set(varying) & set(s_contract):
    raise Reject("a parameter-free product across the unit axis (e.g. the "
                 "query-key scores of attention) mixes units", node)
  # A product with values that do not depend on the units (e.g. attention
  # weights): each output entry scales with one unit.
  kept = [a for a in range(s.ndim) if a not in s_contract]
  reduced = s[tuple(slice(None) if a in kept else 0 for a in range(s.ndim))]
  batch_first = [kept.index(a) for a in s_batch] + \
      [kept.index(a) for a in kept if a not in s_batch]
  reduced = np.transpose(reduced, batch_first)
  out_shape = ctx.graph.shapes[node.outs[0]]
  n_batch, n_s_free = len(s_batch), len(kept) - len(s_batch)
  n_k_free = len(out_shape) - n_batch - n_s_free
  if side == 0:
    shape = reduced.shape + (1,) * n_k_free
    return np.broadcast_to(reduced.reshape(shape), out_shape)
  moved = reduced.reshape(reduced.shape[:n_batch] + (1,) * n_k_free
                          + reduced.shape[n_batch:])
  return np.broadcast_to(moved, out_shape)


def _conv(ctx: Context, cand: Candidate, node: Node, ins, own) -> Labels | None:
  if ins[1] is not None:
    raise Reject("the units' values are used as a convolution kernel", node)
  view = ctx.scaled_view(node.ins[1])
  if view is None:
    raise Reject("a convolution without parameters across the units", node)
  path, idx = view
  dn = node.params["dimension_numbers"]
  s = ins[0]
  feature = dn.lhs_spec[1]
  for a in range(s.ndim):
    if a != feature and not np.all(s == np.take(s, [0], a)):
      raise Reject("the unit index varies over positions, not channels", node)
  if node.params["feature_group_count"] != 1 or node.params["batch_group_count"] != 1:
    raise Reject("a grouped or depthwise convolution reads the units", node)
  if path in own:
    raise Reject(f"'{path}' both produces and reads the units", node)
  ctx.check_single_use(path, node)
  per_channel = s[tuple(slice(None) if a == feature else 0 for a in range(s.ndim))]
  in_dim, out_dim = dn.rhs_spec[1], dn.rhs_spec[0]
  shape = [idx.shape[d] if d == in_dim else 1 for d in range(idx.ndim)]
  k_lab = np.broadcast_to(per_channel.reshape(shape), idx.shape)
  labels = leaf_labels(ctx, path, idx, k_lab, "output slice", node)
  spatial = [idx.shape[d] for d in dn.rhs_spec[2:]]
  own.add(path)
  cand.outputs.append(Found(path, labels, _leaf_axes(ctx, path, idx, [out_dim]),
                            conv=int(np.prod(spatial)) > 1))
  cand.consumer_outs.append(node.outs[0])
  return None


def _leaf_axes(ctx: Context, path: str, idx: np.ndarray, dims) -> tuple[int, ...]:
  """The leaf axes whose coordinate varies along the view's ``dims``."""
  shape = ctx.graph.leaf_shapes[path]
  coords = np.unravel_index(idx, shape)
  out = set()
  for d in dims:
    for a in range(len(shape)):
      if not np.all(coords[a] == np.take(coords[a], [0], d)):
        out.add(a)
  return tuple(sorted(out))


def _output_bias(ctx: Context, cand: Candidate, f: Found) -> str | None:
  """The bias added right after a consumer (through layout ops only)."""
  graph = ctx.graph
  k = cand.outputs.index(f)
  v = cand.consumer_outs[k]
  while True:
    uses = graph.uses.get(v, [])
    if len(uses) != 1:
      return None
    node = graph.nodes[uses[0]]
    if node.prim in LAYOUT and node.prim not in ("concatenate", "pad"):
      v = node.outs[0]
      continue
    if node.prim == "add":
      other = node.ins[1] if node.ins[0] == v else node.ins[0]
      view = ctx.views.get(other)
      if view is not None and ctx.param_uses.get(view[0], 0) == 1:
        return view[0]
    return None
