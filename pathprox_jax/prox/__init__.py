"""Pure proximal operators with the uniform signature ``prox(x, reg, scaling=1.0)``.

``group`` (group norms, unit norms, group lasso in the Euclidean or a diagonal
metric) -> ``sphere`` (projection of input weights) -> ``path`` (the PathProx
operator on one group's :class:`~pathprox_jax.UnitWeights`) and
``elementwise`` (ProxGen's l1, l0, l1/2, l2/3 and binary proxes).
"""

from pathprox_jax.prox.elementwise import (get_lq_prox, prox_binary, prox_l0,
                                           prox_l1, prox_l_half,
                                           prox_l_two_thirds,
                                           prox_quant_original, scalar_jump,
                                           scalar_threshold)
from pathprox_jax.prox.group import (group_lasso_slices, group_norms,
                                     group_path_norms,
                                     prox_group_lasso, shrink_factors,
                                     unit_norms)
from pathprox_jax.prox.path import prox_path_norm
from pathprox_jax.prox.sphere import project_unit_sphere

__all__ = [
    "group_norms", "unit_norms", "group_path_norms", "shrink_factors", "group_lasso_slices",
    "prox_group_lasso", "prox_path_norm", "project_unit_sphere", "prox_l1",
    "prox_l0", "prox_l_half", "prox_l_two_thirds", "prox_binary",
    "prox_quant_original", "scalar_threshold", "scalar_jump", "get_lq_prox",
]
