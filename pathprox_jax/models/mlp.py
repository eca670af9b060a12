"""Multi-layer perceptrons with their homogeneous-unit pairing."""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from pathprox_jax.models.init import layer_inits
from pathprox_jax.units import UnitSpec


def _linear(n_in: int, n_out: int, init: str, rngs: nnx.Rngs) -> nnx.Linear:
  k_init, b_init = layer_inits(init, n_in)
  return nnx.Linear(
      n_in, n_out, kernel_init=k_init, bias_init=b_init, rngs=rngs
  )


class _Sequential(nnx.Module):
  """Linear layers ``layers/0 ... layers/L-1``; ReLU after the layers in ``relu_after``."""

  def __init__(
      self,
      sizes: Sequence[int],
      relu_after: set[int],
      init: str,
      rngs: nnx.Rngs,
  ):
    self.layers = nnx.List(
        [_linear(a, b, init, rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    )
    self.relu_after = tuple(sorted(relu_after))

  @property
  def widths(self) -> tuple[int, ...]:
    """Output widths of all layers but the last (hidden sizes)."""
    return tuple(l.out_features for l in self.layers[:-1])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i in self.relu_after:
        x = nnx.relu(x)
    return x

  def unit_spec(self) -> UnitSpec:
    """The :class:`~pathprox_jax.UnitSpec` of this model's current params."""
    return UnitSpec.from_pairs(nnx.state(self, nnx.Param), self.unit_pairs())


def _sizes(
    depth_layers: int, width, in_features: int, num_classes: int
) -> list[int]:
  hidden = (
      [width] * (depth_layers - 1) if isinstance(width, int) else list(width)
  )
  if len(hidden) != depth_layers - 1:
    raise ValueError(
        f"Expected {depth_layers - 1} hidden widths, got {hidden}."
    )
  return [in_features, *hidden, num_classes]


class MLP(_Sequential):
  """MLP-d-n: ``depth`` Dense layers, ReLU between them.

  Units pair layers (1, 2), (3, 4), ... (paper Appendix A.1, Table 4); with an
  odd ``depth`` the last layer stays ungrouped (it gets ordinary weight decay
  in :func:`~pathprox_jax.pathprox`). Parameter paths are ``layers/0`` ...

  Args:
    depth: number of Dense layers (>= 2).
    width: hidden width, or a sequence of ``depth - 1`` hidden widths (e.g.
      after :func:`~pathprox_jax.compact`).
    in_features: input size (inputs are flattened).
    num_classes: output size.
    init: ``"pytorch"`` (default, as in the paper), ``"flax"`` or ``"kaiming"``.
    rngs: ``nnx.Rngs``.

  Examples:
    >>> from flax import nnx
    >>> m = MLP(depth=3, width=32, rngs=nnx.Rngs(0))
    >>> m.unit_spec()
    UnitSpec[(layers/0 -> layers/1: 32 units)]
  """

  def __init__(
      self,
      depth: int,
      width,
      *,
      in_features: int = 784,
      num_classes: int = 10,
      init: str = "pytorch",
      rngs: nnx.Rngs,
  ):
    if depth < 2:
      raise ValueError(
          f"MLP needs depth >= 2 to have a unit pair; got {depth}."
      )
    sizes = _sizes(depth, width, in_features, num_classes)
    super().__init__(sizes, set(range(depth - 1)), init, rngs)

  def unit_pairs(self):
    n = len(self.layers)
    return [(f"layers/{i}", f"layers/{i + 1}") for i in range(0, n - 1, 2)]


class FactorizedMLP(_Sequential):
  """MLP-d-n factorized: ``depth`` groups of two Dense layers (paper App. A.2).

  Group ``g`` is ``Dense(n) -> ReLU -> Dense(n)``; consecutive groups are
  joined with no activation, so the two maps around each group boundary form
  one factorized layer. Every hidden neuron at a ReLU is one unit, every
  layer belongs to exactly one group. MLP-3-400 factorized (Task 1) is
  ``FactorizedMLP(3, 400)``: 784-400-400-400-400-400-10 with ReLU after
  layers 1, 3 and 5.

  Args:
    depth: number of groups (>= 1).
    width: hidden width, or ``2 * depth - 1`` hidden widths.
    in_features, num_classes, init, rngs: as in :class:`MLP`.

  Examples:
    >>> from flax import nnx
    >>> m = FactorizedMLP(depth=2, width=8, in_features=4, num_classes=3,
    ...                   rngs=nnx.Rngs(0))
    >>> m.unit_spec().num_units
    (8, 8)
  """

  def __init__(
      self,
      depth: int,
      width,
      *,
      in_features: int = 784,
      num_classes: int = 10,
      init: str = "pytorch",
      rngs: nnx.Rngs,
  ):
    if depth < 1:
      raise ValueError(f"FactorizedMLP needs depth >= 1; got {depth}.")
    sizes = _sizes(2 * depth, width, in_features, num_classes)
    super().__init__(sizes, set(range(0, 2 * depth, 2)), init, rngs)

  def unit_pairs(self):
    return [
        (f"layers/{i}", f"layers/{i + 1}")
        for i in range(0, len(self.layers), 2)
    ]
