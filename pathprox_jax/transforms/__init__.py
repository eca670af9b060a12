"""Optax gradient transformations built on the pure operators in ``prox``."""

from pathprox_jax.transforms.adaptive_pathprox import adaptive_pathprox
from pathprox_jax.transforms.baselines import (lq_subgradient,
                                               prox_sgd_two_stage, proxquant,
                                               subgradient_adam)
from pathprox_jax.transforms.map_units import map_units
from pathprox_jax.transforms.pathprox import (PathProxState, layerwise_balance,
                                              path_prox, path_prox_params,
                                              path_prox_update, pathprox,
                                              pathprox_gradient,
                                              pathprox_groups,
                                              ungrouped_weight_decay)
from pathprox_jax.transforms.proxgen import (ProxGenSGDState, UnitGroupProx,
                                             group_prox_from_units,
                                             proxgen_adam, proxgen_sgd)

__all__ = [
    "map_units", "PathProxState", "layerwise_balance", "path_prox", "path_prox_params",
    "path_prox_update", "pathprox", "pathprox_gradient", "pathprox_groups",
    "ungrouped_weight_decay",
    "adaptive_pathprox", "proxgen_adam", "proxgen_sgd", "ProxGenSGDState",
    "UnitGroupProx", "group_prox_from_units", "lq_subgradient",
    "prox_sgd_two_stage", "proxquant", "subgradient_adam",
]
