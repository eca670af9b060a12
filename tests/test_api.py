"""The public API: what the top level exports, documentation, import weight."""

import inspect
import subprocess
import sys

import pathprox_jax as ppx

NAMESPACES = ("units", "prox", "balance", "transforms")


def test_every_exported_name_resolves_and_has_a_docstring_with_an_example():
  missing = []
  for name in ppx.__all__:
    obj = getattr(ppx, name)
    if inspect.ismodule(obj):
      assert name in NAMESPACES, name
      continue
    if ">>>" not in (inspect.getdoc(obj) or ""):
      missing.append(name)
  assert not missing, f"no docstring example: {missing}"


def test_top_level_is_small_and_building_blocks_live_in_namespaces():
  assert len(ppx.__all__) <= 50
  for internal in (
      "pathprox_groups",
      "balance_layers_groups",
      "shrink_factors",
      "UnitWeights",
      "prox_l1",
      "proxquant",
      "scale_units",
  ):
    assert internal not in ppx.__all__, internal
  assert callable(ppx.transforms.pathprox_groups)
  assert callable(ppx.balance.balance_layers_groups)
  assert callable(ppx.prox.prox_l1) and callable(ppx.prox.unit_group_lasso)
  assert ppx.units.UnitWeights is not None


def test_core_imports_without_flax_tfds_or_mlxtend():
  code = (
      "import sys, pathprox_jax, pathprox_jax.discovery.verify, "
      "pathprox_jax.compact, pathprox_jax.objectives\n"
      "heavy = [m for m in sys.modules if m.split('.')[0] in "
      "('flax', 'tensorflow_datasets', 'tensorflow', 'mlxtend')]\n"
      "print(heavy)"
  )
  out = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "[]", out.stdout


def test_models_are_imported_on_first_use():
  from pathprox_jax.models import MLP

  assert ppx.MLP is MLP
