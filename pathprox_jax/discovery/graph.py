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
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), jax.numpy.result_type(a)),
      (params, inputs),
  )
  try:
    closed = jax.make_jaxpr(lambda p, xs: fn(p, *xs))(*abstract)
  except Exception as e:  # noqa: BLE001 - re-raised with context
    shapes = jax.tree.map(lambda a: tuple(np.shape(a)), inputs)
    raise ValueError(
        "discover could not trace fn(params, *example_inputs) with "
        f"example input shapes {shapes}: {type(e).__name__}: {e}"
    ) from e
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
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
  env_consts = [Lit(np.asarray(c)) for c in closed.consts]
  graph.outputs = _inline(closed.jaxpr, in_ids, env_consts, graph, counter, ())
  for k, n in enumerate(graph.nodes):
    for a in n.ins:
      if not isinstance(a, Lit):
        graph.uses.setdefault(a, []).append(k)
  return graph


def _inline(jaxpr, ins, consts, graph: Graph, counter, where) -> list:
  env: dict[Any, Any] = {}
  for v, a in zip(jaxpr.constvars, consts):
    env[v] = a
  for v, a in zip(jaxpr.invars, ins):
    env[v] = a

  def read(atom):
    if isinstance(atom, jax.extend.core.Literal):
      return Lit(np.asarray(atom.val))
    return env[atom]

  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    args = [read(a) for a in eqn.invars]
    sub = eqn.params.get(_CALLS.get(name, ""), None)
    if sub is not None:
      inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
      inner_consts = (
          [Lit(np.asarray(c)) for c in sub.consts]
          if hasattr(sub, "consts")
          else []
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
