"""Argument checks: pathprox_jax._checks, and construction / init / update errors of every transform.

Hostile inputs must fail early (at construction, else at ``init``, else at
trace time of ``update``) with a ``ValueError`` / ``TypeError`` that names the
argument or the parameter path.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from pathprox_jax._checks import (check_int, check_number, check_schedule,
                                  check_units)


def _params(units=4, fan_in=3, out=2, dtype=jnp.float32, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"l0": {"kernel": jax.random.normal(k1, (fan_in, units), dtype),
                 "bias": jax.random.normal(k2, (units,), dtype)},
          "l1": {"kernel": jax.random.normal(k3, (units, out), dtype),
                 "bias": jnp.zeros((out,), dtype)}}


SPEC = ppx.UnitSpec.from_pairs(_params(), [("l0", "l1")])


def _grads(params):
  return jax.tree.map(jnp.ones_like, params)


def _project(groups):
  return [ppx.project_unit_sphere(x) for x in groups]


# Every public transform, ready for init/update on _params().
FACTORIES = {
    "pathprox": lambda: ppx.pathprox(0.1, 1e-3, SPEC),
    "pathprox_momentum": lambda: ppx.pathprox(0.1, 1e-3, SPEC, momentum=0.9),
    "path_prox_update": lambda: optax.chain(
        optax.sgd(0.1), ppx.path_prox_update(0.1, 1e-3, SPEC)),
    "pathprox_gradient": lambda: ppx.pathprox_gradient(0.1, 1e-3, SPEC),
    "layerwise_balance": lambda: optax.chain(optax.sgd(0.1),
                                             ppx.layerwise_balance(SPEC)),
    "map_units": lambda: optax.chain(optax.sgd(0.1),
                                     ppx.map_units(SPEC, _project)),
    "adaptive_pathprox": lambda: ppx.adaptive_pathprox(0.1, 1e-3, SPEC),
    "proxgen_adam_units": lambda: ppx.proxgen_adam(
        0.1, 1e-3, ppx.group_prox_from_units(SPEC)),
    "proxgen_sgd_units": lambda: ppx.proxgen_sgd(
        0.1, 1e-3, ppx.group_prox_from_units(SPEC)),
    "proxgen_adam": lambda: ppx.proxgen_adam(0.1, 1e-3, ppx.prox_l1),
    "proxgen_sgd": lambda: ppx.proxgen_sgd(0.1, 1e-3, ppx.prox_l1,
                                           momentum=0.9),
    "prox_sgd_two_stage": lambda: ppx.prox_sgd_two_stage(0.1, 1e-3,
                                                         ppx.prox_l1),
    "proxquant": lambda: ppx.proxquant(0.1, 1e-3),
    "subgradient_adam": lambda: ppx.subgradient_adam(0.1, 1e-3),
    "lq_subgradient": lambda: optax.chain(ppx.lq_subgradient(1e-3),
                                          optax.sgd(0.1)),
}
ALL = list(FACTORIES)
# Transforms whose init validates the params against the UnitSpec.
SPEC_INIT = ["pathprox", "pathprox_momentum", "path_prox_update",
             "layerwise_balance", "map_units", "adaptive_pathprox",
             "proxgen_adam_units", "proxgen_sgd_units"]

# Transforms whose update validates params and updates against the spec.
SPEC_UPDATE = ["pathprox", "pathprox_momentum", "path_prox_update",
               "pathprox_gradient", "layerwise_balance", "map_units",
               "adaptive_pathprox"]


# ------------------------------------------------------------ check_number
@pytest.mark.parametrize("value", [0, 0.0, -0.0, 3, 1e300, np.float32(2.0),
                                   np.int8(3), jnp.float32(0.5), np.array(1.0),
                                   jnp.bfloat16(1.0)])
def test_check_number_accepts_non_negative_finite_scalars(value):
  check_number("x", value)


@pytest.mark.parametrize("value", [-1e-300, -1, math.inf, -math.inf, math.nan,
                                   np.float32("nan")])
def test_check_number_default_interval_message(value):
  with pytest.raises(ValueError, match=r"^x must be a non-negative finite "
                     r"number; got (-?inf|nan|-1e-300|-1\.0)\.$"):
    check_number("x", value)


@pytest.mark.parametrize("value, kw, msg", [
    (1.0, dict(lo=0.0, hi=1.0), r"b1 must lie in \[0\.0, 1\.0\); got 1\.0"),
    (-0.5, dict(lo=0.0, hi=1.0), r"b1 must lie in \[0\.0, 1\.0\); got -0\.5"),
    (0.0, dict(lo_open=True), r"b1 must lie in \(0\.0, inf\); got 0\.0"),
    (math.inf, dict(lo_open=True), r"b1 must lie in \(0\.0, inf\); got inf"),
    (2.0, dict(lo=0.0, hi=1.0, hi_open=False), r"\[0\.0, 1\.0\]; got 2\.0"),
    (math.nan, dict(lo=0.0, hi=1.0), r"\[0\.0, 1\.0\); got nan"),
])
def test_check_number_interval_messages(value, kw, msg):
  with pytest.raises(ValueError, match=msg):
    check_number("b1", value, **kw)


def test_check_number_closed_and_open_boundaries():
  check_number("b1", 0.0, 0.0, 1.0)                  # [0, 1) contains 0
  check_number("b1", 1.0, 0.0, 1.0, hi_open=False)   # [0, 1] contains 1
  check_number("threshold", math.inf, hi_open=False)  # [0, inf]
  check_number("eps", 1e-300, lo_open=True)


def test_check_number_shapes_bools_and_callables():
  with pytest.raises(ValueError, match=r"x must be a scalar; got shape \(2,\)"):
    check_number("x", jnp.array([0.1, 0.2]))
  with pytest.raises(ValueError, match="x must be a real number; got True"):
    check_number("x", True)
  with pytest.raises(ValueError, match="x must be a number, not a schedule"):
    check_number("x", lambda t: 0.1)
  check_number("x", lambda t: 0.1, schedule=True)     # checked at init instead


def test_check_number_lets_traced_values_through():
  out = jax.jit(lambda v: (check_number("x", v), v)[1])(-1.0)
  assert float(out) == -1.0


@pytest.mark.parametrize("value", ["0.1", None, 0.1 + 0j])
def test_check_number_rejects_non_numbers_naming_the_argument(value):
  with pytest.raises(ValueError, match="learning_rate must be a"):
    ppx.pathprox(value, 1e-3, SPEC)


def test_check_int():
  assert check_int("n", 3) == 3 and check_int("n", np.int64(2)) == 2
  assert isinstance(check_int("n", np.int64(2)), int)
  assert check_int("n", 1, lo=1) == 1
  for bad in (-1, True, 1.0, "1", None):
    with pytest.raises(ValueError, match=r"n must be an int >= 0"):
      check_int("n", bad)


def test_check_schedule_and_check_units():
  check_schedule("learning_rate", optax.linear_schedule(0.1, 0.0, 10))
  check_schedule("learning_rate", 0.1)          # numbers pass
  with pytest.raises(ValueError, match=r"Schedule `lr` must return a scalar; "
                     r"at step 0 it returned shape \(3,\)"):
    check_schedule("lr", lambda t: jnp.ones(3) * t)
  check_units(SPEC)
  with pytest.raises(TypeError, match="got list"):
    check_units([("l0", "l1")])


# ------------------------------------------------------ units must be a spec
@pytest.mark.parametrize("make", [
    lambda u: ppx.pathprox(0.1, 1e-3, u),
    lambda u: ppx.path_prox_update(0.1, 1e-3, u),
    lambda u: ppx.path_prox_params(_params(), 0.1, 1e-3, u),
    lambda u: ppx.pathprox_gradient(0.1, 1e-3, u),
    lambda u: ppx.layerwise_balance(u),
    lambda u: ppx.map_units(u, _project),
    lambda u: ppx.adaptive_pathprox(0.1, 1e-3, u),
    lambda u: ppx.group_prox_from_units(u),
    lambda u: ppx.compact(_params(), u),
], ids=["pathprox", "path_prox_update", "path_prox_params", "pathprox_gradient",
        "layerwise_balance", "map_units", "adaptive_pathprox",
        "group_prox_from_units", "compact"])
@pytest.mark.parametrize("bad", [[("l0", "l1")], None, {"l0": "l1"}],
                         ids=["pairs", "none", "dict"])
def test_units_must_be_a_unit_spec(make, bad):
  with pytest.raises(TypeError, match="must be a pathprox_jax.UnitSpec"):
    make(bad)


def test_map_units_fn_must_be_callable():
  with pytest.raises(TypeError, match="fn must be a function"):
    ppx.map_units(SPEC, "project")


# ------------------------------------------------------- hyper-parameters
NONNEG = "must be a non-negative finite number"
UNIT_INTERVAL = r"must lie in \[0\.0, 1\.0\)"
POSITIVE = r"must lie in \(0\.0, inf\)"
CONSTRUCTORS = {
    "pathprox": (lambda **k: ppx.pathprox(**{"learning_rate": 0.1,
                                             "weight_decay": 1e-3,
                                             "units": SPEC, **k}),
                 {"learning_rate": NONNEG, "weight_decay": NONNEG,
                  "momentum": UNIT_INTERVAL, "min_norm": NONNEG,
                  "dead_threshold": NONNEG}),
    "path_prox_update": (lambda **k: ppx.path_prox_update(
        **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "min_norm": NONNEG,
         "dead_threshold": NONNEG}),
    "path_prox_params": (lambda **k: ppx.path_prox_params(_params(), **{
        "learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "min_norm": NONNEG,
         "dead_threshold": NONNEG}),
    "pathprox_gradient": (lambda **k: ppx.pathprox_gradient(
        **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG,
         "momentum": UNIT_INTERVAL}),
    "layerwise_balance": (lambda **k: ppx.layerwise_balance(SPEC, **k),
                          {"dead_threshold": NONNEG}),
    "adaptive_pathprox": (lambda **k: ppx.adaptive_pathprox(
        **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "b1": UNIT_INTERVAL,
         "b2": UNIT_INTERVAL, "eps": POSITIVE, "min_norm": NONNEG,
         "dead_threshold": NONNEG}),
    "proxgen_adam": (lambda **k: ppx.proxgen_adam(**{
        "learning_rate": 0.1, "weight_decay": 1e-3, "prox": ppx.prox_l1, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "b1": UNIT_INTERVAL,
         "b2": UNIT_INTERVAL, "eps": POSITIVE}),
    "proxgen_sgd": (lambda **k: ppx.proxgen_sgd(**{
        "learning_rate": 0.1, "weight_decay": 1e-3, "prox": ppx.prox_l1, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG,
         "momentum": UNIT_INTERVAL}),
    "prox_sgd_two_stage": (lambda **k: ppx.prox_sgd_two_stage(**{
        "learning_rate": 0.1, "weight_decay": 1e-3, "prox": ppx.prox_l1, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "b1": UNIT_INTERVAL,
         "b2": UNIT_INTERVAL, "eps": POSITIVE}),
    "proxquant": (lambda **k: ppx.proxquant(**{
        "learning_rate": 0.1, "weight_decay": 1e-3, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "b1": UNIT_INTERVAL,
         "b2": UNIT_INTERVAL, "eps": POSITIVE}),
    "subgradient_adam": (lambda **k: ppx.subgradient_adam(**{
        "learning_rate": 0.1, "weight_decay": 1e-3, **k}),
        {"learning_rate": NONNEG, "weight_decay": NONNEG, "b1": UNIT_INTERVAL,
         "b2": UNIT_INTERVAL, "eps": POSITIVE, "guard": POSITIVE}),
    "lq_subgradient": (lambda **k: ppx.lq_subgradient(**{
        "weight_decay": 1e-3, **k}),
        {"weight_decay": NONNEG, "guard": POSITIVE}),
}
HYPER_CASES = [
    pytest.param(name, arg, msg, id=f"{name}.{arg}")
    for name, (_, args) in CONSTRUCTORS.items() for arg, msg in args.items()]


@pytest.mark.parametrize("name, arg, msg", HYPER_CASES)
def test_bad_hyperparameters_fail_at_construction(name, arg, msg):
  make = CONSTRUCTORS[name][0]
  for bad in (-0.1, math.nan, math.inf):
    with pytest.raises(ValueError, match=rf"{arg} {msg}; got "):
      make(**{arg: bad})
  with pytest.raises(ValueError, match=rf"{arg} must be a scalar; got shape "
                     r"\(2,\)"):
    make(**{arg: jnp.array([0.1, 0.2])})


def test_interval_ends_are_checked_as_documented():
  for make in (lambda m: ppx.pathprox(0.1, 1e-3, SPEC, momentum=m),
               lambda m: ppx.proxgen_sgd(0.1, 1e-3, ppx.prox_l1, momentum=m),
               lambda b: ppx.proxgen_adam(0.1, 1e-3, ppx.prox_l1, b1=b),
               lambda b: ppx.adaptive_pathprox(0.1, 1e-3, SPEC, b2=b)):
    make(0.0)
    with pytest.raises(ValueError, match=r"must lie in \[0\.0, 1\.0\); got 1\.0"):
      make(1.0)
  for make in (lambda e: ppx.proxgen_adam(0.1, 1e-3, ppx.prox_l1, eps=e),
               lambda g: ppx.lq_subgradient(1e-3, guard=g)):
    with pytest.raises(ValueError, match=r"must lie in \(0\.0, inf\); got 0\.0"):
      make(0.0)


def test_zero_learning_rate_and_weight_decay_are_valid():
  params = _params()
  for tx in (ppx.pathprox(0.0, 0.0, SPEC),
             ppx.adaptive_pathprox(0.0, 0.0, SPEC),
             ppx.proxgen_adam(0.0, 0.0, ppx.prox_l1),
             optax.chain(optax.sgd(0.1), ppx.path_prox_update(0.0, 0.0, SPEC))):
    updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("make, kw, static", [
    (ppx.pathprox, {"units": SPEC}, ()),
    (ppx.adaptive_pathprox, {"units": SPEC}, ()),
    (ppx.proxgen_adam, {"prox": ppx.prox_l1}, ("prox",)),
], ids=["pathprox", "adaptive_pathprox", "proxgen_adam"])
def test_traced_hyperparameters_pass_the_checks(make, kw, static):
  """inject_hyperparams calls the factory with traced values inside jit."""
  tx = optax.inject_hyperparams(make, static_args=static)(
      learning_rate=0.1, weight_decay=1e-3, **kw)
  params = _params()
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.2)
  updates, state = jax.jit(tx.update)(_grads(params), state, params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  assert any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))


# ---------------------------------------------------------------- schedules
def test_weight_decay_schedule_rejected_where_static():
  for make in (lambda s: ppx.pathprox(0.1, s, SPEC),
               lambda s: ppx.path_prox_update(0.1, s, SPEC),
               lambda s: ppx.adaptive_pathprox(0.1, s, SPEC)):
    with pytest.raises(ValueError, match="weight_decay must be a number, not "
                       "a schedule"):
      make(lambda count: 1e-3)
  # ProxGen takes a weight decay schedule
  ppx.proxgen_adam(0.1, optax.linear_schedule(0.0, 1e-3, 10), ppx.prox_l1)


@pytest.mark.parametrize("make", [
    lambda s: ppx.pathprox(s, 1e-3, SPEC),
    lambda s: optax.chain(optax.sgd(0.1), ppx.path_prox_update(s, 1e-3, SPEC)),
    lambda s: ppx.adaptive_pathprox(s, 1e-3, SPEC),
    lambda s: ppx.proxgen_adam(s, 1e-3, ppx.prox_l1),
    lambda s: ppx.proxgen_adam(0.1, s, ppx.prox_l1),
    lambda s: ppx.proxgen_sgd(s, 1e-3, ppx.prox_l1),
    lambda s: ppx.lq_subgradient(s),
], ids=["pathprox", "path_prox_update", "adaptive_pathprox", "proxgen_adam.lr",
        "proxgen_adam.wd", "proxgen_sgd", "lq_subgradient"])
def test_schedule_returning_non_scalar_fails_at_init(make):
  tx = make(lambda count: jnp.full((3,), 0.1))
  with pytest.raises(ValueError, match=r"must return a scalar.*\(3,\)"):
    tx.init(_params())


def test_path_prox_params_schedule_needs_step():
  with pytest.raises(ValueError, match="learning_rate is a schedule; pass "
                     "step="):
    ppx.path_prox_params(_params(), lambda t: 0.1, 1e-3, SPEC)


# ------------------------------------------------------------------- init
@pytest.mark.parametrize("name", SPEC_INIT)
def test_init_rejects_params_of_another_shape(name):
  with pytest.raises(ValueError, match=r"Group 0: 'l0/kernel' has shape "
                     r"\(3, 5\) in the params.*built for shape \(3, 4\)"):
    FACTORIES[name]().init(_params(units=5))


@pytest.mark.parametrize("name", SPEC_INIT)
def test_init_rejects_params_missing_a_layer(name):
  params = _params()
  params = {"l0": params["l0"], "head": params["l1"]}
  with pytest.raises(ValueError, match="Group 0: 'l1/kernel' is missing"):
    FACTORIES[name]().init(params)


@pytest.mark.parametrize("name", SPEC_INIT)
def test_init_rejects_params_missing_a_bias(name):
  params = _params()
  del params["l0"]["bias"]
  with pytest.raises(ValueError, match="Group 0: 'l0/bias' is missing"):
    FACTORIES[name]().init(params)


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.int32])
@pytest.mark.parametrize("name", [n for n in ALL if n != "pathprox_gradient"])
def test_init_rejects_non_real_float_params(name, dtype):
  params = jax.tree.map(lambda x: x.astype(dtype), _params())
  with pytest.raises(ValueError, match=rf"'l0/(kernel|bias)' has dtype "
                     rf"{jnp.dtype(dtype).name}"):
    FACTORIES[name]().init(params)


# ----------------------------------------------------------------- update
@pytest.mark.parametrize("name", ALL)
def test_update_without_params_is_rejected(name):
  tx = FACTORIES[name]()
  params = _params()
  state = tx.init(params)
  with pytest.raises(ValueError, match="not passing `params`"):
    tx.update(_grads(params), state)


@pytest.mark.parametrize("name", SPEC_UPDATE)
def test_update_rejects_params_of_another_shape_at_trace_time(name):
  tx = FACTORIES[name]()
  state = tx.init(_params())
  other = _params(units=5)
  with pytest.raises(ValueError, match=r"'l0/kernel' has shape \(3, 5\) in the "
                     rf"params passed to {name.replace('_momentum', '')}"
                     r"(\.update)?"):
    jax.jit(tx.update)(_grads(other), state, other)


@pytest.mark.parametrize("name", SPEC_UPDATE)
def test_update_rejects_params_missing_a_layer(name):
  tx = FACTORIES[name]()
  state = tx.init(_params())
  params = _params()
  params = {"l0": params["l0"], "head": params["l1"]}
  with pytest.raises(ValueError, match="'l1/kernel' is missing"):
    jax.jit(tx.update)(_grads(params), state, params)


@pytest.mark.parametrize("name", SPEC_UPDATE)
def test_update_rejects_grads_shaped_unlike_params(name):
  tx = FACTORIES[name]()
  params = _params()
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"the update for 'l0/(bias|kernel)' has "
                     r"shape \((3, )?5,?\) but the param has shape"):
    jax.jit(tx.update)(_grads(_params(units=5)), state, params)
  extra = dict(_grads(params), extra={"kernel": jnp.ones((2, 2))})
  with pytest.raises(ValueError, match=r"Only in updates: \['extra/kernel'\]"):
    jax.jit(tx.update)(extra, state, params)


@pytest.mark.parametrize("name", ALL)
def test_optax_tree_map_params_works(name):
  tx = FACTORIES[name]()
  params = _params()
  state = tx.init(params)
  tags = jax.tree.map(lambda _: "param-like", params)
  out = optax.tree_map_params(tx, lambda _, tag: tag, state, tags,
                              transform_non_params=lambda _: "other")
  assert jax.tree.structure(out) == jax.tree.structure(state)


# ---------------------------------------------------- ProxGen prox and mask
def test_prox_argument_errors():
  params = _params()
  with pytest.raises(TypeError, match=r"`prox` must be prox\(x, reg, scaling\)"):
    ppx.proxgen_adam(0.1, 0.1, "l1")
  with pytest.raises(TypeError, match=r"needs both weight_decay and prox"):
    ppx.proxgen_adam(0.1, 0.1)
  with pytest.raises(TypeError, match=r"needs both weight_decay and prox"):
    ppx.proxgen_sgd(0.1, prox=ppx.prox_l1)
  with pytest.raises(TypeError, match="proxquant needs weight_decay"):
    ppx.proxquant(0.1)
  with pytest.raises(TypeError, match="lq_subgradient needs weight_decay"):
    ppx.lq_subgradient()
  # a prox that cannot take an array scaling is caught at init with the path
  scalar_only = lambda x, reg, s: x * (1 - reg * float(s))
  with pytest.raises(ValueError, match=r"prox failed on parameter 'l0/kernel' "
                     r"of shape \(3, 4\)"):
    ppx.proxgen_adam(0.1, 0.1, scalar_only).init(params)
  with pytest.raises(ValueError, match=r"prox returned shape \(\) for parameter "
                     r"'l0/kernel' of shape \(3, 4\)"):
    ppx.proxgen_sgd(0.1, 0.1, lambda x, reg, s: jnp.sum(x)).init(params)


def test_mask_errors():
  params = _params()
  with pytest.raises(ValueError, match=r"the mask does not cover parameter "
                     r"'l1/bias'"):
    ppx.proxgen_adam(0.1, 0.1, ppx.prox_l1, mask={"l0": True}).init(params)
  with pytest.raises(ValueError, match="do not pass a mask with it"):
    ppx.proxgen_adam(0.1, 0.1, ppx.group_prox_from_units(SPEC),
                     mask={"l0": True, "l1": True}).init(params)
  traced_mask = lambda p: jax.tree.map(lambda x: jnp.any(x > 0), p)
  tx = ppx.proxgen_adam(0.1, 0.1, ppx.prox_l1, mask=traced_mask)
  state = tx.init(params)
  with pytest.raises(ValueError, match="mask entries must be static Python "
                     "bools"):
    jax.jit(tx.update)(_grads(params), state, params)


def test_q_errors():
  with pytest.raises(ValueError, match=r"0 < q <= 1; got q=0\.0"):
    ppx.lq_subgradient(0.1, q=0.0)
  with pytest.raises(ValueError, match=r"0 < q <= 1; got q=1\.5"):
    ppx.subgradient_adam(0.1, 0.1, q=1.5)
  with pytest.raises(ValueError):
    ppx.proxquant(0.1, 0.1, q=0.3)


# --------------------------------------------- compositions that fail silently
@pytest.mark.parametrize("make", [
    lambda: ppx.pathprox(0.1, 1e-3, SPEC),
    lambda: ppx.path_prox_update(0.1, 1e-3, SPEC),
    lambda: ppx.adaptive_pathprox(1e-3, 1e-3, SPEC),
    lambda: ppx.proxgen_adam(1e-3, 1e-3, ppx.prox_l1),
    lambda: ppx.proxgen_sgd(0.1, 1e-3, ppx.group_prox_from_units(SPEC)),
    lambda: ppx.layerwise_balance(SPEC),
], ids=["pathprox", "path_prox_update", "adaptive", "proxgen_adam",
        "proxgen_sgd", "balance"])
def test_schedule_free_around_a_proximal_step_is_refused_at_init(make):
  tx = optax.contrib.schedule_free(make(), learning_rate=0.1)
  with pytest.raises(ValueError, match="schedule_free.*never act"):
    tx.init(_params())


def test_schedule_free_around_the_gradient_step_alone_still_works():
  tx = optax.contrib.schedule_free(ppx.pathprox_gradient(0.1, 1e-3, SPEC), 0.1)
  params = _params()
  updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_inject_hyperparams_without_static_args_says_what_to_pass():
  tx = optax.inject_hyperparams(ppx.proxgen_adam)(
      learning_rate=1e-3, weight_decay=1e-4, prox=ppx.prox_l1)
  with pytest.raises(TypeError, match=r"static_args=\('prox', 'mask'\)"):
    tx.init(_params())


@pytest.mark.parametrize("factory", [ppx.proxgen_adam, ppx.proxgen_sgd])
def test_inject_hyperparams_with_static_prox_matches_the_plain_transform(factory):
  params = _params()
  plain = factory(1e-2, 1e-1, ppx.prox_l_half)
  injected = optax.inject_hyperparams(factory, static_args=("prox",))(
      learning_rate=1e-2, weight_decay=1e-1, prox=ppx.prox_l_half)
  a, _ = jax.jit(plain.update)(_grads(params), plain.init(params), params)
  b, _ = jax.jit(injected.update)(_grads(params), injected.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)  # traced hparams


def test_inject_hyperparams_with_the_unit_prox_needs_no_static_args():
  params = _params()                 # UnitGroupProx is not callable: static
  tx = optax.inject_hyperparams(ppx.proxgen_adam)(
      learning_rate=1e-2, weight_decay=1e-1,
      prox=ppx.group_prox_from_units(SPEC))
  state = tx.init(params)
  state.hyperparams["weight_decay"] = jnp.asarray(1e3)    # scheduled by hand
  u, _ = jax.jit(tx.update)(_grads(params), state, params)
  assert bool(jnp.any(optax.apply_updates(params, u)["l1"]["kernel"] == 0))


@pytest.mark.parametrize("factory,kwargs", [
    (ppx.subgradient_adam, {"learning_rate": 1e-2, "weight_decay": 1e-2}),
    (ppx.proxquant, {"learning_rate": 1e-2, "weight_decay": 1e-2}),
], ids=["subgradient_adam", "proxquant"])
def test_inject_hyperparams_around_factories_with_renamed_arguments(factory,
                                                                     kwargs):
  # inject_hyperparams passes the empty **deprecated bucket back as a keyword.
  params = _params()
  plain = factory(**kwargs)
  injected = optax.inject_hyperparams(factory, static_args=("q",))(**kwargs)
  a, _ = jax.jit(plain.update)(_grads(params), plain.init(params), params)
  b, _ = jax.jit(injected.update)(_grads(params), injected.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
