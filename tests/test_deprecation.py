"""Deprecated 0.1 names, argument orders and keywords (pathprox_jax._deprecation).

Every deprecated form must (1) emit a ``DeprecationWarning`` that points at
the caller's line (so Python's default filter shows it in ``__main__``),
and (2) give exactly (bitwise) the same numbers as the 0.2 call it stands for.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from tests.tree_utils import assert_bitwise, run


def _params(seed=0):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  return {"l0": {"kernel": f(3, 4), "bias": f(4)},
          "l1": {"kernel": f(4, 5) * 1e-2, "bias": f(5)},
          "l2": {"kernel": f(5, 3), "bias": f(3)},
          "l3": {"kernel": f(3, 2), "bias": f(2)}}


PARAMS = _params()
SPEC = ppx.UnitSpec.from_pairs(PARAMS, [("l0", "l1"), ("l2", "l3")])
GRADS = [jax.tree.map(lambda p, s=s: jnp.asarray(
    np.random.default_rng(s).normal(size=p.shape), jnp.float32), PARAMS)
         for s in (1, 2)]


def old_and_new_transforms():
  """``(id, deprecated factory, equivalent 0.2 factory, warning regex)``."""
  sgd = lambda tx: optax.chain(optax.sgd(0.3), tx)
  l1 = ppx.prox_l1
  return [
      ("path_prox", lambda: sgd(ppx.path_prox(0.5, 0.3, SPEC)),
       lambda: sgd(ppx.path_prox_update(0.3, 0.5, SPEC, balance=False)),
       r"path_prox\(weight_decay, learning_rate, units\) is now "
       r"path_prox_update\(learning_rate, weight_decay, units\)"),
      ("path_prox.balance_eps",
       lambda: sgd(ppx.path_prox(0.5, 0.3, SPEC, balance=True, eps=1e-3)),
       lambda: sgd(ppx.path_prox_update(0.3, 0.5, SPEC, min_norm=1e-3)),
       "is now path_prox_update"),
      ("proxgen_adam.order", lambda: ppx.proxgen_adam(0.1, l1, 0.3),
       lambda: ppx.proxgen_adam(0.1, 0.3, l1),
       r"proxgen_adam\(learning_rate, prox, reg\) is now "
       r"proxgen_adam\(learning_rate, weight_decay, prox\)"),
      ("proxgen_adam.reg", lambda: ppx.proxgen_adam(0.1, l1, reg=0.3),
       lambda: ppx.proxgen_adam(0.1, 0.3, l1), "proxgen_adam"),
      ("proxgen_adam.kw", lambda: ppx.proxgen_adam(0.1, reg=0.3, prox=l1),
       lambda: ppx.proxgen_adam(0.1, weight_decay=0.3, prox=l1), "proxgen_adam"),
      ("proxgen_adam.units",
       lambda: ppx.proxgen_adam(0.1, ppx.group_prox_from_units(SPEC), 30.0),
       lambda: ppx.proxgen_adam(0.1, 30.0, ppx.group_prox_from_units(SPEC)),
       "proxgen_adam"),
      ("proxgen_sgd.order",
       lambda: ppx.proxgen_sgd(0.1, l1, 0.3, momentum=0.9),
       lambda: ppx.proxgen_sgd(0.1, 0.3, l1, momentum=0.9), "proxgen_sgd"),
      ("proxgen_sgd.reg", lambda: ppx.proxgen_sgd(0.1, l1, reg=0.3),
       lambda: ppx.proxgen_sgd(0.1, 0.3, l1), "proxgen_sgd"),
      ("prox_sgd_two_stage.order", lambda: ppx.prox_sgd_two_stage(0.1, l1, 0.3),
       lambda: ppx.prox_sgd_two_stage(0.1, 0.3, l1), "prox_sgd_two_stage"),
      ("prox_sgd_two_stage.reg",
       lambda: ppx.prox_sgd_two_stage(0.1, l1, reg=0.3),
       lambda: ppx.prox_sgd_two_stage(0.1, 0.3, l1), "prox_sgd_two_stage"),
      ("proxquant.reg", lambda: ppx.proxquant(0.1, reg=0.3, q=0.5),
       lambda: ppx.proxquant(0.1, 0.3, q=0.5),
       r"proxquant\(\.\.\., reg=\.\.\.\) is now proxquant\(\.\.\., "
       r"weight_decay=\.\.\.\)"),
      ("subgradient_adam.reg", lambda: ppx.subgradient_adam(0.1, reg=0.3, q=0.5),
       lambda: ppx.subgradient_adam(0.1, 0.3, q=0.5), "subgradient_adam"),
      ("lq_subgradient.reg",
       lambda: optax.chain(ppx.lq_subgradient(reg=0.3), optax.sgd(0.1)),
       lambda: optax.chain(ppx.lq_subgradient(0.3), optax.sgd(0.1)),
       "lq_subgradient"),
  ]


TRANSFORM_CASES = old_and_new_transforms()


def run_both(tx_a, tx_b, params, grads_seq):
  """Both transforms from the same start, in one jitted call: ``[(params,
  state)] * 2`` after every gradient of ``grads_seq``."""
  @jax.jit
  def f(params, grads_seq):
    out = []
    for tx in (tx_a, tx_b):
      p, s = params, tx.init(params)
      for g in grads_seq:
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
      out.append((p, s))
    return out
  return f(params, grads_seq)


@pytest.mark.parametrize("old, new, match", [c[1:] for c in TRANSFORM_CASES],
                         ids=[c[0] for c in TRANSFORM_CASES])
def test_deprecated_transform_warns_and_matches_the_new_call(old, new, match):
  with pytest.warns(DeprecationWarning, match=match):
    tx_old = old()
  with warnings.catch_warnings():
    warnings.simplefilter("error", DeprecationWarning)   # the new call is clean
    tx_new = new()
  got, exp = run_both(tx_old, tx_new, PARAMS, GRADS)
  assert_bitwise(got, exp)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(got[0]), jax.tree.leaves(PARAMS)))


def _warning_sites(fn):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fn()
  return [(w.category, w.filename) for w in caught]


@pytest.mark.parametrize("old", [
    pytest.param(c[1], id=c[0]) for c in TRANSFORM_CASES])
def test_deprecation_warning_points_at_the_caller(old):
  sites = _warning_sites(old)
  assert sites and all(c is DeprecationWarning for c, _ in sites)
  assert {f for _, f in sites} == {__file__}


def test_path_prox_keeps_the_old_default_balance_false():
  with pytest.warns(DeprecationWarning):
    old = optax.chain(optax.sgd(0.3), ppx.path_prox(0.5, 0.3, SPEC))
  balanced = optax.chain(optax.sgd(0.3), ppx.path_prox_update(0.3, 0.5, SPEC))
  a, b = run(old, PARAMS, GRADS)[0], run(balanced, PARAMS, GRADS)[0]
  assert not np.allclose(a["l1"]["kernel"], b["l1"]["kernel"])


def test_path_prox_params_old_order_and_eps():
  new = ppx.path_prox_params(PARAMS, 0.3, 0.5, SPEC, min_norm=1e-3)
  with pytest.warns(DeprecationWarning, match=r"path_prox_params\(params, units, "
                    r"weight_decay, learning_rate\) is now path_prox_params\("
                    r"params, learning_rate, weight_decay, units\)"):
    old = ppx.path_prox_params(PARAMS, SPEC, 0.5, 0.3, min_norm=1e-3)
  assert_bitwise(old, new)
  with pytest.warns(DeprecationWarning, match=r"path_prox_params\(\.\.\., eps=\.\.\.\) "
                    r"is now path_prox_params\(\.\.\., min_norm=\.\.\.\)"):
    old = ppx.path_prox_params(PARAMS, 0.3, 0.5, SPEC, eps=1e-3)
  assert_bitwise(old, new)
  # under jit too (the order is resolved at trace time)
  with pytest.warns(DeprecationWarning):
    old = jax.jit(lambda p: ppx.path_prox_params(p, SPEC, 0.5, 0.3))(PARAMS)
  assert_bitwise(old, jax.jit(lambda p: ppx.path_prox_params(
      p, 0.3, 0.5, SPEC))(PARAMS))
  sites = _warning_sites(lambda: ppx.path_prox_params(PARAMS, SPEC, 0.5, 0.3))
  assert [f for _, f in sites] == [__file__]


def test_project_unit_sphere_array_form():
  k, b = PARAMS["l0"]["kernel"], PARAMS["l0"]["bias"]
  x = ppx.UnitWeights.from_arrays(k, PARAMS["l1"]["kernel"], b)
  new = ppx.project_unit_sphere(x)
  with pytest.warns(DeprecationWarning, match=r"project_unit_sphere\(kernel, "
                    r"bias\) is deprecated"):
    kk, bb = ppx.project_unit_sphere(k, b)
  assert_bitwise((kk, bb), (new.w[0], new.b[0]))
  with pytest.warns(DeprecationWarning):
    kk, none = ppx.project_unit_sphere(k)
  assert none is None
  assert_bitwise(kk, new.w[0])
  new2 = ppx.project_unit_sphere(x, include_bias_in_norm=True, min_norm=0.5)
  with pytest.warns(DeprecationWarning):
    kk, bb = ppx.project_unit_sphere(k, bias=b, include_bias=True, eps=0.5)
  assert_bitwise((kk, bb), (new2.w[0], new2.b[0]))
  conv = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3, 2, 4)),
                     jnp.float32)
  with pytest.warns(DeprecationWarning):
    kk, _ = ppx.project_unit_sphere(conv, None)
  exp = ppx.project_unit_sphere(ppx.UnitWeights.from_arrays(
      conv, jnp.zeros((3, 3, 4, 1))))
  assert_bitwise(kk, exp.w[0])
  assert [f for _, f in _warning_sites(lambda: ppx.project_unit_sphere(k, b))] \
      == [__file__]


def test_prox_path_norm_old_keywords():
  x = ppx.UnitWeights.from_arrays(PARAMS["l0"]["kernel"], PARAMS["l1"]["kernel"],
                                  PARAMS["l0"]["bias"])
  new = ppx.prox_path_norm(x, 0.5, 0.02, include_bias_in_norm=True, min_norm=0.1)
  with pytest.warns(DeprecationWarning) as caught:
    old = ppx.prox_path_norm(x, 0.5, 0.02, include_bias=True, eps=0.1)
  messages = sorted(str(w.message) for w in caught)
  assert any("include_bias=...) is now prox_path_norm(..., include_bias_in_norm"
             in m for m in messages)
  assert any("eps=...) is now prox_path_norm(..., min_norm" in m for m in messages)
  assert_bitwise(old, new)
  assert {f for _, f in _warning_sites(
      lambda: ppx.prox_path_norm(x, 0.5, eps=0.1))} == {__file__}


def test_inject_hyperparams_with_the_old_reg_keyword():
  factory = optax.inject_hyperparams(ppx.proxgen_adam,
                                     static_args=("prox", "mask"))
  with pytest.warns(DeprecationWarning, match="proxgen_adam"):
    old = factory(learning_rate=0.02, prox=ppx.prox_l1, reg=0.1)
    got = run(old, PARAMS, GRADS)
  new = factory(learning_rate=0.02, prox=ppx.prox_l1, weight_decay=0.1)
  exp = run(new, PARAMS, GRADS)
  assert_bitwise(got[0], exp[0])
  assert float(got[1].hyperparams["reg"]) == pytest.approx(0.1)


def test_ambiguous_calls_raise_instead_of_guessing():
  with pytest.raises(TypeError, match="pass weight_decay \\(reg is its 0.1 "
                     "name\\), not both"):
    ppx.proxgen_adam(0.1, 0.3, ppx.prox_l1, reg=0.3)
  with pytest.raises(TypeError, match="unexpected keyword arguments \\['foo'\\]"):
    ppx.proxquant(0.1, 0.3, foo=1)
  x = ppx.UnitWeights.from_arrays(jnp.ones((2, 2)), jnp.ones((2, 1)))
  with pytest.raises(TypeError, match="unexpected keyword arguments"):
    ppx.prox_path_norm(x, 0.1, min_eps=1.0)
  with pytest.raises(TypeError, match="unexpected keyword arguments"):
    ppx.path_prox_params(PARAMS, 0.3, 0.5, SPEC, epsilon=1.0)
