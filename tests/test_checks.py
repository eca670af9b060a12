"""Argument checks: pathprox_jax._checks, and construction / init / update errors of every transform.

Hostile inputs must fail early (at construction, else at ``init``, else at
trace time of ``update``) with a ``ValueError`` / ``TypeError`` that names the
argument or the parameter path.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from pathprox_jax._checks import (
    check_int,
    check_number,
    check_schedule,
    check_units,
)


def _params(units=4, fan_in=3, out=2, dtype=jnp.float32, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {
      "l0": {
          "kernel": jax.random.normal(k1, (fan_in, units), dtype),
          "bias": jax.random.normal(k2, (units,), dtype),
      },
      "l1": {
          "kernel": jax.random.normal(k3, (units, out), dtype),
          "bias": jnp.zeros((out,), dtype),
      },
  }


SPEC = ppx.UnitSpec.from_pairs(_params(), [("l0", "l1")])


def _grads(params):
  return jax.tree.map(jnp.ones_like, params)


def _project(groups):
  return [ppx.prox.project_unit_sphere(x) for x in groups]


# Every public transform, ready for init/update on _params().
FACTORIES = {
    "pathprox": lambda: ppx.pathprox(0.1, 1e-3, SPEC),
    "pathprox_momentum": lambda: ppx.pathprox(0.1, 1e-3, SPEC, momentum=0.9),
    "pathprox_update": lambda: optax.chain(
        optax.sgd(0.1), ppx.pathprox_update(0.1, 1e-3, SPEC)
    ),
    "pathprox_gradient": lambda: ppx.pathprox_gradient(0.1, 1e-3, SPEC),
    "balance_layers_update": lambda: optax.chain(
        optax.sgd(0.1), ppx.balance_layers_update(SPEC)
    ),
    "map_units": lambda: optax.chain(
        optax.sgd(0.1), ppx.map_units(SPEC, _project)
    ),
    "adaptive_pathprox": lambda: ppx.adaptive_pathprox(0.1, 1e-3, SPEC),
    "proxgen_adam_units": lambda: ppx.proxgen_adam(
        0.1, 1e-3, ppx.prox.unit_group_lasso(SPEC)
    ),
    "proxgen_sgd_units": lambda: ppx.proxgen_sgd(
        0.1, 1e-3, ppx.prox.unit_group_lasso(SPEC)
    ),
    "proxgen_adam": lambda: ppx.proxgen_adam(0.1, 1e-3, ppx.prox.prox_l1),
    "proxgen_sgd": lambda: ppx.proxgen_sgd(
        0.1, 1e-3, ppx.prox.prox_l1, momentum=0.9
    ),
    "prox_sgd_two_stage": lambda: ppx.transforms.prox_sgd_two_stage(
        0.1, 1e-3, ppx.prox.prox_l1
    ),
    "proxquant": lambda: ppx.transforms.proxquant(0.1, 1e-3),
    "subgradient_adam": lambda: ppx.transforms.subgradient_adam(0.1, 1e-3),
    "lq_subgradient": lambda: optax.chain(
        ppx.transforms.lq_subgradient(1e-3), optax.sgd(0.1)
    ),
}
ALL = list(FACTORIES)
# Transforms whose init validates the params against the UnitSpec.
SPEC_INIT = [
    "pathprox",
    "pathprox_momentum",
    "pathprox_update",
    "balance_layers_update",
    "map_units",
    "adaptive_pathprox",
    "proxgen_adam_units",
    "proxgen_sgd_units",
]

# Transforms whose update validates params and updates against the spec.
SPEC_UPDATE = [
    "pathprox",
    "pathprox_momentum",
    "pathprox_update",
    "pathprox_gradient",
    "balance_layers_update",
    "map_units",
    "adaptive_pathprox",
]


# ------------------------------------------------------------ check_number
@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        -0.0,
        3,
        1e300,
        np.float32(2.0),
        np.int8(3),
        jnp.float32(0.5),
        np.array(1.0),
        jnp.bfloat16(1.0),
    ],
)
def test_check_number_accepts_non_negative_finite_scalars(value):
  check_number("x", value)


@pytest.mark.parametrize(
    "value", [-1e-300, -1, math.inf, -math.inf, math.nan, np.float32("nan")]
)
def test_check_number_default_interval_message(value):
  with pytest.raises(
      ValueError,
      match=r"^x must be a non-negative finite "
      r"number; got (-?inf|nan|-1e-300|-1\.0)\.$",
  ):
    check_number("x", value)


@pytest.mark.parametrize(
    "value, kw, msg",
    [
        (1.0, dict(lo=0.0, hi=1.0), r"b1 must lie in \[0\.0, 1\.0\); got 1\.0"),
        (
            -0.5,
            dict(lo=0.0, hi=1.0),
            r"b1 must lie in \[0\.0, 1\.0\); got -0\.5",
        ),
        (0.0, dict(lo_open=True), r"b1 must lie in \(0\.0, inf\); got 0\.0"),
        (
            math.inf,
            dict(lo_open=True),
            r"b1 must lie in \(0\.0, inf\); got inf",
        ),
        (2.0, dict(lo=0.0, hi=1.0, hi_open=False), r"\[0\.0, 1\.0\]; got 2\.0"),
        (math.nan, dict(lo=0.0, hi=1.0), r"\[0\.0, 1\.0\); got nan"),
    ],
)
def test_check_number_interval_messages(value, kw, msg):
  with pytest.raises(ValueError, match=msg):
    check_number("b1", value, **kw)


def test_check_number_closed_and_open_boundaries():
  check_number("b1", 0.0, 0.0, 1.0)  # [0, 1) contains 0
  check_number("b1", 1.0, 0.0, 1.0, hi_open=False)  # [0, 1] contains 1
  check_number("threshold", math.inf, hi_open=False)  # [0, inf]
  check_number("eps", 1e-300, lo_open=True)


def test_check_number_shapes_bools_and_callables():
  with pytest.raises(ValueError, match=r"x must be a scalar; got shape \(2,\)"):
    check_number("x", jnp.array([0.1, 0.2]))
  with pytest.raises(ValueError, match="x must be a real number; got True"):
    check_number("x", True)
  with pytest.raises(ValueError, match="x must be a number, not a schedule"):
    check_number("x", lambda t: 0.1)
  check_number("x", lambda t: 0.1, schedule=True)  # checked at init instead


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
  check_schedule("learning_rate", 0.1)  # numbers pass
  with pytest.raises(
      ValueError,
      match=r"Schedule `lr` must return a scalar; "
      r"at step 0 it returned shape \(3,\)",
  ):
    check_schedule("lr", lambda t: jnp.ones(3) * t)
  check_units(SPEC)
  with pytest.raises(TypeError, match="got list"):
    check_units([("l0", "l1")])


# ------------------------------------------------------ units must be a spec
@pytest.mark.parametrize(
    "make",
    [
        lambda u: ppx.pathprox(0.1, 1e-3, u),
        lambda u: ppx.pathprox_update(0.1, 1e-3, u),
        lambda u: ppx.pathprox_params(_params(), u, 0.1, 1e-3),
        lambda u: ppx.pathprox_gradient(0.1, 1e-3, u),
        lambda u: ppx.balance_layers_update(u),
        lambda u: ppx.map_units(u, _project),
        lambda u: ppx.adaptive_pathprox(0.1, 1e-3, u),
        lambda u: ppx.prox.unit_group_lasso(u),
        lambda u: ppx.compact(_params(), u),
    ],
    ids=[
        "pathprox",
        "pathprox_update",
        "pathprox_params",
        "pathprox_gradient",
        "balance_layers_update",
        "map_units",
        "adaptive_pathprox",
        "unit_group_lasso",
        "compact",
    ],
)
@pytest.mark.parametrize(
    "bad", [[("l0", "l1")], None, {"l0": "l1"}], ids=["pairs", "none", "dict"]
)
def test_units_must_be_a_unit_spec(make, bad):
  with pytest.raises(
      TypeError, match="(must be|needs) a pathprox_jax.UnitSpec"
  ):
    make(bad)


def test_map_units_fn_must_be_callable():
  with pytest.raises(TypeError, match="fn must be a function"):
    ppx.map_units(SPEC, "project")


# ------------------------------------------------------- hyper-parameters
NONNEG = "must be a non-negative finite number"
UNIT_INTERVAL = r"must lie in \[0\.0, 1\.0\)"
POSITIVE = r"must lie in \(0\.0, inf\)"
CONSTRUCTORS = {
    "pathprox": (
        lambda **k: ppx.pathprox(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "momentum": UNIT_INTERVAL,
            "min_norm": NONNEG,
            "dead_threshold": NONNEG,
        },
    ),
    "pathprox_update": (
        lambda **k: ppx.pathprox_update(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "min_norm": NONNEG,
            "dead_threshold": NONNEG,
        },
    ),
    "pathprox_params": (
        lambda **k: ppx.pathprox_params(
            _params(),
            **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k},
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "min_norm": NONNEG,
            "dead_threshold": NONNEG,
        },
    ),
    "pathprox_gradient": (
        lambda **k: ppx.pathprox_gradient(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "momentum": UNIT_INTERVAL,
        },
    ),
    "balance_layers_update": (
        lambda **k: ppx.balance_layers_update(SPEC, **k),
        {"dead_threshold": NONNEG},
    ),
    "adaptive_pathprox": (
        lambda **k: ppx.adaptive_pathprox(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, "units": SPEC, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "b1": UNIT_INTERVAL,
            "b2": UNIT_INTERVAL,
            "eps": POSITIVE,
            "min_norm": NONNEG,
            "dead_threshold": NONNEG,
        },
    ),
    "proxgen_adam": (
        lambda **k: ppx.proxgen_adam(**{
            "learning_rate": 0.1,
            "weight_decay": 1e-3,
            "prox": ppx.prox.prox_l1,
            **k,
        }),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "b1": UNIT_INTERVAL,
            "b2": UNIT_INTERVAL,
            "eps": POSITIVE,
        },
    ),
    "proxgen_sgd": (
        lambda **k: ppx.proxgen_sgd(**{
            "learning_rate": 0.1,
            "weight_decay": 1e-3,
            "prox": ppx.prox.prox_l1,
            **k,
        }),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "momentum": UNIT_INTERVAL,
        },
    ),
    "prox_sgd_two_stage": (
        lambda **k: ppx.transforms.prox_sgd_two_stage(**{
            "learning_rate": 0.1,
            "weight_decay": 1e-3,
            "prox": ppx.prox.prox_l1,
            **k,
        }),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "b1": UNIT_INTERVAL,
            "b2": UNIT_INTERVAL,
            "eps": POSITIVE,
        },
    ),
    "proxquant": (
        lambda **k: ppx.transforms.proxquant(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "b1": UNIT_INTERVAL,
            "b2": UNIT_INTERVAL,
            "eps": POSITIVE,
        },
    ),
    "subgradient_adam": (
        lambda **k: ppx.transforms.subgradient_adam(
            **{"learning_rate": 0.1, "weight_decay": 1e-3, **k}
        ),
        {
            "learning_rate": NONNEG,
            "weight_decay": NONNEG,
            "b1": UNIT_INTERVAL,
            "b2": UNIT_INTERVAL,
            "eps": POSITIVE,
            "guard": POSITIVE,
        },
    ),
    "lq_subgradient": (
        lambda **k: ppx.transforms.lq_subgradient(
            **{"weight_decay": 1e-3, **k}
        ),
        {"weight_decay": NONNEG, "guard": POSITIVE},
    ),
}
HYPER_CASES = [
    pytest.param(name, arg, msg, id=f"{name}.{arg}")
    for name, (_, args) in CONSTRUCTORS.items()
    for arg, msg in args.items()
]


@pytest.mark.parametrize("name, arg, msg", HYPER_CASES)
def test_bad_hyperparameters_fail_at_construction(name, arg, msg):
  make = CONSTRUCTORS[name][0]
  for bad in (-0.1, math.nan, math.inf):
    with pytest.raises(ValueError, match=rf"{arg} {msg}; got "):
      make(**{arg: bad})
  with pytest.raises(
      ValueError, match=rf"{arg} must be a scalar; got shape " r"\(2,\)"
  ):
    make(**{arg: jnp.array([0.1, 0.2])})


def test_interval_ends_are_checked_as_documented():
  for make in (
      lambda m: ppx.pathprox(0.1, 1e-3, SPEC, momentum=m),
      lambda m: ppx.proxgen_sgd(0.1, 1e-3, ppx.prox.prox_l1, momentum=m),
      lambda b: ppx.proxgen_adam(0.1, 1e-3, ppx.prox.prox_l1, b1=b),
      lambda b: ppx.adaptive_pathprox(0.1, 1e-3, SPEC, b2=b),
  ):
    make(0.0)
    with pytest.raises(
        ValueError, match=r"must lie in \[0\.0, 1\.0\); got 1\.0"
    ):
      make(1.0)
  for make in (
      lambda e: ppx.proxgen_adam(0.1, 1e-3, ppx.prox.prox_l1, eps=e),
      lambda g: ppx.transforms.lq_subgradient(1e-3, guard=g),
  ):
    with pytest.raises(
        ValueError, match=r"must lie in \(0\.0, inf\); got 0\.0"
    ):
      make(0.0)


def test_zero_learning_rate_and_weight_decay_are_valid():
  params = _params()
  for tx in (
      ppx.pathprox(0.0, 0.0, SPEC),
      ppx.adaptive_pathprox(0.0, 0.0, SPEC),
      ppx.proxgen_adam(0.0, 0.0, ppx.prox.prox_l1),
      optax.chain(optax.sgd(0.1), ppx.pathprox_update(0.0, 0.0, SPEC)),
  ):
    updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    "make, kw, static",
    [
        (ppx.pathprox, {"units": SPEC}, ()),
        (ppx.adaptive_pathprox, {"units": SPEC, "eps": 1e-8}, ()),
        (ppx.adaptive_pathprox, {"units": SPEC}, ()),
        (ppx.proxgen_adam, {"prox": ppx.prox.prox_l1}, ("prox",)),
    ],
    ids=[
        "pathprox",
        "adaptive_pathprox",
        "adaptive_pathprox_default_eps",
        "proxgen_adam",
    ],
)
def test_traced_hyperparameters_pass_the_checks(make, kw, static):
  """inject_hyperparams calls the factory with traced values inside jit."""
  tx = optax.inject_hyperparams(make, static_args=static)(
      learning_rate=0.1, weight_decay=1e-3, **kw
  )
  params = _params()
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.2)
  updates, state = jax.jit(tx.update)(_grads(params), state, params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  assert any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))


# ---------------------------------------------------------------- schedules
def test_weight_decay_schedule_rejected_where_static():
  for make in (
      lambda s: ppx.pathprox(0.1, s, SPEC),
      lambda s: ppx.pathprox_update(0.1, s, SPEC),
      lambda s: ppx.adaptive_pathprox(0.1, s, SPEC),
  ):
    with pytest.raises(
        ValueError, match="weight_decay must be a number, not a schedule"
    ):
      make(lambda count: 1e-3)
  # ProxGen takes a weight decay schedule
  ppx.proxgen_adam(0.1, optax.linear_schedule(0.0, 1e-3, 10), ppx.prox.prox_l1)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: ppx.pathprox(s, 1e-3, SPEC),
        lambda s: optax.chain(
            optax.sgd(0.1), ppx.pathprox_update(s, 1e-3, SPEC)
        ),
        lambda s: ppx.adaptive_pathprox(s, 1e-3, SPEC),
        lambda s: ppx.proxgen_adam(s, 1e-3, ppx.prox.prox_l1),
        lambda s: ppx.proxgen_adam(0.1, s, ppx.prox.prox_l1),
        lambda s: ppx.proxgen_sgd(s, 1e-3, ppx.prox.prox_l1),
        lambda s: ppx.transforms.lq_subgradient(s),
    ],
    ids=[
        "pathprox",
        "pathprox_update",
        "adaptive_pathprox",
        "proxgen_adam.lr",
        "proxgen_adam.wd",
        "proxgen_sgd",
        "lq_subgradient",
    ],
)
def test_schedule_returning_non_scalar_fails_at_init(make):
  tx = make(lambda count: jnp.full((3,), 0.1))
  with pytest.raises(ValueError, match=r"must return a scalar.*\(3,\)"):
    tx.init(_params())


def test_pathprox_params_schedule_needs_step():
  with pytest.raises(
      ValueError, match="learning_rate is a schedule; pass step="
  ):
    ppx.pathprox_params(_params(), SPEC, lambda t: 0.1, 1e-3)


# ------------------------------------------------------------------- init
@pytest.mark.parametrize("name", SPEC_INIT)
def test_init_rejects_params_of_another_shape(name):
  with pytest.raises(
      ValueError,
      match=r"Group 0: 'l0/kernel' has shape "
      r"\(3, 5\) in the params.*built for shape \(3, 4\)",
  ):
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
  with pytest.raises(
      ValueError,
      match=rf"'l0/(kernel|bias)' has dtype " rf"{jnp.dtype(dtype).name}",
  ):
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
  with pytest.raises(
      ValueError,
      match=r"'l0/kernel' has shape \(3, 5\) in the "
      rf"params passed to {name.replace('_momentum', '')}"
      r"(\.update)?",
  ):
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
  with pytest.raises(
      ValueError,
      match=r"the update for 'l0/(bias|kernel)' has "
      r"shape \((3, )?5,?\) but the param has shape",
  ):
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
  out = optax.tree_map_params(
      tx,
      lambda _, tag: tag,
      state,
      tags,
      transform_non_params=lambda _: "other",
  )
  assert jax.tree.structure(out) == jax.tree.structure(state)


# ---------------------------------------------------- ProxGen prox and mask
def test_prox_argument_errors():
  params = _params()
  with pytest.raises(
      TypeError,
      match=r"`prox` must be prox\(x, weight_decay, "
      r"scaling\) or a tree prox",
  ):
    ppx.proxgen_adam(0.1, 0.1, "l1")
  with pytest.raises(TypeError, match="prox"):
    ppx.proxgen_adam(0.1, 0.1)  # prox is required
  with pytest.raises(TypeError, match="weight_decay"):
    ppx.proxgen_sgd(0.1, prox=ppx.prox.prox_l1)  # so is weight_decay
  with pytest.raises(TypeError, match="weight_decay"):
    ppx.transforms.proxquant(0.1)
  with pytest.raises(TypeError, match="weight_decay"):
    ppx.transforms.lq_subgradient()
  with pytest.raises(
      TypeError, match=r"`prox` must be prox\(x, weight_decay, " r"scaling\)"
  ):
    ppx.prox.elementwise("l1")
  with pytest.raises(
      TypeError, match="`units` must be a pathprox_jax.UnitSpec"
  ):
    ppx.prox.unit_group_lasso([("l0", "l1")])
  # a prox that cannot take an array scaling is caught at init with the path
  scalar_only = lambda x, reg, s: x * (1 - reg * float(s))
  with pytest.raises(
      ValueError,
      match=r"prox failed on parameter 'l0/kernel' " r"of shape \(3, 4\)",
  ):
    ppx.proxgen_adam(0.1, 0.1, scalar_only).init(params)
  with pytest.raises(
      ValueError,
      match=r"prox returned shape \(\) for parameter "
      r"'l0/kernel' of shape \(3, 4\)",
  ):
    ppx.proxgen_sgd(0.1, 0.1, lambda x, reg, s: jnp.sum(x)).init(params)


def test_mask_errors():
  params = _params()
  with pytest.raises(
      ValueError, match=r"the mask does not cover parameter " r"'l1/bias'"
  ):
    ppx.proxgen_adam(0.1, 0.1, ppx.prox.prox_l1, mask={"l0": True}).init(params)
  for factory in (
      ppx.proxgen_adam,
      ppx.proxgen_sgd,
      ppx.transforms.prox_sgd_two_stage,
  ):
    with pytest.raises(
        ValueError,
        match=r"`mask` applies to an elementwise "
        r"prox; a tree prox \(UnitGroupLasso\) chooses its own "
        "leaves",
    ):
      factory(
          0.1,
          0.1,
          ppx.prox.unit_group_lasso(SPEC),
          mask={"l0": True, "l1": True},
      )
  traced_mask = lambda p: jax.tree.map(lambda x: jnp.any(x > 0), p)
  tx = ppx.proxgen_adam(0.1, 0.1, ppx.prox.prox_l1, mask=traced_mask)
  state = tx.init(params)
  with pytest.raises(
      ValueError, match="mask entries must be static Python bools"
  ):
    jax.jit(tx.update)(_grads(params), state, params)


def test_q_errors():
  with pytest.raises(ValueError, match=r"0 < q <= 1; got q=0\.0"):
    ppx.transforms.lq_subgradient(0.1, q=0.0)
  with pytest.raises(ValueError, match=r"0 < q <= 1; got q=1\.5"):
    ppx.transforms.subgradient_adam(0.1, 0.1, q=1.5)
  with pytest.raises(ValueError):
    ppx.transforms.proxquant(0.1, 0.1, q=0.3)


# --------------------------------------------- compositions that fail silently
@pytest.mark.parametrize(
    "make",
    [
        lambda: ppx.pathprox(0.1, 1e-3, SPEC),
        lambda: ppx.pathprox_update(0.1, 1e-3, SPEC),
        lambda: ppx.adaptive_pathprox(1e-3, 1e-3, SPEC),
        lambda: ppx.proxgen_adam(1e-3, 1e-3, ppx.prox.prox_l1),
        lambda: ppx.proxgen_sgd(0.1, 1e-3, ppx.prox.unit_group_lasso(SPEC)),
        lambda: ppx.balance_layers_update(SPEC),
    ],
    ids=[
        "pathprox",
        "pathprox_update",
        "adaptive",
        "proxgen_adam",
        "proxgen_sgd",
        "balance",
    ],
)
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
      learning_rate=1e-3, weight_decay=1e-4, prox=ppx.prox.prox_l1
  )
  with pytest.raises(TypeError, match=r"static_args=\('prox', 'mask'\)"):
    tx.init(_params())


def test_inject_hyperparams_with_a_tree_prox_says_what_to_pass():
  tx = optax.inject_hyperparams(ppx.proxgen_adam)(
      learning_rate=1e-3,
      weight_decay=1e-4,
      prox=ppx.prox.unit_group_lasso(SPEC),
  )
  with pytest.raises(TypeError, match=r"static_args=\('prox', 'mask'\)"):
    tx.init(_params())


@pytest.mark.parametrize("factory", [ppx.proxgen_adam, ppx.proxgen_sgd])
def test_inject_hyperparams_with_static_prox_matches_the_plain_transform(
    factory,
):
  params = _params()
  plain = factory(1e-2, 1e-1, ppx.prox.prox_l_half)
  injected = optax.inject_hyperparams(factory, static_args=("prox",))(
      learning_rate=1e-2, weight_decay=1e-1, prox=ppx.prox.prox_l_half
  )
  a, _ = jax.jit(plain.update)(_grads(params), plain.init(params), params)
  b, _ = jax.jit(injected.update)(_grads(params), injected.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)  # traced hparams


def test_inject_hyperparams_with_the_unit_prox_as_a_static_arg():
  params = _params()  # a tree prox is callable: keep it static
  tx = optax.inject_hyperparams(ppx.proxgen_adam, static_args=("prox",))(
      learning_rate=1e-2,
      weight_decay=1e-1,
      prox=ppx.prox.unit_group_lasso(SPEC),
  )
  state = tx.init(params)
  state.hyperparams["weight_decay"] = jnp.asarray(1e3)  # scheduled by hand
  u, _ = jax.jit(tx.update)(_grads(params), state, params)
  assert bool(jnp.any(optax.apply_updates(params, u)["l1"]["kernel"] == 0))


@pytest.mark.parametrize(
    "factory,kwargs",
    [
        (
            ppx.transforms.subgradient_adam,
            {"learning_rate": 1e-2, "weight_decay": 1e-2},
        ),
        (
            ppx.transforms.proxquant,
            {"learning_rate": 1e-2, "weight_decay": 1e-2},
        ),
    ],
    ids=["subgradient_adam", "proxquant"],
)
def test_inject_hyperparams_around_the_baselines(factory, kwargs):
  params = _params()
  plain = factory(**kwargs)
  injected = optax.inject_hyperparams(factory, static_args=("q",))(**kwargs)
  a, _ = jax.jit(plain.update)(_grads(params), plain.init(params), params)
  b, _ = jax.jit(injected.update)(_grads(params), injected.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


# ------------------------------------- params that do not match the UnitSpec
def _bias_free(units, fan_in):
  """A bias-free pair ``fan_in -> units -> fan_in``: with (units, fan_in) =
  (3, 4) and (4, 3) the two nets have the same leaves, paths and sizes."""
  r = np.random.default_rng(units)
  return {
      "l0": {
          "kernel": jnp.asarray(r.normal(size=(fan_in, units)), jnp.float32)
      },
      "l1": {
          "kernel": jnp.asarray(r.normal(size=(units, fan_in)), jnp.float32)
      },
  }


# Every public function of (params, units), as a function of (params, units).
SPEC_FUNCTIONS = {
    "active_units": ppx.active_units,
    "path_norm_penalty": ppx.path_norm_penalty,
    "path_norms": ppx.path_norms,
    "unit_path_norms": ppx.unit_path_norms,
    "balance_neurons": ppx.balance_neurons,
    "normalize_units": ppx.normalize_units,
    "balance_layers": ppx.balance_layers,
    "pathprox_params": lambda p, u: ppx.pathprox_params(p, u, 0.1, 1e-3),
    "compact": ppx.compact,
}
HOST_ONLY = {"compact"}  # shapes depend on values: never under jit


def _init_error(params, units):
  with pytest.raises(ValueError) as e:
    ppx.pathprox(0.1, 1e-3, units).init(params)
  return str(e.value)


def _as_in_the_params(message):
  """The init message with its "params passed to pathprox.init" made generic."""
  return message.replace("params passed to pathprox.init", "params")


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", list(SPEC_FUNCTIONS))
def test_spec_functions_reject_a_spec_of_another_net_of_equal_size(name, jit):
  """A spec for 3 units on a 4-unit net with the same leaves and leaf sizes:
  the error of pathprox(...).init (group, path, both shapes), never a
  silently reshaped result."""
  spec3 = ppx.UnitSpec.from_pairs(_bias_free(3, 4), [("l0", "l1")])
  net4 = _bias_free(4, 3)
  assert jax.tree.map(jnp.size, net4) == jax.tree.map(
      jnp.size, _bias_free(3, 4)
  )
  expected = _init_error(net4, spec3)
  assert re.search(
      r"Group 0: 'l0/kernel' has shape \(3, 4\) in the params "
      r"passed to pathprox\.init, but the UnitSpec was built for "
      r"shape \(4, 3\)\. Rebuild the spec\.",
      expected,
  ), expected
  fn = SPEC_FUNCTIONS[name]
  if jit and name not in HOST_ONLY:
    fn = jax.jit(fn, static_argnums=1)
  with pytest.raises(ValueError) as e:
    fn(net4, spec3)
  got = str(e.value).replace("params passed to compact", "params")
  assert got == _as_in_the_params(expected)


@pytest.mark.parametrize("name", list(SPEC_FUNCTIONS))
def test_spec_functions_reject_params_of_another_width_or_missing_a_leaf(name):
  fn = SPEC_FUNCTIONS[name]
  wide = _params(units=5)
  msg = _as_in_the_params(_init_error(wide, SPEC))
  assert "Group 0: 'l0/kernel' has shape (3, 5)" in msg
  with pytest.raises(
      ValueError,
      match=re.escape(msg).replace(
          r"the\ params", r"the\ params(\ passed\ to\ compact)?"
      ),
  ):
    fn(wide, SPEC)
  params = _params()
  del params["l1"]["kernel"]
  msg = _as_in_the_params(_init_error(params, SPEC))
  assert "Group 0: 'l1/kernel' is missing from the params" in msg
  with pytest.raises(
      ValueError,
      match=re.escape(msg).replace(
          r"the\ params", r"the\ params(\ passed\ to\ compact)?"
      ),
  ):
    fn(params, SPEC)


def test_spec_functions_accept_the_params_they_were_built_for():
  params = _params()
  for name, fn in SPEC_FUNCTIONS.items():
    out = fn(params, SPEC)
    assert out is not None, name


# ---------------------------------------------------- masks and grouped leaves
MASK_KEEP = "(a mask or a filter must keep every grouped leaf)"


@pytest.mark.parametrize("name", SPEC_INIT)
@pytest.mark.parametrize("dropped", ["l0/bias", "l1/bias", "l1/kernel"])
def test_masking_a_grouped_leaf_out_says_masks_must_keep_it(name, dropped):
  params = _params()
  layer, leaf = dropped.split("/")
  mask = jax.tree.map(lambda _: True, params)
  mask[layer][leaf] = False
  tx = optax.masked(FACTORIES[name](), mask)
  with pytest.raises(ValueError) as e:
    tx.init(params)
  msg = str(e.value)
  assert f"Group 0: '{dropped}' is missing from the params passed to " in msg
  assert msg.endswith(MASK_KEEP + "."), msg


def test_masking_an_ungrouped_leaf_out_is_fine():
  params = dict(_params(), head={"kernel": jnp.ones((2, 2))})
  spec = ppx.UnitSpec.from_pairs(params, [("l0", "l1")])
  mask = jax.tree.map(lambda _: True, params)
  mask["head"]["kernel"] = False
  tx = optax.masked(ppx.pathprox(0.1, 1e-3, spec), mask)
  updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
  # optax.masked passes the masked-out update through unchanged
  np.testing.assert_array_equal(updates["head"]["kernel"], 1.0)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(
      np.linalg.norm(new["l0"]["kernel"], axis=0), 1.0, rtol=1e-6
  )
