"""Optax gradient transformations built on the pure operators in ``prox``.

``pathprox`` (Algorithm 4.1 and its parts), ``adaptive_pathprox`` (the
PathProx step in Adam's metric), ``proxgen`` (proximal Adam and SGD with any
tree prox), ``map_units`` (any map of the grouped weights as an update) and
``baselines`` (the methods ProxGen is compared with).
"""

from pathprox_jax.transforms.adaptive_pathprox import (
    adaptive_pathprox,
    adaptive_prox_groups,
    scale_moments,
)
from pathprox_jax.transforms.baselines import (
    lq_subgradient,
    prox_sgd_two_stage,
    proxquant,
    subgradient_adam,
)
from pathprox_jax.transforms.map_units import map_units
from pathprox_jax.transforms.pathprox import (
    PathProxState,
    balance_layers_update,
    pathprox,
    pathprox_gradient,
    pathprox_groups,
    pathprox_params,
    pathprox_update,
    ungrouped_weight_decay,
)
from pathprox_jax.transforms.proxgen import (
    ProxGenSGDState,
    adam_init,
    adam_moments,
    proxgen_adam,
    proxgen_sgd,
)

__all__ = [
    "pathprox",
    "pathprox_gradient",
    "pathprox_update",
    "pathprox_params",
    "pathprox_groups",
    "balance_layers_update",
    "ungrouped_weight_decay",
    "PathProxState",
    "map_units",
    "adaptive_pathprox",
    "adaptive_prox_groups",
    "scale_moments",
    "proxgen_adam",
    "proxgen_sgd",
    "ProxGenSGDState",
    "adam_init",
    "adam_moments",
    "lq_subgradient",
    "prox_sgd_two_stage",
    "proxquant",
    "subgradient_adam",
]
