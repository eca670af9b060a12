"""What discovery knows about each JAX primitive: one :class:`Primitive` each.

An entry says how the primitive moves entries, hence unit indices, from its
operands to its outputs (:class:`Moves`, followed by ``labels``); what it
does to per-unit positive scales of the units' values (:class:`Homogeneity`,
followed by ``rules``); and what it does to one positive scale (:class:`Scale`,
followed by ``chains`` for balancing). Those modules only look entries up; a
primitive without one stops every unit that reaches it. Supporting another
activation or layout op is one entry in :data:`PRIMITIVES`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable

import numpy as np


class Moves(enum.Enum):
  """How entries (unit indices) go from operands to outputs."""

  ELEMENTWISE = "output entry i reads entry i of each (broadcast) operand"
  LAYOUT = "each output entry is a copy of one operand entry (`layout`)"
  REDUCE = "a reduction over params['axes']"
  WINDOW = "a reduction over sliding windows (pooling)"
  DOT = "a contraction (dot_general)"
  CONV = "a convolution"
  OPAQUE = "unknown"


class Homogeneity(enum.Enum):
  """What it does to the units' values when unit ``i``'s scale by ``a_i``.

  "The others" are its other data operands; ``a_i > 0``.
  """

  KEPT = "kept: each output entry scales with its unit"
  SUM = "kept if the others are the same units, zero, a bias or a linear map"
  PRODUCT = "kept if the other is independent; a linear map if a parameter"
  QUOTIENT = "kept if only the numerator depends on the units"
  RECTIFIER = "kept, ReLU-like, if the others are the same units or zero"
  INVARIANT = "removed (scale free) if the others are the same units or zero"
  BROKEN = "not kept: `reason` names the function"
  UNKNOWN = "unknown: the units cannot pass"


class Scale(enum.Enum):
  """What it does to one scale ``c > 0`` of some of its operands (balancing)."""

  PASSES = "outputs scaled by c if the other data operands are zero"
  PRODUCT = "outputs scaled by c if one operand is, the other no parameter"
  NUMERATOR = "as PRODUCT, for the numerator only"
  REMOVES = "outputs unchanged if the other data operands are zero"
  BLOCKS = "neither: balancing cannot pass"


@dataclasses.dataclass(frozen=True)
class Primitive:
  """Discovery's knowledge of one JAX primitive.

  Attributes:
    name: its name in a jaxpr.
    moves, homogeneity, scale: see :class:`Moves`, :class:`Homogeneity`,
      :class:`Scale`.
    reason: for ``Homogeneity.BROKEN``, the function it computes, for the
      findings ("... is not positively homogeneous").
    layout: for ``Moves.LAYOUT``, ``layout(params, *operands)`` on NumPy
      arrays: an array, or a list of them for several outputs.
    data: ``(start, stop)`` of the operands whose entries reach the outputs;
      the others are indices (``dynamic_slice``) or a predicate (``select_n``).
  """

  name: str
  moves: Moves
  homogeneity: Homogeneity
  scale: Scale
  reason: str = ""
  layout: Callable | None = None
  data: tuple[int, int | None] = (0, None)

  def data_operands(self, n: int) -> range:
    """Positions of the data operands among ``n`` operands."""
    return range(n)[slice(*self.data)]


def _pad(p, x, value):
  """``lax.pad``: interior padding, then edges (negative ones crop)."""
  lo, hi, interior = np.array(p["padding_config"]).reshape(-1, 3).T
  n = np.array(x.shape, int)
  inner = np.full(n + np.maximum(n - 1, 0) * interior, value, x.dtype)
  inner[tuple(slice(None, None, k + 1) for k in interior)] = x
  edges = np.stack([np.maximum(lo, 0), np.maximum(hi, 0)], 1)
  out = np.pad(inner, edges, constant_values=value)
  crop = zip(np.maximum(-lo, 0), out.shape - np.maximum(-hi, 0))
  return out[tuple(slice(a, b) for a, b in crop)]


def _broadcast(p, x):
  shape, dims = p["shape"], p["broadcast_dimensions"]  # dims increase
  new = [a for a in range(len(shape)) if a not in dims]
  return np.broadcast_to(np.expand_dims(x, new), shape)


def _slice(p, x):
  strides = p.get("strides") or (1,) * x.ndim
  return x[tuple(map(slice, p["start_indices"], p["limit_indices"], strides))]


def _dynamic_slice(p, x, *starts):
  sizes = p["slice_sizes"]  # starts are clamped, as in lax.dynamic_slice
  starts = np.clip(np.array(starts, int), 0, np.subtract(x.shape, sizes))
  return x[tuple(slice(s, s + k) for s, k in zip(starts, sizes))]


def _split(p, x):
  return np.split(x, np.cumsum(p["sizes"])[:-1], p["axis"])


_M, _H, _S = Moves, Homogeneity, Scale


def _each(names, moves, homogeneity, scale, **kw):
  return [Primitive(n, moves, homogeneity, scale, **kw) for n in names.split()]


def _layout(names, fn, **kw):
  return _each(names, _M.LAYOUT, _H.KEPT, _S.PASSES, layout=fn, **kw)


def _broken(names, reason=None, moves=Moves.ELEMENTWISE):
  return [
      Primitive(n, moves, _H.BROKEN, _S.BLOCKS, reason=reason or n)
      for n in names.split()
  ]


_ENTRIES = [
    *_layout(
        "convert_element_type copy copy_p reduce_precision", lambda p, x: x
    ),
    *_layout("optimization_barrier", lambda p, *xs: list(xs)),
    *_layout("reshape", lambda p, x: np.reshape(x, p["new_sizes"])),
    *_layout("transpose", lambda p, x: np.transpose(x, p["permutation"])),
    *_layout("broadcast_in_dim", _broadcast),
    *_layout("squeeze", lambda p, x: np.squeeze(x, tuple(p["dimensions"]))),
    *_layout("rev", lambda p, x: np.flip(x, tuple(p["dimensions"]))),
    *_layout("slice", _slice),
    *_layout("dynamic_slice", _dynamic_slice, data=(0, 1)),
    *_layout("split", _split),
    *_layout("concatenate", lambda p, *xs: np.concatenate(xs, p["dimension"])),
    *_layout("pad", _pad),
    *_each("neg abs", _M.ELEMENTWISE, _H.KEPT, _S.PASSES),
    *_each("add sub add_any", _M.ELEMENTWISE, _H.SUM, _S.PASSES),
    *_each("max min", _M.ELEMENTWISE, _H.RECTIFIER, _S.PASSES),
    *_each("select_n", _M.ELEMENTWISE, _H.RECTIFIER, _S.PASSES, data=(1, None)),
    *_each("mul", _M.ELEMENTWISE, _H.PRODUCT, _S.PRODUCT),
    *_each("div", _M.ELEMENTWISE, _H.QUOTIENT, _S.NUMERATOR),
    *_each("gt ge lt le eq ne", _M.ELEMENTWISE, _H.INVARIANT, _S.REMOVES),
    *_broken("tanh", "tanh (a tanh activation, or GELU's tanh approximation)"),
    *_broken("logistic", "sigmoid (a sigmoid, SiLU/swish or gated activation)"),
    *_broken("erf", "erf (GELU)"),
    *_broken("exp", "exp (softmax, ELU or another exponential activation)"),
    *_broken("log1p", "log (softplus?)"),
    *_broken("integer_pow", "a power (GELU's x^3, or a square)"),
    *_broken("pow", "a power of the units' values"),
    *_broken("square", "a square (normalisation statistics)"),
    *_broken("log sqrt rsqrt sin cos erf_inv sign floor round"),
    *_each("reduce_sum reduce_max reduce_min", _M.REDUCE, _H.KEPT, _S.PASSES),
    *_each("argmax argmin", _M.REDUCE, _H.INVARIANT, _S.REMOVES),
    *_each(
        "reduce_window_sum reduce_window_max", _M.WINDOW, _H.KEPT, _S.PASSES
    ),
    *_each("reduce_window_min", _M.WINDOW, _H.KEPT, _S.PASSES),
    *_broken("reduce_window", "pooling with a custom reduction", _M.WINDOW),
    *_each("dot_general", _M.DOT, _H.PRODUCT, _S.PRODUCT),
    *_each("conv_general_dilated", _M.CONV, _H.PRODUCT, _S.PRODUCT),
]
#: Every primitive discovery follows, by name.
PRIMITIVES: dict[str, Primitive] = {p.name: p for p in _ENTRIES}

#: The entry of a primitive that has none in :data:`PRIMITIVES`.
UNKNOWN = Primitive("", Moves.OPAQUE, Homogeneity.UNKNOWN, Scale.BLOCKS)


def lookup(name: str) -> Primitive:
  """The entry of primitive ``name`` (:data:`UNKNOWN` if it has none)."""
  return PRIMITIVES.get(name, UNKNOWN)
