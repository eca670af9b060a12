"""pathprox_jax.units.weights: UnitWeights (a pytree of views) and scale_units vs NumPy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathprox_jax as ppx
from pathprox_jax.units import UnitWeights, scale_units
from tests import reference


def test_from_arrays_dense_conv_and_bias():
  x = UnitWeights.from_arrays(jnp.ones((3, 4)), jnp.ones((4, 2)))
  assert (x.w_axes, x.b_axes, x.v_axes, x.b, x.c) == ((1,), (), (0,), (), ())
  assert x.num_units == 4
  conv = UnitWeights.from_arrays(
      jnp.ones((3, 3, 2, 6)), jnp.ones((3, 3, 6, 5)), b=jnp.ones(6)
  )
  assert (conv.w_axes, conv.b_axes, conv.v_axes) == ((3,), (0,), (2,))
  assert conv.num_units == 6 and conv.b[0].shape == (6,)


def test_is_a_pytree_with_static_axes():
  x = UnitWeights(
      (jnp.ones((2, 3)),),
      (jnp.ones(3),),
      (jnp.ones((3, 4)),),
      (jnp.ones(4),),
      (1,),
      (0,),
      (0,),
  )
  leaves, treedef = jax.tree.flatten(x)
  assert len(leaves) == 4  # w, b, v, c: the axes are static
  doubled = jax.tree.map(lambda a: 2 * a, x)
  assert isinstance(doubled, UnitWeights) and doubled.w_axes == (1,)
  np.testing.assert_array_equal(doubled.c[0], 2.0)
  # under jit the axes stay Python ints: they can select reduction axes
  out = jax.jit(lambda y: jnp.sum(y.w[0], axis=y.w_axes[0]))(x)
  np.testing.assert_array_equal(out, [3.0, 3.0])
  rebuilt = jax.tree.unflatten(treedef, leaves)
  assert rebuilt.v_axes == x.v_axes and rebuilt.w[0] is x.w[0]
  with pytest.raises(dataclasses.FrozenInstanceError):
    x.w = ()


def scale_reference(x, w, b, v, c):
  """NumPy: multiply entry i along each array's unit axis by the factor."""

  def each(arrays, axes, f):
    out = []
    for a, ax in zip(arrays, axes):
      a = np.array(a, np.float64)
      f = np.broadcast_to(np.asarray(f, np.float64), (a.shape[ax],))
      for i in range(a.shape[ax]):
        reference.unit_slice(a, i, ax)[...] *= f[i]
      out.append(a)
    return out

  return (
      each(x.w, x.w_axes, w),
      each(x.b, x.b_axes, b),
      each(x.v, x.v_axes, v),
      [np.asarray(a, np.float64) * c for a in x.c],
  )


def two_slice_group(seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), dtype)
  # two input slices (units on axes 1 and 0), a bias, two output slices
  return UnitWeights(
      (f(3, 5), f(5, 2, 2)),
      (f(5),),
      (f(5, 4), f(2, 5, 3)),
      (f(4),),
      (1, 0),
      (0,),
      (0, 1),
  )


@pytest.mark.parametrize(
    "factors",
    [
        dict(
            w=np.array([2.0, 0.5, 1.0, 0.0, 3.0]),
            v=np.array([0.5, 2.0, 1.0, 7.0, 1 / 3]),
        ),
        dict(b=np.array([1.0, -1.0, 2.0, 0.25, 4.0]), c=0.5),
        dict(w=2.0, b=3.0, v=0.25, c=4.0),
    ],
)
def test_scale_units_matches_numpy(factors):
  x = two_slice_group()
  full = dict(w=1.0, b=1.0, v=1.0, c=1.0) | factors
  got = jax.jit(
      lambda x: scale_units(
          x, **{k: jnp.asarray(v) for k, v in factors.items()}
      )
  )(x)
  exp = scale_reference(x, **full)
  for part, e in zip((got.w, got.b, got.v, got.c), exp):
    assert len(part) == len(e)
    for a, b in zip(part, e):
      np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6)
  assert (got.w_axes, got.b_axes, got.v_axes) == (x.w_axes, x.b_axes, x.v_axes)


def test_scale_units_with_unit_factor_returns_the_same_arrays():
  x = two_slice_group(1)
  y = scale_units(x, w=jnp.ones(5))
  assert all(a is b for a, b in zip(y.b + y.v + y.c, x.b + x.v + x.c))


def test_scale_units_low_precision_computes_in_float32():
  x = two_slice_group(2, jnp.bfloat16)
  f = jnp.asarray([1.001, 3.0, 0.7, 1.0, 2.5], jnp.float32)
  y = jax.jit(lambda x: scale_units(x, w=f))(x)
  assert all(a.dtype == jnp.bfloat16 for a in y.w)
  # one rounding of the float32 product (not a bfloat16 product of a rounded factor)
  for a, a0, ax in zip(y.w, x.w, x.w_axes):
    shape = [1] * a0.ndim
    shape[ax] = -1
    exp = np.asarray(a0, np.float32) * np.asarray(f).reshape(shape)
    np.testing.assert_array_equal(
        np.asarray(a, np.float32),
        np.asarray(jnp.asarray(exp).astype(jnp.bfloat16), np.float32),
    )


def test_where_units_matches_numpy_under_jit():
  rng = np.random.default_rng(3)
  mk = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  x = ppx.units.UnitWeights(
      (mk(3, 4), mk(2, 2, 4)),
      (mk(4),),
      (mk(4, 5),),
      (mk(5),),
      (1, 2),
      (0,),
      (0,),
  )
  y = jax.tree.map(lambda a: a * 0 - 1, x)
  keep = jnp.array([True, False, False, True])
  out = jax.jit(ppx.units.where_units)(keep, x, y)
  k = np.asarray(keep)
  np.testing.assert_array_equal(out.w[0], np.where(k[None], x.w[0], -1))
  np.testing.assert_array_equal(out.w[1], np.where(k[None, None], x.w[1], -1))
  np.testing.assert_array_equal(out.b[0], np.where(k, x.b[0], -1))
  np.testing.assert_array_equal(out.v[0], np.where(k[:, None], x.v[0], -1))
  np.testing.assert_array_equal(out.c[0], x.c[0])  # not unit-indexed
