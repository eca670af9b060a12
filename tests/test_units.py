"""UnitSpec: construction from dicts, Linen and NNX params, masks, labels, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.core import freeze

from pathprox_jax import MLP, UnitSpec
from pathprox_jax.units import (INPUT_BIAS, INPUT_KERNEL, OUTPUT_BIAS,
                                OUTPUT_KERNEL, UNGROUPED_KERNEL)


def dense(n_in, n_out, bias=True):
  d = {"kernel": jnp.ones((n_in, n_out))}
  if bias:
    d["bias"] = jnp.zeros((n_out,))
  return d


def three_layers():
  return {"fc1": dense(3, 4), "fc2": dense(4, 5), "head": dense(5, 2)}


def test_dense_pair_and_roles():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  assert spec.num_units == (4,)
  labels = spec.labels(params)
  assert labels == {
      "fc1": {"kernel": INPUT_KERNEL, "bias": INPUT_BIAS},
      "fc2": {"kernel": OUTPUT_KERNEL, "bias": OUTPUT_BIAS},
      "head": {"kernel": UNGROUPED_KERNEL, "bias": "other"},
  }
  masks = spec.masks(params)
  assert masks.ungrouped_kernel["head"]["kernel"]
  assert not masks.ungrouped_kernel["fc1"]["kernel"]
  assert masks.input_bias["fc1"]["bias"]


def test_conv_and_mixed_pairs():
  params = {
      "c1": {"kernel": jnp.ones((3, 3, 3, 8)), "bias": jnp.zeros(8)},
      "c2": {"kernel": jnp.ones((3, 3, 8, 16)), "bias": jnp.zeros(16)},
      "c3": {"kernel": jnp.ones((3, 3, 16, 6))},
      "fc": {"kernel": jnp.ones((6, 10))},
  }
  spec = UnitSpec.from_pairs(params, [("c1", "c2"), ("c3", "fc")])
  assert spec.num_units == (8, 6)


def test_linen_frozendict_and_nested_paths():
  params = freeze({"params": {"block": {"a": dense(3, 4), "b": dense(4, 2)}}})
  spec = UnitSpec.from_pairs(params, [("params/block/a", "params/block/b")])
  assert spec.groups[0].input_path == ("params", "block", "a")
  labels = spec.labels(params)
  assert labels["params"]["block"]["b"]["kernel"] == OUTPUT_KERNEL


def test_nnx_state_with_variables_and_pure_arrays():
  model = MLP(depth=3, width=6, in_features=4, num_classes=3, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  spec = UnitSpec.from_pairs(state, [("layers/0", "layers/1")])
  assert spec == model.unit_spec()
  # Masks work on the Variable-wrapped state and on plain arrays alike.
  pure = nnx.to_pure_dict(state)
  mask = spec.mask(UNGROUPED_KERNEL)(pure)
  assert mask["layers"][2]["kernel"] and not mask["layers"][0]["kernel"]
  spec.check(pure)


def test_masks_drive_optax_masked_and_partition():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  grads = jax.tree.map(jnp.zeros_like, params)
  tx = optax.masked(optax.add_decayed_weights(0.5), spec.mask(UNGROUPED_KERNEL))
  upd, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["head"]["kernel"], 0.5)
  np.testing.assert_allclose(upd["fc1"]["kernel"], 0.0)
  part = optax.partition(
      {r: optax.set_to_zero() if r == OUTPUT_KERNEL else optax.sgd(1.0)
       for r in ("input_kernel", "input_bias", "output_kernel", "output_bias",
                 "ungrouped_kernel", "other")}, spec.labels)
  g = jax.tree.map(jnp.ones_like, params)
  upd, _ = part.update(g, part.init(params), params)
  np.testing.assert_allclose(upd["fc2"]["kernel"], 0.0)
  np.testing.assert_allclose(upd["fc1"]["kernel"], -1.0)


@pytest.mark.parametrize("params, pairs, match", [
    (three_layers(), [], "at least one"),
    (three_layers(), [("fc1", "nope")], "'nope' is not in the params"),
    ({"a": dense(3, 4), "b": {"w": jnp.ones((4, 2))}}, [("a", "b")],
     "'b' has no 'kernel' leaf"),
    (three_layers(), [("fc1", "head")],
     r"Unit-count mismatch in pair 0: input layer 'fc1' kernel \(3, 4\) has 4 "
     r"output units, but output layer 'head' kernel \(5, 2\) takes 5 inputs"),
    ({"a": dense(3, 4), "b": dense(4, 4), "c": dense(4, 2)},
     [("a", "b"), ("b", "c")], "Layer 'b' is used twice"),
    ({"a": dense(3, 4), "b": dense(4, 4)}, [("a", "b"), ("a", "b")],
     "Layer 'a' is used twice"),
    ({"a": {"kernel": jnp.ones((3, 4), jnp.int32)}, "b": dense(4, 2)},
     [("a", "b")], "dtype int32"),
    ({"a": {"kernel": jnp.ones((3, 4), jnp.complex64)}, "b": dense(4, 2)},
     [("a", "b")], "dtype complex64"),
    ({"a": {"kernel": jnp.ones((4,))}, "b": dense(4, 2)}, [("a", "b")],
     r"shape \(4,\)"),
    ({"a": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(3)}, "b": dense(4, 2)},
     [("a", "b")], r"Bias 'a/bias' has shape \(3,\)"),
])
def test_bad_inputs_raise_clear_errors(params, pairs, match):
  with pytest.raises(ValueError, match=match):
    UnitSpec.from_pairs(params, pairs)


def test_check_catches_shape_change():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  params["fc2"]["kernel"] = jnp.ones((4, 7))
  with pytest.raises(ValueError, match=r"'fc2/kernel' has shape \(4, 7\).*\(4, 5\)"):
    spec.check(params)


def test_spec_is_hashable_and_static():
  spec = UnitSpec.from_pairs(three_layers(), [("fc1", "fc2")])
  assert hash(spec) == hash(UnitSpec.from_pairs(three_layers(), [("fc1", "fc2")]))
