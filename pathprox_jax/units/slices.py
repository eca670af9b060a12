"""The unit-group model: slices of parameter leaves that form homogeneous units.

A *group* is ``n`` hidden units. Unit ``i`` owns

* its **input weights** ``w_i``: entry ``i`` along the unit axis of every
  *input slice* (the kernels whose outputs are the unit's pre-activation; a
  pre-activation that sums two linear maps has two input slices), and entry
  ``i`` of every *input bias*, which scales with ``w_i``;
* its **output weights** ``v_i``: entry ``i`` along the unit axis of every
  *output slice* (the kernels that read the unit's activation; a hidden layer
  feeding two heads has two output slices).

``||w_i||^2`` sums over every input slice, ``||v_i||^2`` over every output
slice. A slice may view its leaf under another shape: a Dense layer after the
flatten of an ``(H, W, C)`` feature map has a ``(H*W*C, out)`` kernel in which
channel ``c`` owns rows ``c, C + c, 2C + c, ...``; viewed as
``(H*W, C, out)`` that is index ``c`` of axis 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Slice:
  """A unit-indexed view of one parameter leaf.

  Attributes:
    path: the leaf's path (``"fc1/kernel"``, ``"layers/0/weight"``).
    axis: the unit axis of the view (negative values count from the end).
    view: the shape the leaf is reshaped to before indexing units; ``None``
      means the leaf's own shape.
    bias: output slices only: the path of the bias of the layer this kernel
      belongs to. Layer-wise balancing scales it, and :func:`compact` folds
      the constant output of removed units into it.
    out_axes: output slices only: the view axes that this bias indexes
      (default: the last axis, or axis 0 when the unit axis is the last).
    conv: output slices only: whether the layer is a convolution (``None``:
      yes if the leaf has more than two axes, the safe guess). Only
      :func:`compact` uses it: a constant input channel of a
      ``SAME``-padded convolution does not give a constant output, so such
      constants are not folded into the bias. A Dense kernel after a
      flatten is not a convolution (``conv=False``).
    shape: the leaf's shape; filled in by validation
      (:meth:`UnitSpec.from_groups`).

  Examples:
    >>> Slice("fc1/kernel", -1)             # Flax Dense (in, n): units on the last axis
    Slice('fc1/kernel', axis=-1)
    >>> Slice("fc/kernel", 1, view=(49, 8, 10))   # Dense after a 7x7x8 flatten
    Slice('fc/kernel', axis=1, view=(49, 8, 10))
  """

  path: str
  axis: int
  view: Shape | None = None
  bias: str | None = None
  out_axes: tuple[int, ...] | None = None
  conv: bool | None = None
  shape: Shape | None = None

  def __repr__(self) -> str:
    extra = "".join(
        f", {f}={getattr(self, f)!r}"
        for f in ("view", "bias", "out_axes", "conv")
        if getattr(self, f) is not None
    )
    return f"Slice({self.path!r}, axis={self.axis}{extra})"

  @property
  def num_units(self) -> int:
    """Units along the unit axis (needs a validated slice)."""
    return self.view[self.axis]

  @property
  def other_axes(self) -> tuple[int, ...]:
    """View axes other than the unit axis."""
    return tuple(a for a in range(len(self.view)) if a != self.axis)

  @property
  def leaf_axis(self) -> int | None:
    """The leaf axis that holds the unit axis of the view (``None`` if the
    unit axis spans several leaf axes, e.g. a view merging two axes)."""
    post = math.prod(self.view[self.axis + 1 :])
    block = self.num_units * post
    for j in range(len(self.shape)):
      inner = math.prod(self.shape[j + 1 :])
      if (
          inner
          and post % inner == 0
          and block
          and (self.shape[j] * inner) % block == 0
      ):
        return j
    return None

  def resized(self, num_units: int) -> "Slice":
    """The same slice of a leaf cut (or grown) to ``num_units`` units.

    Raises:
      ValueError: if the unit axis does not lie inside one leaf axis, so no
        leaf shape holds exactly ``num_units`` units.
    """
    if num_units == self.num_units:
      return self
    j = self.leaf_axis
    if j is None:
      raise ValueError(
          f"'{self.path}': the unit axis {self.axis} of view {self.view} spans "
          f"several axes of the leaf shape {self.shape}; a subset of its units "
          "has no leaf shape. Cut whole leaf axes instead."
      )
    view, shape = list(self.view), list(self.shape)
    view[self.axis] = num_units
    shape[j] = shape[j] // self.num_units * num_units
    return dataclasses.replace(self, view=tuple(view), shape=tuple(shape))


def as_slice(item: Any, what: str, default_axis: int | None = None) -> Slice:
  """A :class:`Slice` from a ``Slice``, a ``(path, axis)`` pair or a path."""
  if isinstance(item, Slice):
    return item
  if isinstance(item, str):
    if default_axis is None:
      raise ValueError(
          f"{what} '{item}': give the unit axis, as "
          f"Slice('{item}', axis) or ('{item}', axis)."
      )
    return Slice(item, default_axis)
  if (
      isinstance(item, (tuple, list))
      and len(item) == 2
      and isinstance(item[0], str)
  ):
    return Slice(item[0], int(item[1]))
  raise TypeError(
      f"{what}: expected a Slice, a (path, axis) pair or a path; got {item!r}."
  )


@dataclasses.dataclass(frozen=True)
class UnitGroup:
  """``n`` homogeneous units: their input slices, input biases and output slices.

  Attributes:
    inputs: the slices whose entry ``i`` is part of ``w_i`` (projected onto
      the unit sphere by PathProx).
    outputs: the slices whose entry ``i`` is part of ``v_i`` (group
      soft-thresholded by PathProx).
    biases: the input biases; entry ``i`` scales with ``w_i``.
    passengers: leaves whose entry ``i`` exists only for unit ``i`` but is
      neither an input nor an output weight, e.g. the output channels of the
      convolution in front of a BatchNorm whose ``scale`` is the input slice,
      and that norm's running statistics. No operator touches them;
      :func:`~pathprox_jax.compact` cuts them with the units.

  Entries may be :class:`Slice` objects, ``(path, axis)`` pairs, or, for
  biases and passengers, plain paths (unit axis 0).

  Examples:
    >>> g = UnitGroup(inputs=[("fc1/kernel", -1)], biases=["fc1/bias"],
    ...               outputs=[Slice("head_a/kernel", 0, bias="head_a/bias"),
    ...                        Slice("head_b/kernel", 0)])
    >>> [s.path for s in g.outputs]
    ['head_a/kernel', 'head_b/kernel']
  """

  inputs: tuple[Slice, ...]
  outputs: tuple[Slice, ...]
  biases: tuple[Slice, ...] = ()
  passengers: tuple[Slice, ...] = ()

  def __post_init__(self):
    for name, default in (
        ("inputs", None),
        ("outputs", None),
        ("biases", 0),
        ("passengers", 0),
    ):
      items = getattr(self, name)
      if isinstance(items, (str, Slice)) or (
          isinstance(items, tuple)
          and len(items) == 2
          and isinstance(items[0], str)
          and isinstance(items[1], int)
      ):
        items = (items,)
      object.__setattr__(
          self,
          name,
          tuple(as_slice(x, f"UnitGroup {name}", default) for x in items),
      )

  @property
  def num_units(self) -> int:
    """Units in the group (needs a validated group)."""
    return self.inputs[0].num_units

  @property
  def output_biases(self) -> tuple[str, ...]:
    """Paths of the output layers' biases."""
    return tuple(s.bias for s in self.outputs if s.bias is not None)

  def slices(self) -> tuple[Slice, ...]:
    return self.inputs + self.biases + self.outputs + self.passengers

  def paths(self) -> tuple[str, ...]:
    """Every leaf the group touches (kernels, biases, output biases)."""
    return tuple(s.path for s in self.slices()) + self.output_biases

  def resized(self, num_units: int) -> "UnitGroup":
    """The group with every slice cut to ``num_units`` units."""
    return UnitGroup(*(
        tuple(s.resized(num_units) for s in part)
        for part in (self.inputs, self.outputs, self.biases, self.passengers)
    ))

  def describe(self) -> str:
    def layers(slices):
      return ", ".join(dict.fromkeys(s.path.rsplit("/", 1)[0] for s in slices))

    return f"{layers(self.inputs)} -> {layers(self.outputs)}"


# ---------------------------------------------------------------- validation
def _leaf(leaves, index, path: str, what: str):
  if path not in index:
    near = sorted(p for p in index if p.split("/")[0] == path.split("/")[0])
    hint = (
        f" Leaves under '{path.split('/')[0]}': {near}."
        if near
        else f" Top-level keys: {sorted({p.split('/')[0] for p in index})}."
    )
    raise ValueError(f"{what} '{path}' is not in the params.{hint}")
  leaf = leaves[index[path]]
  dtype = jnp.result_type(leaf)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{what} '{path}' has dtype {dtype}; PathProx needs real "
        "floating-point weights."
    )
  return tuple(np.shape(leaf))


def resolve_slice(s: Slice, leaves, index, what: str, output: bool) -> Slice:
  """Validates ``s`` against the params and fills in its shapes and axes."""
  shape = _leaf(leaves, index, s.path, what)
  view = shape if s.view is None else tuple(int(d) for d in s.view)
  if math.prod(view) != math.prod(shape):
    raise ValueError(
        f"{what} '{s.path}': view {view} has {math.prod(view)} "
        f"entries but the leaf has shape {shape}."
    )
  if not -len(view) <= s.axis < len(view):
    raise ValueError(
        f"{what} '{s.path}': unit axis {s.axis} is out of range "
        f"for shape {view}."
    )
  axis = s.axis % len(view)
  if not output:
    if s.bias is not None or s.out_axes is not None or s.conv is not None:
      raise ValueError(
          f"{what} '{s.path}': bias, out_axes and conv describe "
          "output slices only."
      )
    return dataclasses.replace(s, axis=axis, view=view, shape=shape)
  out_axes = s.out_axes
  if out_axes is None:
    out_axes = (0,) if axis == len(view) - 1 else (len(view) - 1,)
  out_axes = tuple(sorted({a % len(view) for a in out_axes}))
  if axis in out_axes or any(
      not -len(view) <= a < len(view) for a in s.out_axes or ()
  ):
    raise ValueError(
        f"{what} '{s.path}': out_axes {s.out_axes} must be axes of "
        f"{view} other than the unit axis {axis}."
    )
  if s.bias is not None:
    bshape = _leaf(leaves, index, s.bias, f"Bias of {what.lower()}")
    want = math.prod(view[a] for a in out_axes)
    if math.prod(bshape) != want:
      raise ValueError(
          f"Bias '{s.bias}' has shape {bshape}, but {what.lower()} '{s.path}' "
          f"(view {view}) has {want} outputs on out_axes {out_axes}."
      )
  conv = len(shape) > 2 if s.conv is None else bool(s.conv)
  return Slice(s.path, axis, view, s.bias, out_axes, conv, shape)


def resolve_group(group: UnitGroup, leaves, index, k: int) -> UnitGroup:
  """Validates one group: every slice, and the same unit count in all of them."""
  if not group.inputs or not group.outputs:
    raise ValueError(
        f"Group {k} needs at least one input and one output "
        f"slice; got {len(group.inputs)} and {len(group.outputs)}."
    )
  parts = [
      tuple(
          resolve_slice(
              s,
              leaves,
              index,
              f"Group {k}: {what} slice",
              output=(what == "output"),
          )
          for s in slices
      )
      for what, slices in (
          ("input", group.inputs),
          ("output", group.outputs),
          ("input bias", group.biases),
          ("passenger", group.passengers),
      )
  ]
  resolved = UnitGroup(*parts)
  counts = {
      f"'{s.path}' (view {s.view}, axis {s.axis})": s.num_units
      for s in resolved.slices()
  }
  if len(set(counts.values())) > 1:
    listing = "; ".join(f"{p}: {n}" for p, n in counts.items())
    raise ValueError(f"Unit-count mismatch in group {k}: {listing}.")
  return resolved


def check_disjoint(groups: Sequence[UnitGroup]) -> None:
  """Raises if a leaf belongs to two groups (or twice to one)."""
  owner: dict[str, int] = {}
  for k, g in enumerate(groups):
    for p in g.paths():
      if p in owner:
        where = "twice in group" if owner[p] == k else "in groups"
        ids = f"{k}" if owner[p] == k else f"{owner[p]} and {k}"
        raise ValueError(
            f"Leaf '{p}' is used {where} {ids}. Groups must be "
            "disjoint: every leaf belongs to at most one group."
        )
      owner[p] = k
