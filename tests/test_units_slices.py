"""pathprox_jax.units.slices: Slice, UnitGroup, and the validation of groups.

Validation runs through ``UnitSpec.from_groups``; every error must name the
path and the axis / shape / view involved.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from pathprox_jax import Slice, UnitGroup, UnitSpec


def resolved(shape, axis, view=None, output=False, **kw):
  """The validated slice of a leaf ``x/kernel`` of ``shape``."""
  n = (view or shape)[axis]
  params = {
      "x": {"kernel": jnp.zeros(shape)},  # the slice under test
      "y": {"kernel": jnp.zeros((2, n))},  # a partner input slice
      "z": {"kernel": jnp.zeros((n, 2))},
  }  # a partner output slice
  s = Slice("x/kernel", axis, view=view, **kw)
  if output:
    g = UnitGroup(inputs=[("y/kernel", 1)], outputs=[s])
    return UnitSpec.from_groups(params, [g]).groups[0].outputs[0]
  g = UnitGroup(inputs=[s], outputs=[("z/kernel", 0)])
  return UnitSpec.from_groups(params, [g]).groups[0].inputs[0]


# ------------------------------------------------------------------ Slice
def test_slice_repr_lists_only_given_fields():
  assert repr(Slice("fc1/kernel", -1)) == "Slice('fc1/kernel', axis=-1)"
  assert (
      repr(Slice("fc/kernel", 1, view=(49, 8, 10), bias="fc/bias"))
      == "Slice('fc/kernel', axis=1, view=(49, 8, 10), bias='fc/bias')"
  )


def test_validation_fills_in_shape_view_and_positive_axis():
  s = resolved((3, 4), -1)
  assert (s.axis, s.view, s.shape, s.num_units) == (1, (3, 4), (3, 4), 4)
  assert s.other_axes == (0,)
  assert s.bias is None and s.out_axes is None and s.conv is None


def test_output_slice_defaults_out_axes_and_conv():
  dense = resolved((4, 7), 0, output=True)
  assert dense.out_axes == (1,) and dense.conv is False
  # units on the last axis: the outputs default to axis 0
  last = resolved((7, 4), 1, output=True)
  assert last.out_axes == (0,) and last.conv is False
  conv = resolved((3, 3, 4, 5), 2, output=True)
  assert conv.out_axes == (3,) and conv.conv is True
  explicit = resolved((3, 3, 4, 5), 2, output=True, out_axes=(-1,), conv=False)
  assert explicit.out_axes == (3,) and explicit.conv is False


@pytest.mark.parametrize(
    "shape, view, axis, expected",
    [
        ((3, 4), None, 1, 1),  # Dense input kernel
        ((4, 7), None, 0, 0),  # Dense output kernel
        ((3, 3, 2, 4), None, -1, 3),  # Conv
        (
            (392, 10),
            (49, 8, 10),
            1,
            0,
        ),  # channels-last flatten: interleaved rows
        ((392, 10), (8, 49, 10), 0, 0),  # channels-first flatten: row blocks
        ((4, 6), (4, 2, 3), 1, 1),  # a split leaf axis
        ((5, 1, 1), None, 0, 0),  # Equinox conv bias
        ((3, 8), (24,), 0, None),  # a view merging two leaf axes
        ((2, 6), (4, 3), 0, None),  # units straddling leaf rows
    ],
)
def test_leaf_axis(shape, view, axis, expected):
  assert resolved(shape, axis, view).leaf_axis == expected


def test_resized_cuts_the_leaf_axis_of_the_units():
  s = resolved((3, 8), 1)
  assert s.resized(8) is s
  small = s.resized(5)
  assert (small.shape, small.view, small.axis, small.path) == (
      (3, 5),
      (3, 5),
      1,
      "x/kernel",
  )
  # channels-last flatten: the 49 positions stay, 8 -> 3 channels per position
  flat = resolved((392, 10), 1, (49, 8, 10), output=True)
  cut = flat.resized(3)
  assert cut.view == (49, 3, 10) and cut.shape == (147, 10)
  assert (cut.bias, cut.out_axes, cut.conv) == (
      flat.bias,
      flat.out_axes,
      flat.conv,
  )
  # the cut leaf really is the kept units' rows: view -> take -> reshape back
  leaf = np.arange(392 * 10).reshape(392, 10)
  kept = np.take(leaf.reshape(flat.view), [0, 4, 7], axis=1).reshape(cut.shape)
  np.testing.assert_array_equal(kept[:3, 0], [0, 40, 70])
  assert flat.resized(0).shape == (0, 10)
  split = resolved((4, 6), 1, (4, 2, 3)).resized(1)
  assert split.shape == (4, 3) and split.view == (4, 1, 3)


def test_resized_refuses_a_unit_axis_spanning_leaf_axes():
  s = resolved((3, 8), 0, (24,))
  with pytest.raises(
      ValueError,
      match=r"'x/kernel': the unit axis 0 of view "
      r"\(24,\) spans several axes of the leaf shape \(3, 8\)",
  ):
    s.resized(10)


# -------------------------------------------------------------- UnitGroup
def test_unit_group_coerces_pairs_strings_and_single_items():
  g = UnitGroup(
      inputs=[("a/kernel", -1), ["a2/kernel", np.int64(1)]],
      outputs=Slice("b/kernel", 0, bias="b/bias"),
      biases="a/bias",
  )
  assert g.inputs == (Slice("a/kernel", -1), Slice("a2/kernel", 1))
  assert isinstance(g.inputs[1].axis, int)
  assert g.outputs == (Slice("b/kernel", 0, bias="b/bias"),)
  assert g.biases == (Slice("a/bias", 0),)  # a plain path: unit axis 0
  g2 = UnitGroup(
      [Slice("a/kernel", 1)], [("b/kernel", 0)], ["a/bias", ("c/bias", -1)]
  )
  assert g2.biases == (Slice("a/bias", 0), Slice("c/bias", -1))
  assert all(isinstance(x, tuple) for x in (g2.inputs, g2.outputs, g2.biases))
  # frozen and hashable (it lives in a static UnitSpec)
  assert hash(g2) == hash(
      UnitGroup(
          [("a/kernel", 1)], [("b/kernel", 0)], ["a/bias", ("c/bias", -1)]
      )
  )
  with pytest.raises(dataclasses.FrozenInstanceError):
    g2.inputs = ()


def test_unit_group_accepts_a_single_pair_like_a_single_slice():
  g = UnitGroup(
      inputs=("a/kernel", 1), outputs=("b/kernel", 0), biases=("a/bias", 0)
  )
  assert g == UnitGroup(
      inputs=[("a/kernel", 1)],
      outputs=[("b/kernel", 0)],
      biases=[("a/bias", 0)],
  )


def test_unit_group_rejects_kernels_without_an_axis_and_bad_entries():
  with pytest.raises(
      ValueError, match=r"UnitGroup inputs 'a/kernel': give " r"the unit axis"
  ):
    UnitGroup(inputs=["a/kernel"], outputs=[("b/kernel", 0)])
  with pytest.raises(ValueError, match=r"UnitGroup outputs 'b/kernel'"):
    UnitGroup(inputs=[("a/kernel", 1)], outputs="b/kernel")
  for bad in (3, ("a/kernel", 1, 2), (1, "a/kernel"), None):
    with pytest.raises(
        TypeError,
        match=r"UnitGroup inputs: expected a Slice, "
        r"a \(path, axis\) pair or a path",
    ):
      UnitGroup(inputs=[bad], outputs=[("b/kernel", 0)])


def test_unit_group_paths_output_biases_describe():
  g = UnitGroup(
      inputs=[("enc/a/kernel", 1), ("enc/b/kernel", 1)],
      biases=["enc/a/bias"],
      outputs=[
          Slice("head_a/kernel", 0, bias="head_a/bias"),
          Slice("head_b/kernel", 0),
      ],
  )
  assert g.paths() == (
      "enc/a/kernel",
      "enc/b/kernel",
      "enc/a/bias",
      "head_a/kernel",
      "head_b/kernel",
      "head_a/bias",
  )
  assert g.output_biases == ("head_a/bias",)
  assert g.describe() == "enc/a, enc/b -> head_a, head_b"


def test_unit_group_resized_resizes_every_slice():
  params = {
      "a": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
      "b": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
      "c": {"kernel": jnp.zeros((4, 5))},
  }
  spec = UnitSpec.from_groups(
      params,
      [
          UnitGroup(
              [("a/kernel", 1)],
              [Slice("b/kernel", 0, bias="b/bias"), ("c/kernel", 0)],
              ["a/bias"],
          )
      ],
  )
  small = spec.groups[0].resized(2)
  assert [s.shape for s in small.slices()] == [(3, 2), (2,), (2, 2), (2, 5)]
  assert small.num_units == 2 and small.output_biases == ("b/bias",)


# ------------------------------------------------------------- validation
def params3():
  return {
      "a": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
      "b": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
      "c": {"kernel": jnp.zeros((2, 5))},
  }


def group(inputs=(("a/kernel", 1),), outputs=(("b/kernel", 0),), biases=()):
  return UnitGroup(
      inputs=list(inputs), outputs=list(outputs), biases=list(biases)
  )


@pytest.mark.parametrize(
    "g, match",
    [
        (
            group(inputs=[("a/kernel2", 1)]),
            r"Group 0: input slice 'a/kernel2' is not in the params\. Leaves"
            r" under "
            r"'a': \['a/bias', 'a/kernel'\]",
        ),
        (
            group(outputs=[("nope/kernel", 0)]),
            r"output slice 'nope/kernel' is not in the params\. Top-level"
            r" keys: "
            r"\['a', 'b', 'c'\]",
        ),
        (
            group(inputs=[("a/kernel", 2)]),
            (
                r"input slice 'a/kernel': unit axis 2 is out of range for shape"
                r" \(3, 4\)"
            ),
        ),
        (
            group(inputs=[("a/kernel", -3)]),
            r"unit axis -3 is out of range for shape \(3, 4\)",
        ),
        (
            group(inputs=[Slice("a/kernel", 1, view=(3, 5))]),
            r"input slice 'a/kernel': view \(3, 5\) has 15 entries but the leaf"
            r" has "
            r"shape \(3, 4\)",
        ),
        (
            group(inputs=[Slice("a/kernel", 1, bias="a/bias")]),
            (
                r"input slice 'a/kernel': bias, out_axes and conv describe"
                r" output slices"
            ),
        ),
        (
            group(outputs=[Slice("b/kernel", 0, out_axes=(0,))]),
            r"output slice 'b/kernel': out_axes \(0,\) must be axes of \(4, 2\)"
            r" other "
            r"than the unit axis 0",
        ),
        (
            group(outputs=[Slice("b/kernel", 0, out_axes=(5,))]),
            r"out_axes \(5,\) must be axes of \(4, 2\)",
        ),
        (
            group(outputs=[Slice("b/kernel", 0, bias="a/bias")]),
            r"Bias 'a/bias' has shape \(4,\), but group 0: output slice"
            r" 'b/kernel' "
            r"\(view \(4, 2\)\) has 2 outputs on out_axes \(1,\)",
        ),
        (
            group(outputs=[Slice("b/kernel", 0, bias="b/nobias")]),
            r"Bias of group 0: output slice 'b/nobias' is not in the params",
        ),
        (
            group(outputs=[("c/kernel", 0)]),
            r"Unit-count mismatch in group 0: 'a/kernel' \(view \(3, 4\), axis"
            r" 1\): "
            r"4; 'c/kernel' \(view \(2, 5\), axis 0\): 2",
        ),
        (
            group(biases=[("b/bias", 0)]),
            (
                r"Unit-count mismatch in group 0: .*'b/bias' \(view \(2,\),"
                r" axis 0\): 2"
            ),
        ),
        (
            group(inputs=[]),
            r"Group 0 needs at least one input and one output "
            r"slice; got 0 and 1",
        ),
        (group(outputs=[]), r"got 1 and 0"),
        (
            group(inputs=[("a/kernel", 1), ("a/kernel", 1)]),
            r"Leaf 'a/kernel' is used twice in group 0",
        ),
    ],
)
def test_group_validation_errors_name_path_axis_and_shape(g, match):
  with pytest.raises(ValueError, match=match):
    UnitSpec.from_groups(params3(), [g])


def test_groups_must_be_disjoint_and_present():
  params = {
      "a": {"kernel": jnp.zeros((3, 4))},
      "b": {"kernel": jnp.zeros((4, 4))},
      "c": {"kernel": jnp.zeros((4, 2))},
  }
  g0 = group(outputs=[("b/kernel", 0)])
  g1 = group(inputs=[("b/kernel", 1)], outputs=[("c/kernel", 0)])
  with pytest.raises(
      ValueError,
      match=r"Leaf 'b/kernel' is used in groups 0 "
      r"and 1\. Groups must be disjoint",
  ):
    UnitSpec.from_groups(params, [g0, g1])
  with pytest.raises(ValueError, match="at least one unit group; got none"):
    UnitSpec.from_groups(params, [])
  with pytest.raises(
      TypeError, match="Group 1 is tuple; expected a pathprox_jax.UnitGroup"
  ):
    UnitSpec.from_groups(params, [g0, ("b", "c")])


@pytest.mark.parametrize(
    "where, dtype",
    [
        ("a/kernel", jnp.int32),
        ("b/kernel", jnp.complex64),
        ("a/bias", jnp.int32),
    ],
)
def test_group_validation_rejects_non_real_float_leaves(where, dtype):
  params = params3()
  layer, leaf = where.split("/")
  params[layer][leaf] = params[layer][leaf].astype(dtype)
  role = {"a/kernel": "input", "b/kernel": "output", "a/bias": "input bias"}
  with pytest.raises(
      ValueError,
      match=rf"Group 0: {role[where]} slice "
      rf"'{where}' has dtype {jnp.dtype(dtype).name}; PathProx "
      "needs real floating-point weights",
  ):
    UnitSpec.from_groups(params, [group(biases=["a/bias"])])
