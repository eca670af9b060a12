"""pathprox_jax._numerics: accumulation dtype, zero-safe sqrt/inverse, sums of squares, scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pathprox_jax._numerics import (
    accumulation_dtype,
    along,
    safe_inverse,
    safe_sqrt,
    scale,
    sums_of_squares,
)


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (jnp.bfloat16, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.float32, jnp.float32),
        (jnp.int32, jnp.float32),
    ],
)
def test_accumulation_dtype_is_at_least_float32(dtype, expected):
  assert accumulation_dtype(dtype) == expected


def test_accumulation_dtype_keeps_float64():
  with jax.enable_x64(True):
    assert accumulation_dtype(jnp.float64) == jnp.float64


def test_safe_sqrt_value_and_gradient_at_zero():
  x = jnp.array([0.0, 4.0, 2.25, 1e-30])
  np.testing.assert_allclose(
      jax.jit(safe_sqrt)(x), [0.0, 2.0, 1.5, 1e-15], rtol=1e-6
  )
  g = jax.jit(jax.vmap(jax.grad(safe_sqrt)))(x)
  assert g[0] == 0.0 and np.all(np.isfinite(g))
  np.testing.assert_allclose(g[1:3], [0.25, 1 / 3], rtol=1e-6)
  assert jnp.isnan(jax.grad(jnp.sqrt)(0.0)) or jnp.isinf(
      jax.grad(jnp.sqrt)(0.0)
  )


def test_safe_inverse_with_floor():
  x = jnp.array([0.0, 1e-13, 0.5, -2.0, 4.0])
  np.testing.assert_allclose(
      jax.jit(safe_inverse)(x), [1.0, 1e13, 2.0, 1.0, 0.25], rtol=1e-6
  )
  np.testing.assert_array_equal(
      safe_inverse(x, 1e-12), [1.0, 1.0, 2.0, 1.0, 0.25]
  )
  g = jax.grad(lambda x: jnp.sum(safe_inverse(x)))(jnp.array([0.0, 2.0]))
  np.testing.assert_allclose(g, [0.0, -0.25])


def test_along_broadcasts_a_unit_vector():
  v = jnp.arange(3.0)
  assert along(v, 4, 2).shape == (1, 1, 3, 1)
  assert along(v, 2, -1).shape == (1, 3)
  assert along(2.0, 3, 1).shape == ()
  x = jnp.ones((2, 3, 4))
  np.testing.assert_array_equal((x * along(v, 3, 1))[1, :, 2], [0.0, 1.0, 2.0])


def test_sums_of_squares_adds_arrays_over_their_other_axes():
  r = np.random.default_rng(0)
  a, b = r.normal(size=(3, 5)), r.normal(size=(5, 2, 2))
  got = jax.jit(lambda a, b: sums_of_squares((a, b), (1, 0)))(
      jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  )
  exp = [np.sum(a[:, i] ** 2) + np.sum(b[i] ** 2) for i in range(5)]
  np.testing.assert_allclose(got, exp, rtol=1e-6)
  with pytest.raises(ValueError, match="at least one array"):
    sums_of_squares((), ())


def test_sums_of_squares_accumulates_low_precision_in_float32():
  x = jnp.full((4096, 2), 0.01, jnp.bfloat16)
  got = sums_of_squares((x,), (1,))
  assert got.dtype == jnp.float32
  # in bfloat16 the running sum would stall far below 4096 * 0.01^2
  np.testing.assert_allclose(
      got, 4096 * float(jnp.bfloat16(0.01)) ** 2, rtol=1e-5
  )


def test_scale_computes_in_float32_and_casts_back():
  x = jnp.asarray([1.0, 3.0, 255.0], jnp.bfloat16)
  f = jnp.float32(1.0 + 2**-8)  # rounds to 1.0 in bfloat16
  y = jax.jit(scale)(x, f)
  assert y.dtype == jnp.bfloat16
  exp = np.asarray(x, np.float32) * np.float32(f)
  np.testing.assert_array_equal(
      np.asarray(y, np.float32),
      np.asarray(jnp.asarray(exp).astype(jnp.bfloat16), np.float32),
  )
  # 255 * (1 + 2^-8) = 255.996 -> 256; a bfloat16 product would give 255
  assert float(y[2]) == 256.0
