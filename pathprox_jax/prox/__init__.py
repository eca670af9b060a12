"""Pure proximal operators, uniform signature ``prox(x, reg, scaling=1.0)``."""

from pathprox_jax.prox.group import group_norms, prox_group_lasso
from pathprox_jax.prox.path import UnitWeights, prox_path_norm, unit_norms
from pathprox_jax.prox.sphere import project_unit_sphere

__all__ = ["group_norms", "prox_group_lasso", "UnitWeights", "prox_path_norm",
           "unit_norms", "project_unit_sphere"]
