"""Projection of each unit's input weights onto the unit sphere."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pathprox_jax.prox.group import accumulation_dtype, group_norms


def project_unit_sphere(kernel: jax.Array, bias: jax.Array | None = None, *,
                        include_bias: bool = False, eps: float = 1e-12,
                        norms: jax.Array | None = None
                        ) -> tuple[jax.Array, jax.Array | None]:
  r"""Projects each unit's input weights onto the unit sphere.

  PathProx paper, Algorithm 4.1: ``w_i <- argmin_{||w||=1} ||w - y_i|| =
  y_i / ||y_i||`` (the prox of the sphere indicator ``I_S`` in Lemma 4.2).
  Unit ``i`` is ``kernel[..., i]`` (Dense ``(in, n)`` or Conv
  ``(kh, kw, in, n)``); its bias entry is divided by the same norm so the
  unit keeps its kink. Units with norm ``<= eps`` (e.g. an all-zero column)
  are left unchanged, so zeros stay zero and nothing is NaN.

  Args:
    kernel: input kernel of the group, units on the last axis.
    bias: optional bias of the input layer, shape ``(n,)``.
    include_bias: include ``b_i`` in the norm (``||[y_i; b_i]|| = 1``).
    eps: norms at or below this are not projected.
    norms: optional precomputed kernel-only norms ``group_norms(kernel, -1)``.

  Returns:
    ``(kernel, bias)`` after projection (bias ``None`` if not given).

  Examples:
    >>> k, b = project_unit_sphere(jnp.array([[3., 0.], [4., 0.]]),
    ...                            jnp.array([10., 1.]))
    >>> k
    Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32)
    >>> b
    Array([2., 1.], dtype=float32)
  """
  acc = accumulation_dtype(kernel.dtype)
  if norms is None:
    norms = group_norms(kernel, kernel.ndim - 1)
  if include_bias and bias is not None:
    norms = jnp.sqrt(jnp.square(norms) + jnp.square(bias.astype(acc)))
  inv = jnp.where(norms > eps, 1.0 / jnp.where(norms > eps, norms, 1.0), 1.0)
  kernel = (kernel.astype(acc) * inv).astype(kernel.dtype)
  if bias is not None:
    bias = (bias.astype(acc) * inv).astype(bias.dtype)
  return kernel, bias
