"""Index tracking: layout primitives evaluated on NumPy integer arrays.

Discovery follows *where* entries go, not what they compute. A parameter leaf
is replaced by ``arange(size)`` (each entry its own index) and an activation
by its array of unit labels (``-1`` where no unit lives); the layout
primitives (reshape, transpose, broadcast, slice, concatenate, pad, ...) are
applied to those integer arrays, which tells, for any variable, which leaf
entry or which unit each of its entries is.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pathprox_jax.discovery.graph import Graph, Lit

#: Primitives that only move, copy or drop entries.
LAYOUT = frozenset({
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "convert_element_type", "copy", "copy_p", "slice", "rev", "pad",
    "concatenate", "dynamic_slice", "reduce_precision", "optimization_barrier",
})


def apply_layout(prim: str, params: dict, args: Sequence[np.ndarray],
                 fill: int = -1) -> np.ndarray:
  """``prim`` applied to integer arrays (``fill`` where padding creates entries)."""
  x = args[0]
  if prim in ("convert_element_type", "copy", "copy_p", "reduce_precision",
              "optimization_barrier"):
    return x
  if prim == "reshape":
    return np.reshape(x, params["new_sizes"])
  if prim == "transpose":
    return np.transpose(x, params["permutation"])
  if prim == "broadcast_in_dim":
    shape, dims = params["shape"], params["broadcast_dimensions"]
    expanded = np.reshape(x, [x.shape[dims.index(a)] if a in dims else 1
                              for a in range(len(shape))])
    return np.broadcast_to(expanded, shape)
  if prim == "squeeze":
    return np.squeeze(x, axis=tuple(params["dimensions"]))
  if prim == "expand_dims":
    return np.expand_dims(x, tuple(params["dimensions"]))
  if prim == "slice":
    strides = params.get("strides") or (1,) * x.ndim
    return x[tuple(slice(s, e, st) for s, e, st in
                   zip(params["start_indices"], params["limit_indices"], strides))]
  if prim == "rev":
    return np.flip(x, axis=tuple(params["dimensions"]))
  if prim == "pad":
    config = params["padding_config"]
    if any(interior for _, _, interior in config):
      raise KeyError("pad with interior padding")
    out = np.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi, _ in config],
                 constant_values=fill)
    return out[tuple(slice(-lo if lo < 0 else None, hi if hi < 0 else None)
                     for lo, hi, _ in config)]
  if prim == "concatenate":
    return np.concatenate(args, axis=params["dimension"])
  if prim == "dynamic_slice":
    starts = [int(np.asarray(a)) for a in args[1:]]
    return x[tuple(slice(s, s + n) for s, n in zip(starts, params["slice_sizes"]))]
  raise KeyError(prim)


def literal_starts(graph: Graph, node) -> bool:
  """Whether a ``dynamic_slice`` has constant start indices."""
  return all(isinstance(a, Lit) for a in node.ins[1:])


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
      if node.prim not in LAYOUT or node.prim == "concatenate":
        continue
      if node.prim == "dynamic_slice" and not literal_starts(graph, node):
        continue
      src = node.ins[0]
      if isinstance(src, Lit) or src not in self.of:
        continue
      if node.prim == "pad":
        continue       # a padded view has entries that are no leaf entry
      path, idx = self.of[src]
      self.of[node.outs[0]] = (path, apply_layout(node.prim, node.params,
                                                  [idx] + _lits(node.ins[1:])))

  def get(self, atom) -> tuple[str, np.ndarray] | None:
    if isinstance(atom, Lit):
      return None
    return self.of.get(atom)


def _lits(atoms) -> list[Any]:
  return [a.value if isinstance(a, Lit) else None for a in atoms]


class Constants:
  """Values of variables computed from literals by layout ops alone
  (e.g. ``broadcast_in_dim 0.0``): enough to recognise zeros."""

  def __init__(self, graph: Graph):
    self.of: dict[int, np.ndarray] = {}
    for node in graph.nodes:
      if node.prim not in LAYOUT:
        continue
      vals = [a.value if isinstance(a, Lit) else self.of.get(a) for a in node.ins]
      if any(v is None for v in vals[:1]) or (
          node.prim == "concatenate" and any(v is None for v in vals)):
        continue
      try:
        self.of[node.outs[0]] = apply_layout(node.prim, node.params, vals, 0)
      except (KeyError, ValueError, TypeError):
        continue

  def is_zero(self, atom) -> bool:
    v = atom.value if isinstance(atom, Lit) else self.of.get(atom)
    return v is not None and not np.any(np.asarray(v))
