"""pathprox-jax: proximal optimizers for weight-decay-regularised networks.

Architecture: ``units`` (which slices of which leaves form each homogeneous
unit) -> ``prox`` (pure operators) -> ``balance`` (function-preserving
rescalings) -> ``transforms`` (optax) -> ``objectives`` / ``compact`` ->
``models`` (Flax NNX) -> ``data``.
"""

from pathprox_jax.balance import (balance_groups, balance_layers,
                                  balance_neurons, layer_scales,
                                  normalize_units)
from pathprox_jax.checkpoint import (Checkpoint, latest_step,
                                     restore_checkpoint, save_checkpoint)
from pathprox_jax.compact import (OutputChange, compact, compaction_error,
                                  kept_units, rebuild, select_units)
from pathprox_jax.discovery.verify import verify_units
from pathprox_jax.guards import SkipNonFiniteState, skip_nonfinite
from pathprox_jax.models import (MLP, VGG19, FactorizedMLP, ResNet,
                                 Transformer)
from pathprox_jax.objectives import (ActiveUnits, active_units,
                                     jacobian_spectral_norms, path_norm_penalty,
                                     path_norms, unit_path_norms,
                                     weight_decay_penalty)
from pathprox_jax.prox import (get_lq_prox, group_lasso_slices, group_norms,
                               group_path_norms, project_unit_sphere,
                               prox_binary, prox_group_lasso, prox_l0, prox_l1,
                               prox_l_half, prox_l_two_thirds, prox_path_norm,
                               prox_quant_original, scalar_jump,
                               scalar_threshold, shrink_factors, unit_norms)
from pathprox_jax.transforms import (PathProxState, ProxGenSGDState,
                                     UnitGroupProx, adaptive_pathprox,
                                     group_prox_from_units, layerwise_balance,
                                     lq_subgradient, map_units, path_prox,
                                     path_prox_params, path_prox_update,
                                     pathprox, pathprox_gradient,
                                     pathprox_groups, prox_sgd_two_stage,
                                     proxgen_adam, proxgen_sgd, proxquant,
                                     subgradient_adam, ungrouped_weight_decay)
from pathprox_jax.units import (LABELS, LAYOUTS, Slice, UnitGroup, UnitMasks,
                                UnitSpec, UnitWeights, is_kernel, kernel_mask,
                                path_str, scale_units, where_units)

__version__ = "0.2.1"

__all__ = [
    # units
    "UnitSpec", "UnitGroup", "Slice", "UnitWeights", "UnitMasks", "LABELS",
    "LAYOUTS", "is_kernel", "kernel_mask", "path_str", "scale_units",
    "where_units", "verify_units",
    # prox
    "group_norms", "unit_norms", "group_path_norms", "shrink_factors",
    "group_lasso_slices", "prox_group_lasso", "project_unit_sphere",
    "prox_path_norm", "prox_l1", "prox_l0", "prox_l_half", "prox_l_two_thirds",
    "prox_binary", "prox_quant_original", "scalar_threshold", "scalar_jump",
    "get_lq_prox",
    # balance
    "layer_scales", "balance_groups", "balance_layers", "balance_neurons",
    "normalize_units",
    # transforms
    "pathprox", "pathprox_gradient", "ungrouped_weight_decay",
    "path_prox_update", "path_prox_params",
    "pathprox_groups", "layerwise_balance", "map_units", "PathProxState",
    "adaptive_pathprox", "proxgen_adam", "proxgen_sgd", "ProxGenSGDState",
    "group_prox_from_units", "UnitGroupProx", "subgradient_adam",
    "lq_subgradient", "prox_sgd_two_stage", "proxquant", "path_prox",
    # objectives, compaction, reliability
    "weight_decay_penalty", "path_norms", "unit_path_norms",
    "path_norm_penalty", "active_units", "ActiveUnits",
    "jacobian_spectral_norms", "compact", "kept_units", "select_units",
    "compaction_error", "OutputChange", "rebuild", "skip_nonfinite",
    "SkipNonFiniteState", "save_checkpoint", "restore_checkpoint",
    "latest_step", "Checkpoint",
    # models
    "MLP", "FactorizedMLP", "VGG19", "ResNet", "Transformer",
]
