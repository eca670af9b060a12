"""pathprox_jax.units.spec: UnitSpec construction, roles, masks, check, split/merge, report."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.core import freeze

import pathprox_jax as ppx
from pathprox_jax import Slice, UnitGroup, UnitSpec
from pathprox_jax.units import (
    INPUT_BIAS,
    INPUT_KERNEL,
    LABELS,
    OTHER,
    OUTPUT_BIAS,
    OUTPUT_KERNEL,
    UNGROUPED_KERNEL,
    UnitWeights,
)


def dense(n_in, n_out, bias=True):
  d = {"kernel": jnp.ones((n_in, n_out))}
  if bias:
    d["bias"] = jnp.zeros((n_out,))
  return d


def three_layers():
  return {"fc1": dense(3, 4), "fc2": dense(4, 5), "head": dense(5, 2)}


def random_tree(seed=0):
  """A conv -> (flatten) -> two heads network, leaves of three dtypes."""
  r = np.random.default_rng(seed)
  return {
      "conv": {
          "kernel": jnp.asarray(r.normal(size=(3, 3, 2, 8)), jnp.bfloat16),
          "bias": jnp.asarray(r.normal(size=8), jnp.float16),
      },
      "fc": {
          "kernel": jnp.asarray(r.normal(size=(4 * 8, 6)), jnp.float32),
          "bias": jnp.asarray(r.normal(size=6), jnp.float32),
      },
      "aux": {"kernel": jnp.asarray(r.normal(size=(8, 3)), jnp.float32)},
      "head": {"kernel": jnp.asarray(r.normal(size=(6, 2)), jnp.float32)},
  }


def flatten_spec(tree):
  return UnitSpec.from_groups(
      tree,
      [
          UnitGroup(
              inputs=[("conv/kernel", -1)],
              biases=["conv/bias"],
              outputs=[
                  Slice("fc/kernel", 1, view=(4, 8, 6), bias="fc/bias"),
                  ("aux/kernel", 0),
              ],
          )
      ],
  )


# -------------------------------------------------------------- building
def test_dense_pair_roles_labels_and_masks():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  assert spec.num_units == (4,)
  assert spec.ungrouped_kernels == ("head/kernel",)
  assert spec.labels(params) == {
      "fc1": {"kernel": INPUT_KERNEL, "bias": INPUT_BIAS},
      "fc2": {"kernel": OUTPUT_KERNEL, "bias": OUTPUT_BIAS},
      "head": {"kernel": UNGROUPED_KERNEL, "bias": OTHER},
  }
  masks = spec.masks(params)
  assert masks._fields == LABELS[:-1]
  assert masks.ungrouped_kernel == {
      "fc1": {"kernel": False, "bias": False},
      "fc2": {"kernel": False, "bias": False},
      "head": {"kernel": True, "bias": False},
  }
  assert masks.input_bias["fc1"]["bias"] and not masks.input_bias["fc2"]["bias"]
  both = spec.mask(INPUT_KERNEL, OUTPUT_KERNEL)(params)
  assert [both[k]["kernel"] for k in ("fc1", "fc2", "head")] == [
      True,
      True,
      False,
  ]


def test_role_accepts_strings_and_tuples():
  spec = UnitSpec.from_pairs(three_layers(), [("fc1", "fc2")])
  assert spec.role("fc1/kernel") == spec.role(("fc1", "kernel")) == INPUT_KERNEL
  assert spec.role(("fc2", "bias")) == OUTPUT_BIAS
  assert spec.role("head/bias") == OTHER and spec.role("nowhere") == OTHER
  with pytest.raises(ValueError, match="Unknown role 'bogus'"):
    spec.mask("bogus")


def test_conv_and_mixed_pairs():
  params = {
      "c1": {"kernel": jnp.ones((3, 3, 3, 8)), "bias": jnp.zeros(8)},
      "c2": {"kernel": jnp.ones((3, 3, 8, 16)), "bias": jnp.zeros(16)},
      "c3": {"kernel": jnp.ones((3, 3, 16, 6))},
      "fc": {"kernel": jnp.ones((6, 10))},
  }
  spec = UnitSpec.from_pairs(params, [("c1", "c2"), ("c3", "fc")])
  assert spec.num_units == (8, 6)
  assert repr(spec) == "UnitSpec[(c1 -> c2: 8 units), (c3 -> fc: 6 units)]"
  assert spec.ungrouped_kernels == ()


def test_linen_frozendict_and_nested_paths():
  params = freeze({"params": {"block": {"a": dense(3, 4), "b": dense(4, 2)}}})
  spec = UnitSpec.from_pairs(
      params, [("params/block/a", ("params", "block", "b"))]
  )
  assert spec.groups[0].inputs[0].path == "params/block/a/kernel"
  assert spec.groups[0].outputs[0].bias == "params/block/b/bias"
  labels = spec.labels(params)
  assert labels["params"]["block"]["b"]["kernel"] == OUTPUT_KERNEL


def test_nnx_state_with_variables_and_pure_arrays():
  model = ppx.MLP(
      depth=3, width=6, in_features=4, num_classes=3, rngs=nnx.Rngs(0)
  )
  state = nnx.state(model, nnx.Param)
  spec = UnitSpec.from_pairs(state, [("layers/0", "layers/1")])
  assert spec == model.unit_spec()
  pure = nnx.to_pure_dict(state)
  mask = spec.mask(UNGROUPED_KERNEL)(pure)
  assert mask["layers"][2]["kernel"] and not mask["layers"][0]["kernel"]
  spec.check(pure)
  spec.check(state)


def test_masks_drive_optax_masked_and_partition():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  grads = jax.tree.map(jnp.zeros_like, params)
  tx = optax.masked(optax.add_decayed_weights(0.5), spec.mask(UNGROUPED_KERNEL))
  upd, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["head"]["kernel"], 0.5)
  np.testing.assert_allclose(upd["fc1"]["kernel"], 0.0)
  part = optax.partition(
      {
          r: optax.set_to_zero() if r == OUTPUT_KERNEL else optax.sgd(1.0)
          for r in LABELS
      },
      spec.labels,
  )
  g = jax.tree.map(jnp.ones_like, params)
  upd, _ = part.update(g, part.init(params), params)
  np.testing.assert_allclose(upd["fc2"]["kernel"], 0.0)
  np.testing.assert_allclose(upd["fc1"]["kernel"], -1.0)


def test_spec_is_hashable_static_and_usable_as_jit_static_arg():
  spec = UnitSpec.from_pairs(three_layers(), [("fc1", "fc2")])
  again = UnitSpec.from_pairs(three_layers(), [("fc1", "fc2")])
  assert spec == again and hash(spec) == hash(again)
  assert spec != UnitSpec.from_pairs(three_layers(), [("fc2", "head")])
  traces = []

  @jax.jit
  def f(p):
    traces.append(1)
    return ppx.path_norms(p, spec)

  f(three_layers())
  f(three_layers())
  assert len(traces) == 1


# ------------------------------------------------------------------ check
def test_check_names_shape_changes_missing_leaves_and_dtypes():
  params = three_layers()
  spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
  spec.check(params)
  bad = dict(params, fc2={"kernel": jnp.ones((4, 7)), "bias": jnp.zeros(5)})
  with pytest.raises(
      ValueError,
      match=r"Group 0: 'fc2/kernel' has shape "
      r"\(4, 7\) in the params, but the UnitSpec was built for "
      r"shape \(4, 5\)",
  ):
    spec.check(bad)
  with pytest.raises(
      ValueError,
      match=r"Group 0: 'fc1/bias' is missing from " "the tree passed to me",
  ):
    spec.check(
        {**params, "fc1": {"kernel": params["fc1"]["kernel"]}},
        where="tree passed to me",
    )
  with pytest.raises(ValueError, match=r"Group 0: 'fc2/bias' is missing"):
    spec.check({**params, "fc2": {"kernel": params["fc2"]["kernel"]}})
  ints = dict(
      params, fc1={"kernel": jnp.ones((3, 4), jnp.int32), "bias": jnp.zeros(4)}
  )
  with pytest.raises(
      ValueError, match=r"'fc1/kernel' has dtype int32 in the " "params"
  ):
    spec.check(ints)


# ---------------------------------------------------------- split / merge
def test_split_gives_views_axes_and_output_biases():
  tree = random_tree()
  spec = flatten_spec(tree)
  (x,), _ = spec.split(tree)
  assert isinstance(x, UnitWeights)
  assert [a.shape for a in x.w] == [(3, 3, 2, 8)]
  assert [a.shape for a in x.b] == [(8,)]
  assert [a.shape for a in x.v] == [(4, 8, 6), (8, 3)]
  assert [a.shape for a in x.c] == [(6,)]
  assert (x.w_axes, x.b_axes, x.v_axes) == ((3,), (0,), (1, 0))
  assert x.num_units == 8
  # a view is the leaf reshaped: unit i of the flatten is rows i, 8 + i, ...
  fc = np.asarray(tree["fc"]["kernel"])
  for i in (0, 5):
    np.testing.assert_array_equal(np.asarray(x.v[0][:, i, :]), fc[i::8])
  assert x.w[0].dtype == jnp.bfloat16 and x.b[0].dtype == jnp.float16


def test_split_merge_round_trip_is_bitwise():
  tree = random_tree(1)
  spec = flatten_spec(tree)
  back = spec.merge(*spec.split(tree))
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(
        np.asarray(a, np.float32), np.asarray(b, np.float32)
    )
  jitted = jax.jit(lambda t: spec.merge(*spec.split(t)))(tree)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(tree)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(
        np.asarray(a, np.float32), np.asarray(b, np.float32)
    )


def test_merge_reshapes_views_back_and_casts_to_the_leaf_dtype():
  tree = random_tree(2)
  spec = flatten_spec(tree)
  (x,), _ = spec.split(tree)
  new_v0 = jnp.arange(4 * 8 * 6, dtype=jnp.float32).reshape(4, 8, 6)
  y = x.replace(
      w=(x.w[0].astype(jnp.float32) * 3.0 + 0.001,),  # float32 values
      b=(x.b[0].astype(jnp.float32) + 1,),
      v=(new_v0, x.v[1]),
      c=(x.c[0] * 0,),
  )
  out = jax.jit(lambda t, ys: spec.merge(ys, spec.split(t)[1]))(tree, [y])
  assert out["conv"]["kernel"].dtype == jnp.bfloat16  # cast back
  assert out["conv"]["bias"].dtype == jnp.float16
  exp_w = np.asarray(tree["conv"]["kernel"], np.float32) * 3 + 0.001
  np.testing.assert_array_equal(
      np.asarray(out["conv"]["kernel"], np.float32),
      np.asarray(
          jnp.asarray(exp_w, jnp.float32).astype(jnp.bfloat16), np.float32
      ),
  )
  np.testing.assert_array_equal(
      np.asarray(out["fc"]["kernel"]), np.arange(4 * 8 * 6).reshape(32, 6)
  )
  np.testing.assert_array_equal(np.asarray(out["fc"]["bias"]), 0.0)
  for layer in ("aux", "head"):  # not changed by the groups / not grouped
    np.testing.assert_array_equal(
        np.asarray(out[layer]["kernel"]), np.asarray(tree[layer]["kernel"])
    )


def test_split_works_on_any_params_shaped_tree():
  tree = random_tree(3)
  spec = flatten_spec(tree)
  moments = jax.tree.map(lambda a: jnp.square(a.astype(jnp.float32)), tree)
  (m,), _ = spec.split(moments)
  np.testing.assert_array_equal(
      np.asarray(m.v[1]), np.asarray(moments["aux"]["kernel"])
  )
  with pytest.raises(
      ValueError,
      match="Group 0: 'fc/kernel' is missing from "
      r"the params \(a mask or a filter must keep every grouped "
      r"leaf\)",
  ):
    spec.split({k: v for k, v in tree.items() if k != "fc"})
  with pytest.raises(
      ValueError,
      match=r"Group 0: 'fc/kernel' has shape \(32, 7\) "
      r"in the params, but the UnitSpec was built for shape "
      r"\(32, 6\)",
  ):
    spec.split(
        dict(tree, fc={"kernel": jnp.ones((32, 7)), "bias": jnp.ones(7)})
    )


def test_map_groups_is_merge_of_mapped_split():
  tree = random_tree(4)
  spec = flatten_spec(tree)
  out = spec.map_groups(tree, lambda x: x.replace(v=tuple(2 * a for a in x.v)))
  np.testing.assert_array_equal(
      np.asarray(out["fc"]["kernel"]), 2 * np.asarray(tree["fc"]["kernel"])
  )
  np.testing.assert_array_equal(
      np.asarray(out["aux"]["kernel"]), 2 * np.asarray(tree["aux"]["kernel"])
  )
  np.testing.assert_array_equal(
      np.asarray(out["conv"]["kernel"], np.float32),
      np.asarray(tree["conv"]["kernel"], np.float32),
  )


# ------------------------------------------------------------------ report
def test_report_lists_every_grouped_leaf():
  tree = random_tree()
  text = flatten_spec(tree).report()
  report = text.split("\n\n")[0].splitlines()  # the table (notes follow it)
  assert report[0].split() == [
      "group",
      "role",
      "path",
      "shape",
      "view",
      "unit",
      "axis",
  ]
  assert set(report[1]) <= {"-", " "}
  rows = [r.split() for r in report[2:]]
  assert rows == [
      ["0", "input_kernel", "conv/kernel", "(3,", "3,", "2,", "8)", "3"],
      ["0", "input_bias", "conv/bias", "(8,)", "0"],
      ["0", "output_kernel", "fc/kernel", "(32,", "6)", "(4,", "8,", "6)", "1"],
      ["0", "output_kernel", "aux/kernel", "(8,", "3)", "0"],
      ["0", "output_bias", "fc/bias"],
      ["-", "ungrouped_kernel", "head/kernel"],
  ]
  # columns are aligned: every path starts at the same offset
  starts = {
      r.index(p)
      for r, p in zip(
          report[2:],
          [
              "conv/kernel",
              "conv/bias",
              "fc/kernel",
              "aux/kernel",
              "fc/bias",
              "head/kernel",
          ],
      )
  }
  assert len(starts) == 1
