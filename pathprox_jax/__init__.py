"""pathprox-jax: proximal optimizers for weight-decay-regularised networks.

Architecture: ``units`` (which slices of which leaves form each homogeneous
unit) -> ``discovery`` (the units of any JAX function, from its trace) ->
``prox`` (pure operators) -> ``balance`` (function-preserving rescalings) ->
``transforms`` (optax) -> ``objectives`` / ``compact`` -> ``models`` (Flax
NNX) -> ``data``.

The top level holds what a training script writes; building blocks live in
the sub-namespaces ``ppx.units``, ``ppx.prox``, ``ppx.balance``,
``ppx.transforms``, ``ppx.models`` and ``ppx.data``.
"""

from pathprox_jax import balance, prox, transforms, units
from pathprox_jax.balance import (
    balance_layers,
    balance_neurons,
    normalize_units,
)
from pathprox_jax.checkpoint import (
    Checkpoint,
    latest_step,
    restore_checkpoint,
    save_checkpoint,
)
from pathprox_jax.compact import (
    OutputChange,
    compact,
    compaction_error,
    kept_units,
    rebuild,
    select_units,
)
from pathprox_jax.discovery.discover import Finding, discover, discover_module
from pathprox_jax.discovery.verify import verify_units
from pathprox_jax.guards import SkipNonFiniteState, skip_nonfinite
from pathprox_jax.objectives import (
    ActiveUnits,
    active_units,
    jacobian_spectral_norms,
    path_norm_penalty,
    path_norms,
    unit_path_norms,
    weight_decay_penalty,
)
from pathprox_jax.transforms import (
    PathProxState,
    ProxGenSGDState,
    adaptive_pathprox,
    balance_layers_update,
    map_units,
    pathprox,
    pathprox_gradient,
    pathprox_params,
    pathprox_update,
    proxgen_adam,
    proxgen_sgd,
    ungrouped_weight_decay,
)
from pathprox_jax.units import Slice, UnitGroup, UnitSpec

__version__ = "0.3.0"

_MODELS = ("MLP", "FactorizedMLP", "VGG19", "ResNet", "Transformer")


def __getattr__(name: str):
  """The Flax models (and ``ppx.models`` / ``ppx.data``), imported on first
  use, so the core imports without flax, tfds or mlxtend."""
  import importlib

  if name in _MODELS:
    return getattr(importlib.import_module("pathprox_jax.models"), name)
  if name in ("models", "data"):
    return importlib.import_module(f"pathprox_jax.{name}")
  raise AttributeError(f"module 'pathprox_jax' has no attribute {name!r}")


__all__ = [
    # structure and discovery
    "discover",
    "discover_module",
    "UnitSpec",
    "UnitGroup",
    "Slice",
    "Finding",
    "verify_units",
    # transforms
    "pathprox",
    "pathprox_gradient",
    "pathprox_update",
    "pathprox_params",
    "balance_layers_update",
    "ungrouped_weight_decay",
    "adaptive_pathprox",
    "map_units",
    "proxgen_adam",
    "proxgen_sgd",
    "PathProxState",
    "ProxGenSGDState",
    # function-preserving rescalings
    "balance_layers",
    "balance_neurons",
    "normalize_units",
    # objectives and diagnostics
    "weight_decay_penalty",
    "path_norm_penalty",
    "path_norms",
    "unit_path_norms",
    "active_units",
    "ActiveUnits",
    "jacobian_spectral_norms",
    # compaction, checkpoints, guards
    "compact",
    "kept_units",
    "select_units",
    "compaction_error",
    "OutputChange",
    "rebuild",
    "save_checkpoint",
    "restore_checkpoint",
    "latest_step",
    "Checkpoint",
    "skip_nonfinite",
    "SkipNonFiniteState",
    # models
    *_MODELS,
    # namespaces
    "units",
    "prox",
    "balance",
    "transforms",
]
