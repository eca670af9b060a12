"""Pure proximal operators with the signature ``prox(x, weight_decay, scaling=1.0)``.

``group`` (group norms, unit norms, group lasso in the Euclidean or a diagonal
metric) -> ``sphere`` (projection of input weights) -> ``path`` (the PathProx
operator on one group's :class:`~pathprox_jax.units.UnitWeights`),
``elementwise`` (ProxGen's l1, l0, l1/2, l2/3 and binary proxes) and ``tree``
(proxes over a whole params tree, the protocol ProxGen's transforms call).
"""

from pathprox_jax._numerics import MIN_NORM
from pathprox_jax.prox.elementwise import (
    get_lq_prox,
    prox_binary,
    prox_l0,
    prox_l1,
    prox_l_half,
    prox_l_two_thirds,
    scalar_jump,
    scalar_threshold,
)
from pathprox_jax.prox.group import (
    group_lasso_slices,
    group_norms,
    group_path_norms,
    prox_group_lasso,
    shrink_factors,
    unit_norms,
)
from pathprox_jax.prox.path import prox_path_norm
from pathprox_jax.prox.sphere import project_unit_sphere
from pathprox_jax.prox.tree import (
    ElementwiseProx,
    UnitGroupLasso,
    elementwise,
    mask_leaves,
    unit_group_lasso,
)

__all__ = [
    "MIN_NORM",
    "group_norms",
    "unit_norms",
    "group_path_norms",
    "shrink_factors",
    "group_lasso_slices",
    "prox_group_lasso",
    "prox_path_norm",
    "project_unit_sphere",
    "prox_l1",
    "prox_l0",
    "prox_l_half",
    "prox_l_two_thirds",
    "prox_binary",
    "scalar_threshold",
    "scalar_jump",
    "get_lq_prox",
    "elementwise",
    "ElementwiseProx",
    "unit_group_lasso",
    "UnitGroupLasso",
    "mask_leaves",
]
