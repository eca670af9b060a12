"""Optax gradient transformations built on the pure operators in ``prox``."""

from pathprox_jax.transforms.adaptive_pathprox import adaptive_pathprox
from pathprox_jax.transforms.baselines import (lq_subgradient,
                                               prox_sgd_two_stage, proxquant,
                                               subgradient_adam)
from pathprox_jax.transforms.pathprox import (PathProxState, layerwise_balance,
                                              path_prox, path_prox_params,
                                              pathprox)
from pathprox_jax.transforms.proxgen import (ProxGenSGDState, UnitGroupProx,
                                             group_prox_from_units, kernel_mask,
                                             proxgen_adam, proxgen_sgd)

__all__ = [
    "PathProxState", "layerwise_balance", "path_prox", "path_prox_params",
    "pathprox", "adaptive_pathprox", "proxgen_adam", "proxgen_sgd",
    "ProxGenSGDState", "UnitGroupProx", "group_prox_from_units", "kernel_mask",
    "lq_subgradient", "prox_sgd_two_stage", "proxquant", "subgradient_adam",
]
