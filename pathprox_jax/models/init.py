"""Initialisers: PyTorch's ``nn.Linear``/``nn.Conv2d`` default and Kaiming normal."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

INITS = ("pytorch", "flax", "kaiming")


def uniform_fan_in(fan_in: int):
  """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for any shape.

  This is PyTorch's default for ``nn.Linear``/``nn.Conv2d`` kernels
  (``kaiming_uniform_(a=sqrt(5))`` reduces to this bound) and biases.
  """
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def layer_inits(init: str, fan_in: int):
  """``(kernel_init, bias_init)`` for a layer with the given fan-in.

  Args:
    init: ``"pytorch"`` (PyTorch default, the paper's MLPs), ``"flax"``
      (LeCun normal kernels, zero biases) or ``"kaiming"`` (He normal with
      fan-out mode as in torchvision's VGG, zero biases).
    fan_in: inputs per output unit (``kh * kw * in`` for a Conv).
  """
  if init == "pytorch":
    return uniform_fan_in(fan_in), uniform_fan_in(fan_in)
  if init == "flax":
    return nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
  if init == "kaiming":
    return (
        nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
        nnx.initializers.zeros_init(),
    )
  raise ValueError(f"Unknown init {init!r}; expected one of {INITS}.")
