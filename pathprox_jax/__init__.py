"""pathprox-jax: proximal optimizers for weight-decay-regularised networks.

Architecture: ``units`` (which weights form each homogeneous unit) ->
``prox`` (pure operators) -> ``balance`` (function-preserving rescalings) ->
``transforms`` (optax) -> ``objectives`` -> ``models`` (Flax NNX) -> ``data``.
"""

from pathprox_jax.checkpoint import (Checkpoint, latest_step,
                                     restore_checkpoint, save_checkpoint)
from pathprox_jax.compact import (OutputChange, compact, compaction_error,
                                  kept_units, rebuild, select_units)
from pathprox_jax.guards import SkipNonFiniteState, skip_nonfinite
from pathprox_jax.balance import (balance_layers, balance_neurons,
                                  layer_scales, normalize_units)
from pathprox_jax.models import MLP, VGG19, FactorizedMLP
from pathprox_jax.objectives import (ActiveUnits, active_units,
                                     jacobian_spectral_norms, path_norm_penalty,
                                     path_norms, unit_path_norms,
                                     weight_decay_penalty)
from pathprox_jax.prox import (UnitWeights, group_norms, project_unit_sphere,
                               prox_binary, prox_group_lasso, prox_l0, prox_l1,
                               prox_l_half, prox_l_two_thirds, prox_path_norm,
                               prox_quant_original, unit_norms)
from pathprox_jax.transforms import (PathProxState, adaptive_pathprox,
                                     group_prox_from_units, layerwise_balance,
                                     path_prox, path_prox_params, pathprox,
                                     prox_sgd_two_stage, proxgen_adam,
                                     proxgen_sgd, proxquant, subgradient_adam)
from pathprox_jax.units import LABELS, UnitMasks, UnitSpec

__version__ = "0.1.0"

__all__ = [
    "UnitSpec", "UnitMasks", "LABELS",
    "group_norms", "prox_group_lasso", "project_unit_sphere", "prox_path_norm",
    "unit_norms", "UnitWeights", "prox_l1", "prox_l0", "prox_l_half",
    "prox_l_two_thirds", "prox_binary", "prox_quant_original",
    "balance_layers", "balance_neurons", "layer_scales", "normalize_units",
    "path_prox", "path_prox_params", "layerwise_balance", "pathprox", "PathProxState",
    "weight_decay_penalty", "path_norms", "unit_path_norms",
    "path_norm_penalty", "active_units", "ActiveUnits",
    "jacobian_spectral_norms",
    "MLP", "FactorizedMLP", "VGG19",
    "proxgen_adam", "proxgen_sgd", "group_prox_from_units",
    "adaptive_pathprox", "subgradient_adam", "prox_sgd_two_stage", "proxquant",
    "compact", "kept_units", "select_units", "compaction_error", "OutputChange",
    "rebuild",
    "skip_nonfinite", "SkipNonFiniteState",
    "save_checkpoint", "restore_checkpoint", "latest_step", "Checkpoint",
]
