"""Index tracking: layout primitives evaluated on NumPy integer arrays.

Discovery follows *where* entries go, not what they compute. A parameter leaf
is replaced by ``arange(size)`` (each entry its own index) and an activation
by its array of unit labels (``-1`` where no unit lives); the layout
primitives (reshape, transpose, broadcast, slice, concatenate, pad, ...) are
applied to those integer arrays, which tells, for any variable, which leaf
entry or which unit each of its entries is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pathprox_jax.discovery.graph import Graph, Lit, Node
from pathprox_jax.discovery.primitives import Moves, lookup


def apply_layout(node: Node, args: Sequence) -> list[np.ndarray] | None:
  """The outputs of layout op ``node`` on ``args`` (one array per operand);
  ``None`` if an index operand (``dynamic_slice``'s starts) is ``None``."""
  prim = lookup(node.prim)
  data = prim.data_operands(len(args))
  if any(a is None for i, a in enumerate(args) if i not in data):
    return None
  out = prim.layout(node.params, *args)
  return out if isinstance(out, list) else [out]


def is_view(node: Node) -> bool:
  """Whether every output entry of ``node`` is one entry of its first operand,
  at a position known from the graph alone (constant indices)."""
  prim = lookup(node.prim)
  return (
      prim.moves is Moves.LAYOUT
      and bool(node.ins)
      and prim.data_operands(len(node.ins)) == range(1)
      and all(isinstance(a, Lit) for a in node.ins[1:])
  )


def view(node: Node, x: np.ndarray) -> list[np.ndarray] | None:
  """``node``'s outputs for first operand ``x`` if ``node`` is a view."""
  if not is_view(node):
    return None
  return apply_layout(node, [x] + [a.value for a in node.ins[1:]])


class ParamViews:
  """For every variable that is a pure layout view of one parameter leaf, the
  leaf it views and, per entry, the leaf entry's flat index."""

  def __init__(self, graph: Graph):
    self.graph = graph
    self.of: dict[int, tuple[str, np.ndarray]] = {}
    for vid, path in graph.params.items():
      shape = graph.leaf_shapes[path]
      self.of[vid] = (path, np.arange(int(np.prod(shape))).reshape(shape))
    for node in graph.nodes:
      src = self.get(node.ins[0]) if node.ins else None
      outs = view(node, src[1]) if src is not None else None
      for o, idx in zip(node.outs, outs or ()):
        self.of[o] = (src[0], idx)

  def get(self, atom) -> tuple[str, np.ndarray] | None:
    return None if isinstance(atom, Lit) else self.of.get(atom)


class Constants:
  """Values of variables computed from literals by layout ops alone
  (e.g. ``broadcast_in_dim 0.0``): enough to recognise zeros."""

  def __init__(self, graph: Graph):
    self.of: dict[int, np.ndarray] = {}
    for node in graph.nodes:
      if lookup(node.prim).moves is not Moves.LAYOUT:
        continue
      vals = [self.value(a) for a in node.ins]
      if any(v is None for v in vals):
        continue
      try:
        self.of.update(zip(node.outs, apply_layout(node, vals)))
      except (KeyError, ValueError, TypeError):
        continue

  def value(self, atom) -> np.ndarray | None:
    return atom.value if isinstance(atom, Lit) else self.of.get(atom)

  def is_zero(self, atom) -> bool:
    v = self.value(atom)
    return v is not None and not np.any(np.asarray(v))
