"""ResNet with basic blocks and BatchNorm (the ResNet-18 layout), with its units."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pathprox_jax.units import Slice, UnitGroup, UnitSpec

RESNET18_STAGES = (2, 2, 2, 2)
RESNET18_CHANNELS = (64, 128, 256, 512)


class BasicBlock(nnx.Module):
  """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convs."""

  def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
    conv = lambda a, b, k, s: nnx.Conv(
        a,
        b,
        (k, k),
        strides=(s, s),
        padding="SAME" if k == 3 else "VALID",
        use_bias=False,
        rngs=rngs,
    )
    self.conv1 = conv(c_in, c_out, 3, stride)
    self.bn1 = nnx.BatchNorm(c_out, rngs=rngs)
    self.conv2 = conv(c_out, c_out, 3, 1)
    self.bn2 = nnx.BatchNorm(c_out, rngs=rngs)
    self.projection = stride != 1 or c_in != c_out
    if self.projection:
      self.short_conv = conv(c_in, c_out, 1, stride)
      self.short_bn = nnx.BatchNorm(c_out, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    skip = self.short_bn(self.short_conv(x)) if self.projection else x
    return nnx.relu(h + skip)


class ResNet(nnx.Module):
  """ResNet with basic blocks (He et al. 2016), CIFAR-style 3x3 stem.

  ``ResNet()`` is ResNet-18 (stages of 2 blocks, 64-128-256-512 channels,
  stride 2 at the start of stages 2-4); ``width_multiplier`` scales every
  channel count (for CPU smoke runs). Units: in every block, the channels
  between ``bn1`` and ``conv2``. With BatchNorm right before the ReLU the
  network is positively homogeneous in each channel's ``(scale, bias)`` of
  ``bn1`` (the kernel of ``conv1`` is scale-invariant behind the norm), so
  those are the units' input weights and ``conv2``'s input channels their
  output weights (``docs/algorithms.md``, "Unit discovery"). Every other
  channel reaches a residual add and is not a homogeneous unit; balancing
  never passes a scale between blocks (a norm and an add sit between them).

  Args:
    num_classes: classifier outputs.
    width_multiplier: scales every channel count.
    stages: blocks per stage.
    in_channels: image channels.
    rngs: ``nnx.Rngs``.

  Examples:
    >>> from flax import nnx
    >>> resnet = ResNet(width_multiplier=1 / 16, in_channels=1, rngs=nnx.Rngs(0))
    >>> resnet.unit_spec().num_units, resnet(jnp.zeros((1, 28, 28, 1))).shape
    ((4, 4, 8, 8, 16, 16, 32, 32), (1, 10))
  """

  def __init__(
      self,
      num_classes: int = 10,
      width_multiplier: float = 1.0,
      *,
      stages: Sequence[int] = RESNET18_STAGES,
      in_channels: int = 3,
      rngs: nnx.Rngs,
  ):
    if width_multiplier <= 0:
      raise ValueError(f"width_multiplier must be > 0; got {width_multiplier}.")
    widths = [
        max(1, int(round(c * width_multiplier)))
        for c in RESNET18_CHANNELS[: len(stages)]
    ]
    self.stem = nnx.Conv(
        in_channels,
        widths[0],
        (3, 3),
        padding="SAME",
        use_bias=False,
        rngs=rngs,
    )
    self.stem_bn = nnx.BatchNorm(widths[0], rngs=rngs)
    blocks, c_in = [], widths[0]
    for s, (n, c) in enumerate(zip(stages, widths)):
      for b in range(n):
        blocks.append(
            BasicBlock(c_in, c, 2 if s > 0 and b == 0 else 1, rngs=rngs)
        )
        c_in = c
    self.blocks = nnx.List(blocks)
    self.classifier = nnx.Linear(c_in, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem(x)))
    for block in self.blocks:
      x = block(x)
    return self.classifier(jnp.mean(x, axis=(1, 2)))

  def unit_groups(self) -> list[UnitGroup]:
    return [
        UnitGroup(
            inputs=[Slice(f"blocks/{i}/bn1/scale", 0)],
            biases=[Slice(f"blocks/{i}/bn1/bias", 0)],
            outputs=[Slice(f"blocks/{i}/conv2/kernel", 2)],
        )
        for i in range(len(self.blocks))
    ]

  def unit_spec(self) -> UnitSpec:
    """The :class:`~pathprox_jax.UnitSpec` of this model's current params."""
    groups = self.unit_groups()
    return UnitSpec.from_groups(
        nnx.state(self, nnx.Param), groups, links=(False,) * (len(groups) - 1)
    )

  def compaction_spec(self) -> UnitSpec:
    """The units over the full ``nnx.state(model)``, with the leaves that carry
    the same channels as passengers (``conv1``'s output channels, ``bn1``'s
    running mean and variance), for :func:`~pathprox_jax.compact`::

        small_state, _ = ppx.compact(nnx.state(model), model.compaction_spec())
        small = ppx.rebuild(model, small_state)
    """
    groups = [
        UnitGroup(
            g.inputs,
            g.outputs,
            g.biases,
            passengers=(
                Slice(f"blocks/{i}/conv1/kernel", 3),
                Slice(f"blocks/{i}/bn1/mean", 0),
                Slice(f"blocks/{i}/bn1/var", 0),
            ),
        )
        for i, g in enumerate(self.unit_groups())
    ]
    return UnitSpec.from_groups(
        nnx.state(self), groups, links=(False,) * (len(groups) - 1)
    )
