"""The weights of one unit group, split from a params-shaped tree.

:class:`UnitWeights` is the one representation every operator works on: the
PathProx prox, the sphere projection, balancing, unit norms, compaction.
``UnitSpec.split(tree)`` builds one per group from params, updates or
optimizer moments (every slice reshaped to its view, no copy);
``UnitSpec.merge(groups, rest)`` writes them back.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import along, scale


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("w", "b", "v", "c"),
    meta_fields=("w_axes", "b_axes", "v_axes"),
)
@dataclasses.dataclass(frozen=True)
class UnitWeights:
  """One group's weights: tuples of arrays, each with its unit axis.

  Attributes:
    w: the input slices (views), unit ``i`` at index ``i`` of ``w_axes[k]``.
    b: the input biases (views), unit axis ``b_axes[k]``.
    v: the output slices (views), unit axis ``v_axes[k]``.
    c: the output layers' biases (whole leaves; not unit-indexed).
    w_axes, b_axes, v_axes: the unit axes (static).

  Examples:
    >>> import jax.numpy as jnp
    >>> x = UnitWeights.from_arrays(jnp.ones((3, 4)), jnp.ones((4, 2)))
    >>> x.num_units, x.w_axes, x.v_axes
    (4, (1,), (0,))
  """

  w: tuple[jax.Array, ...]
  b: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  c: tuple[jax.Array, ...]
  w_axes: tuple[int, ...]
  b_axes: tuple[int, ...]
  v_axes: tuple[int, ...]

  @classmethod
  def from_arrays(
      cls, w: jax.Array, v: jax.Array, b: jax.Array | None = None
  ) -> "UnitWeights":
    """One input kernel with units on its last axis (Flax/Haiku Dense or Conv),
    one output kernel with units on axis ``-2``, an optional ``(n,)`` bias."""
    return cls(
        (w,),
        () if b is None else (b,),
        (v,),
        (),
        (w.ndim - 1,),
        () if b is None else (0,),
        (v.ndim - 2,),
    )

  @property
  def num_units(self) -> int:
    return self.w[0].shape[self.w_axes[0]]

  def replace(self, **changes) -> "UnitWeights":
    return dataclasses.replace(self, **changes)


def scale_units(x: UnitWeights, *, w=1.0, b=1.0, v=1.0, c=1.0) -> UnitWeights:
  """Multiplies unit ``i``'s input slices by ``w[i]``, its input bias entries
  by ``b[i]``, its output slices by ``v[i]``, and the output biases by ``c``.

  Each factor is a scalar or an ``(n,)`` vector (``c``: a scalar), applied
  in at least float32. This is the one rescaling every function-preserving
  transformation (balancing, neuron balance, normalisation) and the prox
  use.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = UnitWeights.from_arrays(jnp.ones((2, 2)), jnp.ones((2, 1)))
    >>> scale_units(x, w=jnp.array([2., 3.]), v=0.5).w[0]
    Array([[2., 3.],
           [2., 3.]], dtype=float32)
  """

  def each(arrays, axes, factor):
    if isinstance(factor, float) and factor == 1.0:
      return arrays
    return tuple(
        scale(a, along(factor, a.ndim, ax)) for a, ax in zip(arrays, axes)
    )

  return x.replace(
      w=each(x.w, x.w_axes, w),
      b=each(x.b, x.b_axes, b),
      v=each(x.v, x.v_axes, v),
      c=each(x.c, (0,) * len(x.c), c),
  )


def where_units(keep: jax.Array, x: UnitWeights, y: UnitWeights) -> UnitWeights:
  """Unit ``i`` from ``x`` where ``keep[i]``, else from ``y`` (input slices,
  input biases and output slices; output biases, not unit-indexed, from ``x``).

  Examples:
    >>> import jax.numpy as jnp
    >>> x = UnitWeights.from_arrays(jnp.ones((2, 2)), jnp.ones((2, 1)))
    >>> y = UnitWeights.from_arrays(jnp.zeros((2, 2)), jnp.zeros((2, 1)))
    >>> where_units(jnp.array([True, False]), x, y).w[0]
    Array([[1., 0.],
           [1., 0.]], dtype=float32)
  """

  def each(xs, ys, axes):
    return tuple(
        jnp.where(along(keep, a.ndim, ax), a, b)
        for a, b, ax in zip(xs, ys, axes)
    )

  return x.replace(
      w=each(x.w, y.w, x.w_axes),
      b=each(x.b, y.b, x.b_axes),
      v=each(x.v, y.v, x.v_axes),
  )
