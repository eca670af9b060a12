"""pathprox_jax.units.layouts: Flax / Haiku / Equinox layer pairs and auto-detection."""

import re

import jax.numpy as jnp
import pytest

from pathprox_jax import Slice, UnitGroup, UnitSpec
from pathprox_jax.units import LAYOUTS


def flax_layer(shape, bias=True):
  d = {"kernel": jnp.zeros(shape)}
  if bias:
    d["bias"] = jnp.zeros(shape[-1])
  return d


def haiku_layer(shape):
  return {"w": jnp.zeros(shape), "b": jnp.zeros(shape[-1])}


def equinox_layer(shape, conv_bias=False):
  bias = (shape[0], 1, 1) if conv_bias else (shape[0],)
  return {"weight": jnp.zeros(shape), "bias": jnp.zeros(bias)}


def test_layout_table():
  assert set(LAYOUTS) == {"flax", "haiku", "equinox"}
  assert LAYOUTS["flax"].kernel == "kernel" and LAYOUTS["haiku"].bias == "b"
  assert (LAYOUTS["equinox"].in_axis, LAYOUTS["equinox"].out_axis) == (1, 0)


def test_flax_dense_and_conv_pairs():
  params = {
      "c1": flax_layer((3, 3, 2, 6)),
      "c2": flax_layer((3, 3, 6, 5)),
      "d1": flax_layer((5, 4), bias=False),
      "d2": flax_layer((4, 2)),
  }
  spec = UnitSpec.from_pairs(params, [("c1", "c2"), ("d1", "d2")])
  conv, dense = spec.groups
  assert conv.inputs == (
      Slice("c1/kernel", 3, (3, 3, 2, 6), shape=(3, 3, 2, 6)),
  )
  assert conv.biases[0].path == "c1/bias" and conv.biases[0].axis == 0
  (v,) = conv.outputs
  assert (v.path, v.axis, v.bias, v.out_axes, v.conv) == (
      "c2/kernel",
      2,
      "c2/bias",
      (3,),
      True,
  )
  assert dense.biases == ()  # d1 has no bias
  assert (dense.outputs[0].axis, dense.outputs[0].conv) == (0, False)
  assert spec.num_units == (6, 4)


def test_haiku_names_with_slashes():
  params = {
      "mlp/~/linear_0": haiku_layer((5, 4)),
      "mlp/~/linear_1": haiku_layer((4, 3)),
      "mlp/~/linear_2": haiku_layer((3, 2)),
  }
  spec = UnitSpec.from_pairs(params, [("mlp/~/linear_0", "mlp/~/linear_1")])
  (g,) = spec.groups
  assert [s.path for s in g.slices()] == [
      "mlp/~/linear_0/w",
      "mlp/~/linear_0/b",
      "mlp/~/linear_1/w",
  ]
  assert g.output_biases == ("mlp/~/linear_1/b",)
  assert (g.inputs[0].axis, g.outputs[0].axis) == (1, 0)
  assert spec.ungrouped_kernels == ("mlp/~/linear_2/w",)


def test_equinox_dense_and_conv_pairs():
  params = {
      "layers": [equinox_layer((4, 3)), equinox_layer((2, 4))],
      "convs": [
          equinox_layer((5, 2, 3, 3), conv_bias=True),
          equinox_layer((6, 5, 3, 3), conv_bias=True),
      ],
  }
  spec = UnitSpec.from_pairs(
      params, [("layers/0", "layers/1"), (("convs", 0), ("convs", 1))]
  )
  dense, conv = spec.groups
  assert (dense.inputs[0].axis, dense.outputs[0].axis) == (0, 1)
  assert dense.outputs[0].out_axes == (0,) and dense.outputs[0].conv is False
  assert conv.biases[0].shape == (5, 1, 1) and conv.biases[0].axis == 0
  assert conv.outputs[0].bias == "convs/1/bias"
  assert conv.outputs[0].out_axes == (0,) and conv.outputs[0].conv is True
  assert spec.num_units == (4, 5)


def test_explicit_layout_overrides_auto():
  # Flax-layout kernels stored under the Haiku names: layout="haiku" reads them.
  params = {"a": {"w": jnp.zeros((3, 4))}, "b": {"w": jnp.zeros((4, 2))}}
  assert UnitSpec.from_pairs(
      params, [("a", "b")], layout="haiku"
  ).num_units == (4,)
  # The same Haiku leaves read as Equinox (out, in): 3 units, not 4.
  params = {
      "a": {"weight": jnp.zeros((3, 4))},
      "b": {"weight": jnp.zeros((2, 3))},
  }
  assert UnitSpec.from_pairs(
      params, [("a", "b")], layout="equinox"
  ).num_units == (3,)
  with pytest.raises(ValueError, match=r"Input layer 'a' has no 'kernel' leaf"):
    UnitSpec.from_pairs(params, [("a", "b")], layout="flax")


@pytest.mark.parametrize(
    "params, pairs, kw, match",
    [
        (
            {"a": flax_layer((3, 4)), "b": haiku_layer((4, 2))},
            [("a", "b")],
            {},
            (
                r"The layers use different layouts \(\{'a': 'flax', 'b':"
                r" 'haiku'\}\)"
            ),
        ),
        (
            {"a": flax_layer((3, 4)), "b": {"v": jnp.zeros((4, 2))}},
            [("a", "b")],
            {},
            r"Layer 'b' has no kernel leaf .*its leaves are \['v'\]",
        ),
        (
            {
                "a": {"kernel": jnp.zeros((3, 4)), "w": jnp.zeros((3, 4))},
                "b": flax_layer((4, 2)),
            },
            [("a", "b")],
            {},
            (
                r"Layer 'a' has several kernel leaf .*its leaves are"
                r" \['kernel', 'w'\]"
            ),
        ),
        (
            {"a": flax_layer((3, 4))},
            [("a", "nope")],
            {},
            r"Layer 'nope' is not in the params\. Layers: \['a'\]",
        ),
        (
            {"a": flax_layer((3, 4)), "b": flax_layer((4, 2))},
            [("a", "b")],
            {"layout": "torch"},
            r"Unknown layout 'torch'",
        ),
        (
            {"a": {"kernel": jnp.zeros(4)}, "b": flax_layer((4, 2))},
            [("a", "b")],
            {},
            (
                r"Input kernel 'a/kernel' has shape \(4,\); expected a Dense or"
                r" Conv"
            ),
        ),
        (
            {"a": flax_layer((3, 4)), "b": {"kernel": jnp.zeros(4)}},
            [("a", "b")],
            {},
            r"Output kernel 'b/kernel' has shape \(4,\)",
        ),
        (
            {"a": flax_layer((3, 4)), "b": flax_layer((5, 2))},
            [("a", "b")],
            {},
            r"Unit-count mismatch in pair 0: input layer 'a' kernel \(3, 4\)"
            r" has 4 "
            r"output channels, but output layer 'b' kernel \(5, 2\) takes 5"
            r" inputs\.$",
        ),
        (
            {"a": flax_layer((3, 4)), "b": flax_layer((4, 2))},
            [("a", "b", "c")],
            {},
            (
                r"Pair 0 is \('a', 'b', 'c'\); expected \(input_layer,"
                r" output_layer\)"
            ),
        ),
        ({"a": flax_layer((3, 4))}, [], {}, "at least one"),
        (
            {
                "a": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(3)},
                "b": flax_layer((4, 2)),
            },
            [("a", "b")],
            {},
            r"Unit-count mismatch in group 0: 'a/kernel' \(view \(3, 4\), axis"
            r" 1\): 4; "
            r"'a/bias' \(view \(3,\), axis 0\): 3",
        ),
        (
            {
                "a": flax_layer((3, 4)),
                "b": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(3)},
            },
            [("a", "b")],
            {},
            r"Bias 'b/bias' has shape \(3,\), but group 0: output slice"
            r" 'b/kernel' "
            r"\(view \(4, 2\)\) has 2 outputs on out_axes \(1,\)",
        ),
    ],
)
def test_pair_errors(params, pairs, kw, match):
  with pytest.raises(ValueError, match=match):
    UnitSpec.from_pairs(params, pairs, **kw)


def test_flatten_mismatch_hints_at_views_that_validate():
  params = {"conv": flax_layer((3, 3, 2, 8)), "fc": flax_layer((49 * 8, 10))}
  with pytest.raises(
      ValueError,
      match=(
          r"kernel \(3, 3, 2, 8\) has 8 output channels, but output layer 'fc' "
          r"kernel \(392, 10\) takes 392 inputs\. If a flatten of a 8-channel "
          r"feature map sits between them"
      ),
  ) as err:
    UnitSpec.from_pairs(params, [("conv", "fc")])
  hints = re.findall(r"Slice\(.*?\)(?= for a channel)", str(err.value))
  assert len(hints) == 2  # channel-minor and channel-major flattens
  for hint, unit_axis in zip(hints, (1, 0)):
    out = eval(hint, {"Slice": Slice})  # noqa: S307 - the library's own text
    assert out.axis == unit_axis and out.bias == "fc/bias" and out.conv is False
    spec = UnitSpec.from_groups(
        params,
        [
            UnitGroup(
                inputs=[("conv/kernel", -1)],
                biases=["conv/bias"],
                outputs=[out],
            )
        ],
    )
    assert spec.num_units == (8,)


def test_layer_used_twice_is_rejected():
  params = {
      "a": flax_layer((3, 4)),
      "b": flax_layer((4, 4)),
      "c": flax_layer((4, 2)),
  }
  with pytest.raises(
      ValueError, match=r"Leaf 'b/kernel' is used in groups 0 " "and 1"
  ):
    UnitSpec.from_pairs(params, [("a", "b"), ("b", "c")])
  with pytest.raises(
      ValueError, match=r"Leaf 'a/kernel' is used in groups 0 " "and 1"
  ):
    UnitSpec.from_pairs(params, [("a", "b"), ("a", "b")])


@pytest.mark.parametrize(
    "dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64]
)
def test_pairs_reject_non_real_float_kernels(dtype):
  params = {"a": flax_layer((3, 4)), "b": flax_layer((4, 2))}
  params["a"]["kernel"] = params["a"]["kernel"].astype(dtype)
  with pytest.raises(
      ValueError,
      match=rf"Group 0: input slice 'a/kernel' has "
      rf"dtype {jnp.dtype(dtype).name}; PathProx needs real "
      "floating-point weights",
  ):
    UnitSpec.from_pairs(params, [("a", "b")])


def test_pairs_reject_an_integer_bias():
  params = {"l0": flax_layer((3, 4)), "l1": flax_layer((4, 2))}
  params["l0"]["bias"] = params["l0"]["bias"].astype(jnp.int32)
  with pytest.raises(
      ValueError,
      match=r"Group 0: input bias slice 'l0/bias' has " r"dtype int32",
  ):
    UnitSpec.from_pairs(params, [("l0", "l1")])
  params["l0"]["bias"] = params["l0"]["bias"].astype(jnp.float32)
  params["l1"]["bias"] = params["l1"]["bias"].astype(jnp.int32)
  with pytest.raises(
      ValueError,
      match=r"Bias of group 0: output slice " r"'l1/bias' has dtype int32",
  ):
    UnitSpec.from_pairs(params, [("l0", "l1")])
