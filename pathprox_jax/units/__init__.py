"""Structure: which slices of which parameter leaves form each homogeneous unit.

``paths`` (one string per leaf, any framework) -> ``slices`` (the unit-group
model) -> ``layouts`` (Flax / Haiku / Equinox layer pairs) -> ``spec``
(:class:`UnitSpec`: validation, roles, masks, split/merge) ->
``weights`` (:class:`UnitWeights`, the split representation).
"""

from pathprox_jax.units.layouts import LAYOUTS
from pathprox_jax.units.paths import (
    KERNEL_NAMES,
    is_kernel,
    kernel_mask,
    path_str,
)
from pathprox_jax.units.slices import Slice, UnitGroup
from pathprox_jax.units.spec import (
    INPUT_BIAS,
    INPUT_KERNEL,
    LABELS,
    OTHER,
    OUTPUT_BIAS,
    OUTPUT_KERNEL,
    UNGROUPED_KERNEL,
    UnitMasks,
    UnitSpec,
)
from pathprox_jax.units.weights import UnitWeights, scale_units, where_units

__all__ = [
    "UnitSpec",
    "UnitGroup",
    "Slice",
    "UnitWeights",
    "UnitMasks",
    "LABELS",
    "LAYOUTS",
    "KERNEL_NAMES",
    "INPUT_KERNEL",
    "INPUT_BIAS",
    "OUTPUT_KERNEL",
    "OUTPUT_BIAS",
    "UNGROUPED_KERNEL",
    "OTHER",
    "is_kernel",
    "kernel_mask",
    "path_str",
    "scale_units",
    "where_units",
]
