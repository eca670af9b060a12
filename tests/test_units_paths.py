"""pathprox_jax.units.paths: path strings, the leaf index, kernels and the kernel mask."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import freeze

import pathprox_jax as ppx
from pathprox_jax.units.paths import leaf_index


def paths(tree):
  return [
      ppx.units.path_str(kp)
      for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


class Layer(NamedTuple):  # attribute keys, like an Equinox module
  weight: jax.Array
  bias: jax.Array


def test_path_str_for_dicts_lists_and_attributes():
  tree = {
      "fc1": {"kernel": 1.0, "bias": 2.0},
      "layers": [Layer(3.0, 4.0), {"w": 5.0}],
  }
  assert paths(tree) == [
      "fc1/bias",
      "fc1/kernel",
      "layers/0/weight",
      "layers/0/bias",
      "layers/1/w",
  ]


def test_path_str_of_linen_and_haiku_names():
  linen = freeze({"params": {"Dense_0": {"kernel": jnp.ones((2, 2))}}})
  assert paths(linen) == ["params/Dense_0/kernel"]
  # Haiku module names contain "/" themselves: kept verbatim.
  haiku = {"mlp/~/linear_0": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}}
  assert paths(haiku) == ["mlp/~/linear_0/b", "mlp/~/linear_0/w"]


def test_path_str_drops_nnx_variable_wrappers():
  model = ppx.MLP(
      depth=2, width=3, in_features=2, num_classes=2, rngs=nnx.Rngs(0)
  )
  state = nnx.state(model, nnx.Param)
  expected = [
      "layers/0/bias",
      "layers/0/kernel",
      "layers/1/bias",
      "layers/1/kernel",
  ]
  assert paths(state) == expected
  # The pure dict of the same state (no Variable wrappers) has the same paths.
  assert paths(nnx.to_pure_dict(state)) == expected


def test_leaf_index_positions_follow_flatten_order():
  tree = {"b": jnp.zeros(1), "a": [jnp.ones(2), jnp.full(3, 2.0)]}
  leaves, treedef, index = leaf_index(tree)
  assert index == {"a/0": 0, "a/1": 1, "b": 2}
  for i in index.values():
    assert leaves[i] is jax.tree.leaves(tree)[i]
  assert jax.tree.unflatten(treedef, leaves)["a"][1] is tree["a"][1]


def test_leaf_index_rejects_two_leaves_with_one_path():
  with pytest.raises(ValueError, match="same path 'a/b'"):
    leaf_index({"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}})


@pytest.mark.parametrize(
    "path, shape, expected",
    [
        ("fc/kernel", (3, 4), True),  # Flax Dense
        ("conv/kernel", (3, 3, 2, 4), True),  # Flax Conv
        ("scale_only/kernel", (4,), True),  # any leaf named kernel
        ("mlp/~/linear_0/w", (3, 4), True),  # Haiku
        ("mlp/~/linear_0/w", (4,), False),  # 1-D w: not a matrix
        ("layers/0/weight", (4, 3), True),  # Equinox Linear
        ("conv/weight", (4, 2, 3, 3), True),  # Equinox Conv
        ("ln/weight", (4,), False),  # Equinox LayerNorm scale
        ("fc/bias", (3, 4), False),  # biases never
        ("mlp/~/linear_0/b", (4,), False),
        ("bn/scale", (4,), False),
        ("fc/weights", (3, 4), False),  # whole names only
        ("kernel_init/x", (3, 4), False),
    ],
)
def test_is_kernel(path, shape, expected):
  assert ppx.units.is_kernel(path, jnp.ones(shape)) is expected


def test_kernel_mask_flax_haiku_equinox_style_names():
  params = {
      "flax": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
      "mlp/~/linear_0": {"w": jnp.ones((4, 2)), "b": jnp.ones(2)},
      "layers": [
          Layer(jnp.ones((2, 4)), jnp.ones(2)),
          {"weight": jnp.ones(2), "bias": jnp.ones(2)},
      ],  # a LayerNorm
  }
  mask = ppx.units.kernel_mask(params)
  assert mask == {
      "flax": {"kernel": True, "bias": False},
      "mlp/~/linear_0": {"w": True, "b": False},
      "layers": [Layer(True, False), {"weight": False, "bias": False}],
  }


def test_kernel_mask_on_equinox_modules():
  eqx = pytest.importorskip("equinox")
  key = jax.random.key(0)
  mlp = eqx.filter(eqx.nn.MLP(2, 3, 4, 1, key=key), eqx.is_array)
  mask = ppx.units.kernel_mask(mlp)
  assert [m.weight for m in mask.layers] == [True, True]
  assert [m.bias for m in mask.layers] == [False, False]
  ln = ppx.units.kernel_mask(eqx.nn.LayerNorm(4))
  assert ln.weight is False and ln.bias is False


def test_kernel_mask_is_an_optax_mask():
  optax = pytest.importorskip("optax")
  params = {
      "fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
      "ln": {"weight": jnp.ones(2)},
  }
  tx = optax.add_decayed_weights(0.5, mask=ppx.units.kernel_mask)
  upd, _ = tx.update(
      jax.tree.map(jnp.zeros_like, params), tx.init(params), params
  )
  np.testing.assert_array_equal(upd["fc"]["kernel"], 0.5)
  np.testing.assert_array_equal(upd["fc"]["bias"], 0.0)
  np.testing.assert_array_equal(upd["ln"]["weight"], 0.0)
