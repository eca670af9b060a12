"""Projection of each unit's input weights onto the unit sphere."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from pathprox_jax._numerics import safe_inverse, safe_sqrt, sums_of_squares
from pathprox_jax.units.weights import UnitWeights, scale_units


def project_unit_sphere(x: UnitWeights, *args, include_bias_in_norm: bool = False,
                        min_norm: float = 1e-12,
                        norms: jax.Array | None = None, **deprecated
                        ) -> UnitWeights:
  r"""Projects every unit's input weights onto the unit sphere.

  ``w_i <- w_i / ||w_i||``, the prox of the sphere indicator ``I_S``
  (PathProx, Lemma 4.2): ``argmin_{||u|| = 1} ||u - w_i|| = w_i / ||w_i||``.
  ``||w_i||`` sums over every input slice; the unit's input-bias entries
  are divided by the same norm, so the unit keeps its kink. Units with
  ``||w_i|| <= min_norm`` (an all-zero column) are left unchanged: zeros
  stay zero and nothing is NaN. Output weights are untouched.

  Args:
    x: a group's :class:`~pathprox_jax.UnitWeights`.
    include_bias_in_norm: project ``[w_i; b_i]`` (``||[w_i; b_i]|| = 1``).
    min_norm: norms at or below this are not projected.
    norms: optional precomputed kernel-only ``||w_i||``.

  Returns:
    The projected :class:`~pathprox_jax.UnitWeights`.

  Examples:
    >>> x = UnitWeights.from_arrays(jnp.array([[3., 0.], [4., 0.]]),
    ...                             jnp.ones((2, 1)), b=jnp.array([10., 1.]))
    >>> y = project_unit_sphere(x)
    >>> y.w[0], y.b[0]
    (Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32), Array([2., 1.], dtype=float32))

  References:
    Yang et al., PathProx, arXiv:2210.03069, Algorithm 4.1 and Lemma 4.2;
    ``docs/algorithms.md``, "The PathProx step".
  """
  if not isinstance(x, UnitWeights):      # the 0.1 form (kernel, bias)
    warnings.warn("project_unit_sphere(kernel, bias) is deprecated; pass "
                  "UnitWeights.from_arrays(kernel, v, b) (removed in 0.3).",
                  DeprecationWarning, stacklevel=2)
    kernel = x
    bias = args[0] if args else deprecated.pop("bias", None)
    min_norm = deprecated.pop("eps", min_norm)
    include_bias_in_norm = deprecated.pop("include_bias", include_bias_in_norm)
    y = project_unit_sphere(
        UnitWeights.from_arrays(kernel, jnp.zeros((kernel.shape[-1], 0)), bias),
        include_bias_in_norm=include_bias_in_norm, min_norm=min_norm,
        norms=norms)
    return y.w[0], (y.b[0] if bias is not None else None)
  if args or deprecated:
    raise TypeError("project_unit_sphere takes one UnitWeights and keyword "
                    f"options; got extra {args or sorted(deprecated)}.")
  if norms is None:
    norms = safe_sqrt(sums_of_squares(x.w, x.w_axes))
  if include_bias_in_norm and x.b:
    norms = jnp.sqrt(jnp.square(norms) + sums_of_squares(x.b, x.b_axes))
  inv = safe_inverse(norms, min_norm)
  return scale_units(x, w=inv, b=inv)
