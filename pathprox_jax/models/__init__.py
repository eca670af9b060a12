"""Flax NNX models that know their homogeneous-unit pairing."""

from pathprox_jax.models.init import layer_inits, uniform_fan_in
from pathprox_jax.models.mlp import MLP, FactorizedMLP
from pathprox_jax.models.resnet import ResNet
from pathprox_jax.models.transformer import Transformer
from pathprox_jax.models.vgg import VGG19, VGG19_CONFIG

__all__ = [
    "MLP",
    "FactorizedMLP",
    "VGG19",
    "ResNet",
    "Transformer",
    "VGG19_CONFIG",
    "layer_inits",
    "uniform_fan_in",
]
