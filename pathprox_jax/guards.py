"""Opt-in numerical guard: skip optimizer steps that would write NaN or inf.

A single bad batch (a NaN pixel, an overflow in a float16 forward pass)
produces non-finite gradients; any optax transform then writes them into the
parameters, and a proximal step cannot repair a NaN (``NaN > tau`` is False,
so a NaN unit is neither projected nor zeroed). :func:`skip_nonfinite` wraps
an optimizer so that such a step changes nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SkipNonFiniteState(NamedTuple):
  """State of :func:`skip_nonfinite`.

  Attributes:
    inner_state: the wrapped optimizer's state, as of the last applied step.
    notfinite_count: consecutive skipped steps so far (0 after a good step).
    total_notfinite: skipped steps since ``init``.
    last_finite: whether the most recent step was applied.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = skip_nonfinite(optax.sgd(0.1))
    >>> params = {"w": jnp.ones(2)}
    >>> _, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, tx.init(params), params)
    >>> int(state.notfinite_count), bool(state.last_finite)
    (1, False)
  """

  inner_state: Any
  notfinite_count: jax.Array
  total_notfinite: jax.Array
  last_finite: jax.Array


def _all_finite(tree: Any) -> jax.Array:
  """True iff every inexact leaf of ``tree`` is finite (integer leaves pass)."""
  checks = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def skip_nonfinite(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that a step with any NaN or inf is skipped entirely.

  Each ``update`` runs ``inner`` and applies its result only if the incoming
  gradients, the outgoing updates and the new inner state are all finite.
  Otherwise it returns zero updates and keeps the previous inner state, so
  the parameters, momentum buffers and step counts (hence schedules) are
  exactly as if the step had not happened. The decision is a ``jnp.where``
  inside the compiled step: no host round-trip, and it works unchanged on
  sharded parameters.

  Unlike ``optax.apply_if_finite``, which checks only the incoming gradients
  and gives up after ``max_consecutive_errors`` skips (then writing the NaN
  into the parameters), this guard also catches non-finite values created
  *inside* the optimizer (e.g. an overflow in a float16 step) and never gives
  up; watch ``state.notfinite_count`` to stop a run that keeps failing.

  Args:
    inner: the optimizer to guard, e.g. :func:`~pathprox_jax.pathprox`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with
    :class:`SkipNonFiniteState`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = skip_nonfinite(optax.sgd(0.1))
    >>> params = {"w": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([jnp.nan, 1.])}, state, params)
    >>> optax.apply_updates(params, updates)["w"]
    Array([1., 1.], dtype=float32)
    >>> int(state.total_notfinite)
    1
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SkipNonFiniteState(
        inner_state=inner.init(params),
        notfinite_count=jnp.zeros([], jnp.int32),
        total_notfinite=jnp.zeros([], jnp.int32),
        last_finite=jnp.array(True),
    )

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(
        updates, state.inner_state, params, **extra_args
    )
    ok = (
        _all_finite(updates) & _all_finite(new_updates) & _all_finite(new_inner)
    )
    new_updates = jax.tree.map(
        lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates
    )
    new_inner = jax.tree.map(
        lambda new, old: jnp.where(ok, new, old), new_inner, state.inner_state
    )
    return new_updates, SkipNonFiniteState(
        inner_state=new_inner,
        notfinite_count=jnp.where(
            ok, 0, optax.safe_increment(state.notfinite_count)
        ),
        total_notfinite=jnp.where(
            ok,
            state.total_notfinite,
            optax.safe_increment(state.total_notfinite),
        ),
        last_finite=ok,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
