"""Pure proximal operators, uniform signature ``prox(x, reg, scaling=1.0)``."""

from pathprox_jax.prox.elementwise import (get_lq_prox, prox_binary, prox_l0,
                                           prox_l1, prox_l_half,
                                           prox_l_two_thirds,
                                           prox_quant_original, scalar_jump,
                                           scalar_threshold)
from pathprox_jax.prox.group import group_norms, prox_group_lasso
from pathprox_jax.prox.path import UnitWeights, prox_path_norm, unit_norms
from pathprox_jax.prox.sphere import project_unit_sphere

__all__ = [
    "group_norms", "prox_group_lasso", "UnitWeights", "prox_path_norm",
    "unit_norms", "project_unit_sphere", "prox_l1", "prox_l0", "prox_l_half",
    "prox_l_two_thirds", "prox_binary", "prox_quant_original",
    "scalar_threshold", "scalar_jump", "get_lq_prox",
]
