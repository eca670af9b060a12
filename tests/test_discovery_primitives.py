"""Discovery's primitive table: complete entries, used by every traversal, one
decision per primitive for homogeneity (rules) and balancing (chains)."""

from __future__ import annotations

import ast
import inspect

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from pathprox_jax.discovery import chains, discover, graph, labels, rules
from pathprox_jax.discovery.discover import discover_groups
from pathprox_jax.discovery.primitives import (
    PRIMITIVES,
    Homogeneity,
    Moves,
    Primitive,
    Scale,
)

PARAMS = {
    k: jnp.ones(s)
    for k, s in (
        ("a", (3, 4)),
        ("b", (4, 5)),
        ("bias", (5,)),
        ("c", (5, 6)),
        ("d", (6, 2)),
    )
}
X = jnp.ones((2, 3))


def four_layers(act):
  """``a -> act -> b + bias -> act -> c -> act -> d``: groups ``a -> b`` and
  ``c -> d``, linked when ``act`` is ReLU-like."""

  def fn(p, x):
    h = act(act(x @ p["a"]) @ p["b"] + p["bias"])
    return act(h @ p["c"]) @ p["d"]

  return fn


def found(fn, params=PARAMS, x=X):
  groups, links, findings = discover_groups(fn, params, (x,))
  return (
      [g.describe() for g in groups],
      links,
      {f.path: f.reason for f in findings},
  )


def test_every_entry_is_complete():
  for name, p in PRIMITIVES.items():
    assert p.name == name
    assert isinstance(p.moves, Moves) and p.moves is not Moves.OPAQUE, name
    assert isinstance(p.homogeneity, Homogeneity), name
    assert p.homogeneity is not Homogeneity.UNKNOWN, name
    assert isinstance(p.scale, Scale), name
    assert bool(p.reason) == (p.homogeneity is Homogeneity.BROKEN), name
    assert (p.layout is not None) == (p.moves is Moves.LAYOUT), name
    if p.homogeneity is Homogeneity.BROKEN:
      assert p.scale is Scale.BLOCKS, name
  # Call primitives are inlined by the tracer, never looked up.
  assert not set(graph._CALLS) & set(PRIMITIVES)


@pytest.mark.parametrize("module", [labels, rules, chains, discover])
def test_traversal_code_names_no_primitive(module):
  """Every decision goes through the table: no string in the code of the
  traversal modules is a primitive's name."""
  strings = {
      n.value
      for n in ast.walk(ast.parse(inspect.getsource(module)))
      if isinstance(n, ast.Constant) and isinstance(n.value, str)
  }
  assert not strings & set(PRIMITIVES)


LAYOUT_CASES = [
    lambda x: x.astype(jnp.int32),
    jnp.copy,
    lambda x: jax.lax.reduce_precision(x, 8, 7),
    lambda x: jax.lax.optimization_barrier((x, x[::-1])),
    lambda x: x.reshape(4, 3).T,
    lambda x: jnp.broadcast_to(x[:, None], (3, 2, 4)),
    lambda x: jax.lax.squeeze(x[None], (0,)),
    lambda x: x[1:, ::2],
    lambda x: jax.lax.dynamic_slice(x, (2, 1), (2, 2)),  # start clamped to 1
    lambda x: jnp.split(x, [1, 3], axis=1),
    lambda x: jnp.concatenate([x, x[:, ::-1]], 0),
    lambda x: jax.lax.pad(x, -1.0, [(1, -1, 1), (2, 0, 0)]),
]


def test_layout_entries_move_entries_as_jax_does():
  x, seen = jnp.arange(12.0).reshape(3, 4), set()
  for f in LAYOUT_CASES:
    g = graph.trace(lambda p, f=f: f(p), x, ())
    env = {v: np.asarray(x) for v in g.params}
    for node in g.nodes:
      seen.add(node.prim)
      args = [a.value if isinstance(a, graph.Lit) else env[a] for a in node.ins]
      env.update(zip(node.outs, labels.apply_layout(node, args)))
    for out, want in zip(g.outputs, jax.tree.leaves(f(x))):
      np.testing.assert_array_equal(env[out], want)
  layout = {n for n, p in PRIMITIVES.items() if p.moves is Moves.LAYOUT}
  assert layout - seen == {"copy_p"}  # copy_p: not bound by this JAX version


@pytest.mark.parametrize(
    "cmp",
    [
        jnp.greater,
        jnp.greater_equal,
        jnp.less,
        jnp.less_equal,
        jnp.equal,
        jnp.not_equal,
    ],
)
def test_comparisons_decide_alike_in_rules_and_chains(cmp):
  fn = four_layers(lambda z: jnp.where(cmp(z, 0.0), z, 0.0))
  assert found(fn)[:2] == (["a -> b", "c -> d"], (True,))
  with pytest.raises(ValueError, match="nonzero constant"):
    found(four_layers(lambda z: jnp.where(cmp(z, 1.0), z, 0.0)))


def test_argmax_is_scale_free_unless_it_reduces_over_the_units():
  def fn(p, x, axis):
    h1 = jax.nn.relu(x @ p["a"])
    h2 = jax.nn.relu(h1 @ p["b"] + p["bias"])
    h3 = jax.nn.relu(h2 @ p["c"])
    return h3 @ p["d"], jnp.argmax(h2, axis), jnp.argmax(h3, axis)

  assert found(lambda p, x: fn(p, x, 0))[:2] == (["a -> b", "c -> d"], (True,))
  groups, _, reasons = found(lambda p, x: fn(p, x, 1))
  assert groups == ["a -> b"] and "unit axis" in reasons["c"]


def test_split_passes_units_and_the_balancing_scale():
  def fn(p, x):
    h = jax.nn.relu(jax.nn.relu(x @ p["a"]) @ p["b"] + p["bias"])
    u, v = jnp.split(h, [2], axis=1)
    return jax.nn.relu(jnp.concatenate([v, u], 1) @ p["c"]) @ p["d"]

  assert found(fn)[:2] == (["a -> b", "c -> d"], (True,))


def test_a_relu_written_as_a_product_with_its_comparison():
  assert found(four_layers(lambda z: z * (z > 0)))[:2] == (
      ["a -> b", "c -> d"],
      (True,),
  )


def _primitive(name, impl):
  prim = jax.extend.core.Primitive(name)
  prim.def_impl(impl)
  prim.def_abstract_eval(lambda aval: aval)
  return prim


def test_an_activation_is_one_entry(monkeypatch):
  relu = _primitive("test_relu", lambda z: jnp.maximum(z, 0))
  fn = four_layers(relu.bind)
  with pytest.raises(ValueError, match="`test_relu` is not an operation"):
    found(fn)
  monkeypatch.setitem(
      PRIMITIVES,
      "test_relu",
      Primitive(
          "test_relu", Moves.ELEMENTWISE, Homogeneity.RECTIFIER, Scale.PASSES
      ),
  )
  assert found(fn)[:2] == (["a -> b", "c -> d"], (True,))
  monkeypatch.setitem(
      PRIMITIVES,
      "test_relu",
      Primitive(
          "test_relu",
          Moves.ELEMENTWISE,
          Homogeneity.BROKEN,
          Scale.BLOCKS,
          reason="a made-up GELU",
      ),
  )
  with pytest.raises(ValueError, match="a made-up GELU is not positively"):
    found(fn)


def test_a_layout_op_is_one_entry(monkeypatch):
  flip = _primitive("test_flip", lambda z: z[..., ::-1])
  params = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
  fn = lambda p, x: flip.bind(jax.nn.relu(flip.bind(x @ p["a"]))) @ p["b"]
  with pytest.raises(ValueError, match="`test_flip` is not an operation"):
    discover_groups(fn, params, (X,))
  monkeypatch.setitem(
      PRIMITIVES,
      "test_flip",
      Primitive(
          "test_flip",
          Moves.LAYOUT,
          Homogeneity.KEPT,
          Scale.PASSES,
          layout=lambda params, z: z[..., ::-1],
      ),
  )
  groups, _, _ = discover_groups(fn, params, (X,))
  assert [g.describe() for g in groups] == ["a -> b"]


def test_producer_is_named():
  g = graph.trace(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 4))}, (X,))
  p = rules.producer(rules.Context(g), 0)
  assert (p.path, p.num_units, p.labels.shape, p.out_labels.shape) == (
      "w",
      4,
      (3, 4),
      (2, 4),
  )
  np.testing.assert_array_equal(p.labels[0], np.arange(4))
