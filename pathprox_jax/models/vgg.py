"""VGG19 without BatchNorm and with one linear classifier (the paper's CIFAR10 model)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pathprox_jax.models.init import layer_inits
from pathprox_jax.units import UnitSpec

# Channels per conv, "M" = 2x2 max pool (the kuangliu/pytorch-cifar layout).
VGG19_CONFIG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


class VGG19(nnx.Module):
  """VGG19 for 32x32 images: 16 convs (3x3, ReLU), 5 max pools, global
  average pool, one Dense classifier (paper Appendix D.1.2).

  Units are the channels between conv pairs (1,2), (3,4), ..., (15,16), each
  pair inside one block (paper Appendix A.3; pooling between blocks is
  homogeneous); the classifier stays ungrouped and gets ordinary weight decay.
  Kaiming-normal (fan-out) conv init with zero biases by default.

  Args:
    num_classes: classifier outputs.
    width_multiplier: scales every conv's channels (for CPU smoke runs).
    channels: explicit per-conv channels (16 ints, e.g. from
      :func:`~pathprox_jax.compact`), overriding ``width_multiplier``.
    in_channels: image channels.
    init: ``"kaiming"`` (default), ``"pytorch"`` or ``"flax"``.
    rngs: ``nnx.Rngs``.

  Examples:
    >>> from flax import nnx
    >>> m = VGG19(width_multiplier=1 / 16, rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((2, 32, 32, 3))).shape
    (2, 10)
    >>> len(m.unit_spec().groups)
    8
  """

  def __init__(
      self,
      num_classes: int = 10,
      width_multiplier: float = 1.0,
      *,
      channels: Sequence[int] | None = None,
      in_channels: int = 3,
      init: str = "kaiming",
      rngs: nnx.Rngs,
  ):
    convs = [c for c in VGG19_CONFIG if c != "M"]
    if channels is None:
      if width_multiplier <= 0:
        raise ValueError(
            f"width_multiplier must be > 0; got {width_multiplier}."
        )
      channels = [max(1, int(round(c * width_multiplier))) for c in convs]
    if len(channels) != len(convs):
      raise ValueError(
          f"VGG19 has {len(convs)} convs; got {len(channels)} channels."
      )
    layers, c_in = [], in_channels
    for c_out in channels:
      k_init, b_init = layer_inits(init, 9 * c_in)
      layers.append(
          nnx.Conv(
              c_in,
              c_out,
              (3, 3),
              padding="SAME",
              kernel_init=k_init,
              bias_init=b_init,
              rngs=rngs,
          )
      )
      c_in = c_out
    self.convs = nnx.List(layers)
    k_init, b_init = layer_inits("pytorch", c_in)
    self.classifier = nnx.Linear(
        c_in, num_classes, kernel_init=k_init, bias_init=b_init, rngs=rngs
    )

  @property
  def channels(self) -> tuple[int, ...]:
    return tuple(c.out_features for c in self.convs)

  def __call__(self, x: jax.Array) -> jax.Array:
    i = 0
    for item in VGG19_CONFIG:
      if item == "M":
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nnx.relu(self.convs[i](x))
        i += 1
    x = jnp.mean(x, axis=(1, 2))
    return self.classifier(x)

  def unit_pairs(self) -> list[tuple[str, str]]:
    return [(f"convs/{i}", f"convs/{i + 1}") for i in range(0, 16, 2)]

  def unit_spec(self) -> UnitSpec:
    """The :class:`~pathprox_jax.UnitSpec` of this model's current params."""
    return UnitSpec.from_pairs(nnx.state(self, nnx.Param), self.unit_pairs())
