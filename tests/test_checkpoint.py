"""pathprox_jax.checkpoint: an interrupted and resumed run is bitwise the uninterrupted one."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pathprox_jax as ppx
from tests.tree_utils import assert_bitwise as _assert_bitwise

pytest.importorskip("orbax.checkpoint")

TOTAL, RESUME_AT = 8, 3
WD = 0.15  # large enough that units are pruned after the resume point


def _model(seed):
  return ppx.FactorizedMLP(
      2, 8, in_features=6, num_classes=3, rngs=nnx.Rngs(seed)
  )


def _data():
  x = jax.random.normal(jax.random.key(1), (TOTAL, 16, 6))
  y = jax.random.randint(jax.random.key(2), (TOTAL, 16), 0, 3)
  return x, y


def _optimizers(spec):
  sched = optax.linear_schedule(0.5, 0.05, TOTAL)
  return {
      "pathprox": ppx.pathprox(0.5, WD, spec),
      "pathprox_schedule_momentum": ppx.pathprox(sched, WD, spec, momentum=0.9),
      "inject_hyperparams": optax.inject_hyperparams(
          ppx.pathprox, static_args=("units",)
      )(learning_rate=0.5, weight_decay=WD, units=spec),
      "guarded_schedule": ppx.skip_nonfinite(ppx.pathprox(sched, WD, spec)),
  }


def _step_fn(graphdef, tx):
  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def _tweak(name, opt_state, t):
  """With inject_hyperparams, change the lr mid-run (it must be restored)."""
  if name == "inject_hyperparams" and t == 1:
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.3, jnp.float32)
  return opt_state


@pytest.mark.parametrize(
    "name",
    [
        "pathprox",
        "pathprox_schedule_momentum",
        "inject_hyperparams",
        "guarded_schedule",
    ],
)
def test_resume_is_bitwise_identical(tmp_path, name):
  x, y = _data()
  model = _model(0)
  graphdef, params0 = nnx.split(model, nnx.Param)
  spec = model.unit_spec()
  tx = _optimizers(spec)[name]
  step = _step_fn(graphdef, tx)

  # Uninterrupted run.
  params, opt_state = params0, tx.init(params0)
  for t in range(TOTAL):
    opt_state = _tweak(name, opt_state, t)
    params, opt_state = step(params, opt_state, x[t], y[t])
  straight = (params, opt_state)

  # Interrupted at RESUME_AT ...
  params, opt_state = params0, tx.init(params0)
  for t in range(RESUME_AT):
    opt_state = _tweak(name, opt_state, t)
    params, opt_state = step(params, opt_state, x[t], y[t])
  ppx.save_checkpoint(tmp_path, RESUME_AT, params, opt_state)
  del params, opt_state

  # ... and resumed in a "new process": templates from a different init.
  _, other = nnx.split(_model(123), nnx.Param)
  ckpt = ppx.restore_checkpoint(tmp_path, other, tx.init(other))
  assert ckpt.step == RESUME_AT
  params, opt_state = ckpt.params, ckpt.opt_state
  assert type(opt_state) is type(straight[1])  # NamedTuples restored
  for t in range(ckpt.step, TOTAL):
    opt_state = _tweak(name, opt_state, t)
    params, opt_state = step(params, opt_state, x[t], y[t])

  _assert_bitwise((params, opt_state), straight)
  # Pruning really happened, so the test exercised the prox.
  assert float(ppx.active_units(params, spec).fraction) < 1.0


def test_abstract_templates_and_extra(tmp_path):
  params = {
      "a": {"kernel": jnp.arange(6.0).reshape(2, 3)},
      "b": {"kernel": jnp.ones((3, 2))},
  }
  spec = ppx.UnitSpec.from_pairs(params, [("a", "b")])
  tx = ppx.pathprox(0.1, 1e-3, spec, momentum=0.9)
  state = tx.init(params)
  key = jax.random.key(7)
  extra = {"key": jax.random.key_data(key), "position": jnp.asarray(41)}
  ppx.save_checkpoint(tmp_path, 5, params, state, extra=extra)
  ckpt = ppx.restore_checkpoint(
      tmp_path,
      jax.eval_shape(lambda: params),
      jax.eval_shape(tx.init, params),
      extra_template=jax.eval_shape(lambda: extra),
  )
  _assert_bitwise(
      (ckpt.params, ckpt.opt_state, ckpt.extra), (params, state, extra)
  )
  restored_key = jax.random.wrap_key_data(ckpt.extra["key"])
  np.testing.assert_array_equal(
      jax.random.normal(restored_key, (3,)), jax.random.normal(key, (3,))
  )


def test_latest_step_max_to_keep_and_overwrite(tmp_path):
  params = {"w": jnp.ones(3)}
  state = optax.sgd(0.1).init(params)
  assert ppx.latest_step(tmp_path / "missing") is None
  for s in (1, 2, 3):
    ppx.save_checkpoint(
        tmp_path, s, {"w": params["w"] * s}, state, max_to_keep=2
    )
  assert ppx.latest_step(tmp_path) == 3
  with pytest.raises(
      FileNotFoundError, match=r"step 1 .*saved steps are \[2, 3\]"
  ):
    ppx.restore_checkpoint(tmp_path, params, state, step=1)
  assert (
      float(
          ppx.restore_checkpoint(tmp_path, params, state, step=2).params["w"][0]
      )
      == 2.0
  )
  with pytest.raises(FileExistsError, match="step 3 already exists"):
    ppx.save_checkpoint(tmp_path, 3, params, state)
  ppx.save_checkpoint(
      tmp_path, 3, {"w": params["w"] * 9}, state, overwrite=True
  )
  assert (
      float(ppx.restore_checkpoint(tmp_path, params, state).params["w"][0])
      == 9.0
  )


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_bad_step_is_rejected(tmp_path, step):
  with pytest.raises(ValueError, match="non-negative integer"):
    ppx.save_checkpoint(tmp_path, step, {"w": jnp.ones(2)}, ())


def test_missing_checkpoints_are_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint directory"):
    ppx.restore_checkpoint(tmp_path / "nope", {}, ())
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    ppx.restore_checkpoint(tmp_path / "empty", {}, ())


def test_template_mismatch_names_the_path(tmp_path):
  params = {
      "a": {"kernel": jnp.ones((2, 3))},
      "b": {"kernel": jnp.ones((3, 2))},
  }
  state = optax.sgd(0.1, momentum=0.9).init(params)
  ppx.save_checkpoint(tmp_path, 0, params, state)

  wrong_shape = {"a": {"kernel": jnp.ones((2, 4))}, "b": params["b"]}
  with pytest.raises(
      ValueError, match=r"'params/a/kernel'.*shape \(2, 3\).*" r"shape \(2, 4\)"
  ):
    ppx.restore_checkpoint(tmp_path, wrong_shape, state)

  wrong_dtype = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params)
  with pytest.raises(ValueError, match=r"'params/a/kernel'.*float32.*bfloat16"):
    ppx.restore_checkpoint(tmp_path, wrong_dtype, state)

  with pytest.raises(
      ValueError,
      match=r"'params'.*stored but not in the " r"template: \['b/kernel'\]",
  ):
    ppx.restore_checkpoint(tmp_path, {"a": params["a"]}, state)

  adam_state = optax.adam(0.1).init(params)
  with pytest.raises(ValueError, match="'opt_state'"):
    ppx.restore_checkpoint(tmp_path, params, adam_state)

  with pytest.raises(ValueError, match="no 'extra' item"):
    ppx.restore_checkpoint(
        tmp_path, params, state, extra_template={"k": jnp.zeros(2)}
    )


def test_missing_orbax_gives_install_hint(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
  with pytest.raises(ImportError, match=r"pathprox-jax\[checkpoint\]"):
    ppx.save_checkpoint(tmp_path, 0, {"w": jnp.ones(2)}, ())
  with pytest.raises(ImportError, match=r"pathprox-jax\[checkpoint\]"):
    ppx.restore_checkpoint(tmp_path, {"w": jnp.ones(2)}, ())
