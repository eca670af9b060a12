"""Optax gradient transformations built on the pure operators in ``prox``."""

from pathprox_jax.transforms.pathprox import (PathProxState, layerwise_balance,
                                              path_prox, path_prox_params,
                                              pathprox)

__all__ = ["PathProxState", "layerwise_balance", "path_prox", "path_prox_params",
           "pathprox"]
