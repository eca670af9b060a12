"""A model as a flat dataflow graph: ``fn(params, *inputs)`` traced to a jaxpr
with abstract inputs (no FLOPs), every call (``jit``, ``custom_jvp``,
``custom_vjp``, ``remat``) inlined, every parameter leaf named by its path."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.extend.core  # jax.extend.core.Literal
import numpy as np

from pathprox_jax.units.paths import path_str

#: Primitives whose sub-jaxpr computes exactly their outputs from their inputs.
_CALLS = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


@dataclasses.dataclass(frozen=True)
class Lit:
  """A constant operand (literal or closed-over constant) with its value."""

  value: Any


@dataclasses.dataclass
class Node:
  """One primitive application: ``outs = prim(*ins, **params)``.

  ``ins`` are variable ids or :class:`Lit`; ``where`` names the enclosing
  calls (``"relu"``, ``"silu"``), for error messages.
  """

  prim: str
  params: dict
  ins: list
  outs: list[int]
  where: tuple[str, ...]


@dataclasses.dataclass
class Graph:
  """The flat graph of a traced model."""

  nodes: list[Node]
  shapes: dict[int, tuple[int, ...]]
  params: dict[int, str]  # input variable id -> leaf path
  leaf_shapes: dict[str, tuple[int, ...]]
  outputs: list  # variable ids (or Lit) of the outputs
  uses: dict[int, list[int]]  # variable id -> indices of nodes using it

  def producer(self) -> dict[int, int]:
    return {o: k for k, n in enumerate(self.nodes) for o in n.outs}


def trace(fn: Callable, params: Any, inputs: tuple) -> Graph:
  """Traces ``fn(params, *inputs)`` abstractly and flattens it.

  Raises:
    ValueError: if tracing fails (params or inputs of the wrong structure or
      shape), with the error ``fn`` raised.
  """
  p_leaves, p_def = jax.tree_util.tree_flatten_with_path(params)
  x_leaves, x_def = jax.tree_util.tree_flatten(inputs)
  # Traced: the inexact arrays of params (the weights) and the arrays of
  # inputs; everything else (functions, None, Python scalars, integer,
  # boolean and PRNG-key leaves of params) is closed over, as a constant.
  p_traced = [_is_weight(x) for _, x in p_leaves]
  x_traced = [_is_array(x) for x in x_leaves]
  p_abstract = [_abstract(x) for (_, x), t in zip(p_leaves, p_traced) if t]
  x_abstract = [_abstract(x) for x, t in zip(x_leaves, x_traced) if t]

  def flat_fn(ps, xs):
    ps, xs = iter(ps), iter(xs)
    p = p_def.unflatten(
        [next(ps) if t else x for (_, x), t in zip(p_leaves, p_traced)]
    )
    x = x_def.unflatten(
        [next(xs) if t else a for a, t in zip(x_leaves, x_traced)]
    )
    return fn(p, *x)

  try:
    closed = jax.make_jaxpr(flat_fn)(p_abstract, x_abstract)
  except Exception as e:  # noqa: BLE001 - re-raised with context
    shapes = jax.tree.map(lambda a: tuple(np.shape(a)), inputs)
    raise ValueError(
        "discover could not trace fn(params, *example_inputs) with "
        f"example input shapes {shapes}: {type(e).__name__}: {e}"
    ) from e
  flat = [kx for kx, t in zip(p_leaves, p_traced) if t]
  n_params = len(flat)
  graph = Graph([], {}, {}, {}, [], {})
  counter = iter(range(1 << 62))
  in_ids = []
  for i, v in enumerate(closed.jaxpr.invars):
    vid = next(counter)
    graph.shapes[vid] = tuple(v.aval.shape)
    in_ids.append(vid)
    if i < n_params:
      path = path_str(flat[i][0])
      graph.params[vid] = path
      graph.leaf_shapes[path] = tuple(v.aval.shape)
  env_consts = [_const(c) for c in closed.consts]
  graph.outputs = _inline(closed.jaxpr, in_ids, env_consts, graph, counter, ())
  for k, n in enumerate(graph.nodes):
    for a in n.ins:
      if not isinstance(a, Lit):
        graph.uses.setdefault(a, []).append(k)
  return graph


class _Opaque:
  """An entry of a constant discovery cannot read (a PRNG key): truthy, so
  never taken for a zero."""

  def __repr__(self) -> str:
    return "<opaque>"


_OPAQUE = _Opaque()


def _dtype(x) -> Any:
  return getattr(x, "dtype", None)


def _is_array(x) -> bool:
  return isinstance(
      x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)
  )


def _is_weight(x) -> bool:
  """An array of a floating or complex dtype (not a PRNG key)."""
  if not _is_array(x):
    return False
  dtype = _dtype(x)
  return not jax.dtypes.issubdtype(
      dtype, jax.dtypes.prng_key
  ) and jax.dtypes.issubdtype(dtype, np.inexact)


def _abstract(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(np.shape(x), _dtype(x))


def _const(c) -> Lit:
  """A constant operand; a PRNG key (or anything else NumPy cannot read) is
  opaque: its shape, with entries no rule can interpret."""
  dtype = _dtype(c)
  if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    try:
      return Lit(np.asarray(c))
    except Exception:  # noqa: BLE001 - any unreadable constant is opaque
      pass
  return Lit(np.full(np.shape(c), _OPAQUE, dtype=object))


def _inline(jaxpr, ins, consts, graph: Graph, counter, where) -> list:
  env: dict[Any, Any] = {}
  for v, a in zip(jaxpr.constvars, consts):
    env[v] = a
  for v, a in zip(jaxpr.invars, ins):
    env[v] = a

  def read(atom):
    if isinstance(atom, jax.extend.core.Literal):
      return _const(atom.val)
    return env[atom]

  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    args = [read(a) for a in eqn.invars]
    sub = eqn.params.get(_CALLS.get(name, ""), None)
    if sub is not None:
      inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
      inner_consts = (
          [_const(c) for c in sub.consts] if hasattr(sub, "consts") else []
      )
      debug = getattr(inner, "debug_info", None)
      label = (
          eqn.params.get("name") or getattr(debug, "func_name", None) or name
      )
      outs = _inline(
          inner, args, inner_consts, graph, counter, where + (str(label),)
      )
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
      continue
    out_ids = []
    for v in eqn.outvars:
      vid = next(counter)
      graph.shapes[vid] = tuple(getattr(v.aval, "shape", ()))
      env[v] = vid
      out_ids.append(vid)
    graph.nodes.append(Node(name, dict(eqn.params), args, out_ids, where))
  return [read(v) for v in jaxpr.outvars]
