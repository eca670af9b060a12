"""pathprox_jax.transforms.proxgen: proxgen_adam, proxgen_sgd with elementwise and tree proxes
(ppx.prox.elementwise, ppx.prox.unit_group_lasso, a user-defined tree prox).

Every update is compared with an independent NumPy (float64) implementation
of ProxGen's Algorithm 1 / eq. 2 (``tests/reference.py``); the transforms
run under ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pathprox_jax as ppx
from tests import reference
from tests.tree_utils import finite, flat, grads_like, make_params, run

RTOL, ATOL = 2e-5, 1e-6


# ---------------------------------------------------------------------------
# proxgen_adam / proxgen_sgd with elementwise proxes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize(
    "prox,np_prox",
    [(ppx.prox.prox_l1, reference.soft), (ppx.prox.prox_l0, reference.hard)],
    ids=["l1", "l0"],
)
def test_proxgen_adam_matches_numpy(bias_correction, prox, np_prox):
  params = make_params()
  grads = grads_like(params, 4)
  sched = optax.linear_schedule(0.05, 0.01, 3)
  reg, b1, b2, eps = 0.3, 0.8, 0.95, 1e-6
  tx = ppx.proxgen_adam(
      sched, reg, prox, b1=b1, b2=b2, eps=eps, bias_correction=bias_correction
  )
  out, state = run(tx, params, grads)

  p = flat(params)
  adam = reference.Adam(p, b1, b2, bias_correction)
  for t, g in enumerate(grads):
    lr = float(sched(t))  # schedule sees the pre-increment count
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + eps
      z = p[k] - lr * m_hat[k] / d
      p[k] = np_prox(z, lr * reg / d) if k.endswith("kernel") else z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)
  assert int(state.count) == len(grads)
  assert np.any(got["fc1/kernel"] == 0)  # the thresholds bite
  np.testing.assert_allclose(
      flat(state.mu)["fc2/bias"], adam.mu["fc2/bias"], rtol=RTOL
  )


def test_array_scaling_prox_is_coordinatewise():
  """With Adam's array scaling, l1/2 acts as the scalar prox per coordinate."""
  params = make_params(2)
  grads = grads_like(params, 2, seed=3)
  lr, reg = 0.05, 0.05
  out, _ = run(
      ppx.proxgen_adam(
          lr,
          reg,
          ppx.prox.prox_l_half,
          mask=lambda p: jax.tree.map(lambda _: True, p),
      ),
      params,
      grads,
  )
  p = flat(params)
  adam = reference.Adam(p)
  half = jax.jit(jax.vmap(ppx.prox.prox_l_half, in_axes=(0, None, 0)))
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      z = (p[k] - lr * m_hat[k] / d).ravel()
      s = (lr / d).ravel()
      # one scalar prox per coordinate, each with its own scalar scaling
      p[k] = np.asarray(
          half(jnp.asarray(z, jnp.float32), reg, jnp.asarray(s, jnp.float32)),
          np.float64,
      ).reshape(p[k].shape)
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)
  assert any(np.any(v == 0) for v in got.values())


def test_masked_leaves_get_plain_adam():
  params = make_params()
  grads = grads_like(params, 3)
  only_fc2 = {"fc1": False, "fc2": {"kernel": True, "bias": False}}
  out, _ = run(
      ppx.proxgen_adam(0.01, 1e6, ppx.prox.prox_l1, mask=only_fc2),
      params,
      grads,
  )
  ref, _ = run(optax.adam(0.01), params, grads)
  assert np.all(np.asarray(out["fc2"]["kernel"]) == 0)  # huge reg: all zero
  for path in (("fc1", "kernel"), ("fc1", "bias"), ("fc2", "bias")):
    a, b = out[path[0]][path[1]], ref[path[0]][path[1]]
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
    )
  # default mask: kernels only (ppx.units.kernel_mask)
  out, _ = run(ppx.proxgen_adam(0.01, 1e6, ppx.prox.prox_l1), params, grads)
  assert np.all(np.asarray(out["fc1"]["kernel"]) == 0)
  assert np.all(np.asarray(out["fc1"]["bias"]) != 0)
  # a callable mask
  out, _ = run(
      ppx.proxgen_adam(
          0.01,
          1e6,
          ppx.prox.prox_l1,
          mask=ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")]).mask(
              "input_kernel"
          ),
      ),
      params,
      grads,
  )
  assert np.all(np.asarray(out["fc1"]["kernel"]) == 0)
  assert np.all(np.asarray(out["fc2"]["kernel"]) != 0)


def test_unit_scaling_reduces_to_plain_prox():
  params = make_params()
  zero = [jax.tree.map(jnp.zeros_like, params)]
  for prox in (ppx.prox.prox_l1, ppx.prox.prox_l0, ppx.prox.prox_l_half):
    out, _ = run(ppx.proxgen_sgd(1.0, 0.05, prox), params, zero)
    np.testing.assert_array_equal(
        np.asarray(out["fc1"]["kernel"]),
        np.asarray(prox(params["fc1"]["kernel"], 0.05, 1.0)),
    )
    np.testing.assert_array_equal(
        np.asarray(out["fc1"]["bias"]), np.asarray(params["fc1"]["bias"])
    )


@pytest.mark.parametrize(
    "momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)]
)
def test_proxgen_sgd_matches_numpy(momentum, nesterov):
  params = make_params()
  grads = grads_like(params, 3)
  lr, reg = 0.1, 0.5
  out, state = run(
      ppx.proxgen_sgd(
          lr, reg, ppx.prox.prox_l1, momentum=momentum, nesterov=nesterov
      ),
      params,
      grads,
  )
  assert isinstance(state, ppx.ProxGenSGDState) and int(state.count) == 3
  assert (state.trace is None) == (momentum == 0)
  p = flat(params)
  trace = {k: np.zeros_like(v) for k, v in p.items()}
  for g in map(flat, grads):
    for k in p:
      trace[k] = g[k] + momentum * trace[k]
      direction = g[k] + momentum * trace[k] if nesterov else trace[k]
      z = p[k] - lr * direction
      p[k] = reference.soft(z, lr * reg) if k.endswith("kernel") else z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_inject_hyperparams_and_schedules():
  params = make_params()
  grads = grads_like(params, 3)
  factory = optax.inject_hyperparams(
      ppx.proxgen_adam, static_args=("prox", "mask")
  )
  tx = factory(learning_rate=0.02, weight_decay=0.1, prox=ppx.prox.prox_l1)
  out_inj, state = run(tx, params, grads)
  out_ref, _ = run(ppx.proxgen_adam(0.02, 0.1, ppx.prox.prox_l1), params, grads)
  for a, b in zip(jax.tree.leaves(out_inj), jax.tree.leaves(out_ref)):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
    )
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.02)
  # changing the injected learning rate to 0 freezes the params exactly
  state.hyperparams["learning_rate"] = jnp.zeros([])
  upd, _ = jax.jit(tx.update)(grads[0], state, out_inj)
  assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(upd))
  # a schedule for the weight decay: 0 at step 0 leaves the kernels dense
  tx = ppx.proxgen_adam(
      0.02, optax.linear_schedule(0.0, 1e6, 1), ppx.prox.prox_l1
  )
  out, _ = run(tx, params, grads[:1])
  assert np.all(np.asarray(out["fc1"]["kernel"]) != 0)
  out, _ = run(tx, params, grads[:2])
  assert np.all(np.asarray(out["fc1"]["kernel"]) == 0)


def test_zero_grads_at_step_zero_are_finite():
  """v_hat = 0 gives scaling = lr / eps (huge): everything stays finite."""
  params = make_params()
  zero = [jax.tree.map(jnp.zeros_like, params)] * 2
  spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
  for tx in (
      ppx.proxgen_adam(1e-3, 1e-4, ppx.prox.prox_l1),
      ppx.proxgen_adam(1e-3, 1e-4, ppx.prox.prox_l_half),
      ppx.proxgen_adam(1e-3, 1e-4, ppx.prox.unit_group_lasso(spec)),
  ):
    out, state = run(tx, params, zero)
    assert finite((out, state))
  # and a zero learning rate (warm-up start) is the identity
  out, _ = run(
      ppx.proxgen_adam(0.0, 1e-4, ppx.prox.unit_group_lasso(spec)), params, zero
  )
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------
# Group prox over units
# ---------------------------------------------------------------------------


def test_unit_group_lasso_matches_numpy():
  params = make_params(4)
  grads = grads_like(params, 2, seed=5)
  spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
  lr, reg = 0.05, 4.0
  out, _ = run(
      ppx.proxgen_adam(lr, reg, ppx.prox.unit_group_lasso(spec)), params, grads
  )
  # the same as an explicit partial + mask: another program with the same
  # float32 operations, equal up to a few ulps per step (2 steps, 4 ulps each)
  out2, _ = run(
      ppx.proxgen_adam(
          lr,
          reg,
          functools.partial(ppx.prox.prox_group_lasso, axis=-2),
          mask=spec.mask("output_kernel"),
      ),
      params,
      grads,
  )
  tol = 4 * len(grads) * float(np.finfo(np.float32).eps)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out2)):
    np.testing.assert_allclose(
        np.asarray(a),
        np.asarray(b),
        rtol=tol,
        atol=tol * float(np.max(np.abs(b))),
    )
    np.testing.assert_array_equal(np.asarray(a) == 0, np.asarray(b) == 0)
  p = flat(params)
  adam = reference.Adam(p)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    for k in p:
      d = np.sqrt(v_hat[k]) + 1e-8
      z = p[k] - lr * m_hat[k] / d
      if k == "fc2/kernel":  # rows are units
        z = np.stack([
            reference.group_prox_root(z[i], reg, lr / d[i])
            for i in range(z.shape[0])
        ])
      p[k] = z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)
  rows_zero = np.all(got["fc2/kernel"] == 0, axis=1)
  assert 0 < rows_zero.sum() < 5


def two_heads(seed=6):
  """fc1 feeds two heads: unit i's group is row i of head_a and column i of
  head_b (stored (out, in), units on axis 1)."""
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  params = {
      "fc1": {"kernel": f32(3, 6), "bias": f32(6)},
      "head_a": {"kernel": f32(6, 2), "bias": f32(2)},
      "head_b": {"kernel": f32(4, 6)},
  }
  spec = ppx.UnitSpec.from_groups(
      params,
      [
          ppx.UnitGroup(
              inputs=[("fc1/kernel", 1)],
              biases=["fc1/bias"],
              outputs=[
                  ppx.Slice("head_a/kernel", 0, bias="head_a/bias"),
                  ("head_b/kernel", 1),
              ],
          )
      ],
  )
  return params, spec


def test_unit_group_prox_on_two_output_slices_scalar_scaling():
  params, spec = two_heads()
  prox = ppx.prox.unit_group_lasso(spec)
  assert isinstance(prox, ppx.prox.UnitGroupLasso) and prox.units is spec
  va, vb = np.asarray(params["head_a"]["kernel"]), np.asarray(
      params["head_b"]["kernel"]
  )
  norms = reference.unit_norms([va, vb], [0, 1])
  tau = float(np.median(norms))
  out = jax.jit(lambda z: prox(z, tau / 2, 2.0))(params)
  ea, eb = reference.group_soft_threshold([va, vb], [0, 1], tau)
  np.testing.assert_allclose(out["head_a"]["kernel"], ea, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out["head_b"]["kernel"], eb, rtol=1e-5, atol=1e-7)
  dead = norms <= tau
  assert 0 < dead.sum() < 6
  # a unit is removed from both heads at once; everything else is untouched
  np.testing.assert_array_equal(
      np.all(np.asarray(out["head_a"]["kernel"]) == 0, 1), dead
  )
  np.testing.assert_array_equal(
      np.all(np.asarray(out["head_b"]["kernel"]) == 0, 0), dead
  )
  for k in ("fc1/kernel", "fc1/bias", "head_a/bias"):
    np.testing.assert_array_equal(flat(out)[k], flat(params)[k])
  # the group norm spans both heads: each head alone is below the threshold
  # for some units that survive
  alone = reference.unit_norms([va], [0])
  assert np.any((alone <= tau) & ~dead)


def test_unit_group_prox_on_two_output_slices_adam_metric():
  params, spec = two_heads(7)
  grads = grads_like(params, 2, seed=8)
  lr, reg = 0.05, 20.0
  out, _ = run(
      ppx.proxgen_adam(lr, reg, ppx.prox.unit_group_lasso(spec)), params, grads
  )
  p = flat(params)
  adam = reference.Adam(p)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    z = {k: p[k] - lr * m_hat[k] / (np.sqrt(v_hat[k]) + 1e-8) for k in p}
    s = {k: lr / (np.sqrt(v_hat[k]) + 1e-8) for k in p}
    z["head_a/kernel"], z["head_b/kernel"] = reference.group_prox_slices(
        [z["head_a/kernel"], z["head_b/kernel"]],
        [0, 1],
        reg,
        [s["head_a/kernel"], s["head_b/kernel"]],
    )
    p = z
  got = flat(out)
  for k in p:  # float32 z through a prox that is steep near the threshold
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=2e-5, err_msg=k)
  dead = np.all(got["head_a/kernel"] == 0, axis=1)
  np.testing.assert_array_equal(dead, np.all(got["head_b/kernel"] == 0, axis=0))
  assert 0 < dead.sum() < 6


def test_group_prox_with_proxgen_sgd_is_stochastic_proximal_gradient():
  params, spec = two_heads(9)
  grads = grads_like(params, 2, seed=10)
  lr, reg = 0.1, 10.0
  out, _ = run(
      ppx.proxgen_sgd(lr, reg, ppx.prox.unit_group_lasso(spec)), params, grads
  )
  p = flat(params)
  for g in map(flat, grads):
    z = {k: p[k] - lr * g[k] for k in p}
    z["head_a/kernel"], z["head_b/kernel"] = reference.group_soft_threshold(
        [z["head_a/kernel"], z["head_b/kernel"]], [0, 1], lr * reg
    )
    p = z
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)
  assert np.any(np.all(got["head_a/kernel"] == 0, axis=1))


def test_nnx_optimizer_and_unit_group_prox():
  model = ppx.MLP(3, 16, in_features=8, num_classes=3, rngs=nnx.Rngs(0))
  spec = model.unit_spec()
  tx = ppx.proxgen_adam(1e-2, 0.5, ppx.prox.unit_group_lasso(spec))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 8)), jnp.float32)
  y = jnp.arange(32) % 3

  @nnx.jit
  def step(model, opt):
    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    _, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)

  for _ in range(5):
    step(model, opt)
  v = np.asarray(model.layers[1].kernel[...])
  assert np.isfinite(v).all()
  assert np.any(np.all(v == 0, axis=1))  # whole units removed
  assert np.all(np.asarray(model.layers[2].kernel[...]) != 0)  # head untouched


# ---------------------------------------------------------------------------
# The tree-prox protocol
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ColumnGroupLasso:
  """A user's structured prox, written against the protocol only:
  ``weight_decay * sum_j ||K[:, j]||`` on the columns of one kernel (each
  output neuron's incoming weights), in the metric ``1 / scaling``."""

  layer: str = "fc1"

  def __call__(self, tree, weight_decay, scaling):
    x = tree[self.layer]["kernel"]
    s = scaling[self.layer]["kernel"] if isinstance(scaling, dict) else scaling
    y = ppx.prox.prox_group_lasso(x, weight_decay, s, axis=1)
    return {**tree, self.layer: {**tree[self.layer], "kernel": y}}

  def check(self, params, name):
    if "kernel" not in params.get(self.layer, {}):
      raise ValueError(f"{name}: ColumnGroupLasso needs '{self.layer}/kernel'.")


def np_column_prox(z, lam, s, solver):
  return np.stack(
      [
          solver(z[:, j], lam, s[:, j] if np.ndim(s) else s)
          for j in range(z.shape[1])
      ],
      axis=1,
  )


def test_a_user_tree_prox_works_with_proxgen_adam():
  params = make_params(11)
  grads = grads_like(params, 3, seed=12)
  lr, lam = 0.05, 2.0
  out, _ = run(ppx.proxgen_adam(lr, lam, ColumnGroupLasso()), params, grads)
  p = flat(params)
  adam = reference.Adam(p)
  for g in grads:
    m_hat, v_hat = adam.step(flat(g))
    d = {k: np.sqrt(v) + 1e-8 for k, v in v_hat.items()}
    p = {k: p[k] - lr * m_hat[k] / d[k] for k in p}
    p["fc1/kernel"] = np_column_prox(
        p["fc1/kernel"], lam, lr / d["fc1/kernel"], reference.group_prox_root
    )
  got = flat(out)
  for k in p:  # every other leaf: the plain Adam step
    np.testing.assert_allclose(got[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)
  dead = np.all(got["fc1/kernel"] == 0, axis=0)
  assert 0 < dead.sum() < 5
  # check() runs at init, naming what is missing
  with pytest.raises(
      ValueError, match="proxgen_adam: ColumnGroupLasso needs 'fc1/kernel'"
  ):
    ppx.proxgen_adam(lr, lam, ColumnGroupLasso()).init({"fc2": params["fc2"]})
  # a tree prox chooses its own leaves: no mask
  with pytest.raises(ValueError, match="`mask` applies to an elementwise"):
    ppx.proxgen_adam(lr, lam, ColumnGroupLasso(), mask={"fc1": True})


def test_a_user_tree_prox_works_with_proxgen_sgd():
  params = make_params(13)
  grads = grads_like(params, 2, seed=14)
  lr, lam = 0.1, 4.5
  out, _ = run(ppx.proxgen_sgd(lr, lam, ColumnGroupLasso()), params, grads)
  p = flat(params)
  for g in map(flat, grads):
    p = {k: p[k] - lr * g[k] for k in p}
    (p["fc1/kernel"],) = reference.group_soft_threshold(
        [p["fc1/kernel"]], [1], lr * lam
    )
  got = flat(out)
  for k in p:
    np.testing.assert_allclose(got[k], p[k], rtol=RTOL, atol=ATOL, err_msg=k)
  dead = np.all(got["fc1/kernel"] == 0, axis=0)
  assert 0 < dead.sum() < 5, dead


MASKS = {
    "kernels": None,
    "fc2_kernel": {"fc1": False, "fc2": {"kernel": True, "bias": False}},
    "callable": lambda p: jax.tree.map(lambda _: True, p),
}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize(
    "factory", [ppx.proxgen_adam, ppx.proxgen_sgd], ids=["adam", "sgd"]
)
def test_elementwise_lift_equals_prox_with_mask(factory, mask):
  params = make_params(15)
  grads = grads_like(params, 3, seed=16)
  m = MASKS[mask]
  lifted, _ = run(
      factory(0.05, 0.3, ppx.prox.elementwise(ppx.prox.prox_l1, m)),
      params,
      grads,
  )
  plain, _ = run(factory(0.05, 0.3, ppx.prox.prox_l1, mask=m), params, grads)
  for a, b in zip(jax.tree.leaves(lifted), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_elementwise_lift_applied_to_a_tree_matches_numpy():
  params = make_params(17)
  mask = {"fc1": {"kernel": True, "bias": True}, "fc2": False}
  tp = ppx.prox.elementwise(ppx.prox.prox_l1, mask)
  scaling = jax.tree.map(lambda a: jnp.full_like(a, 0.5), params)
  scaling["fc1"]["kernel"] = scaling["fc1"]["kernel"].at[0].set(2.0)
  got = flat(jax.jit(lambda p, s: tp(p, 0.2, s))(params, scaling))
  p, s = flat(params), flat(scaling)
  for k in p:
    want = reference.soft(p[k], 0.2 * s[k]) if k.startswith("fc1") else p[k]
    np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-7, err_msg=k)
  # a scalar scaling, the default mask (kernels only)
  kernels = ppx.prox.elementwise(ppx.prox.prox_l1)
  got = flat(jax.jit(lambda p: kernels(p, 0.2, 0.5))(params))
  for k in p:
    want = reference.soft(p[k], 0.1) if k.endswith("kernel") else p[k]
    np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-7, err_msg=k)


def test_unit_group_lasso_peer_decays_the_kernels_in_no_group():
  """The ProxGen peer of the path-norm objective on a transformer,
  chain(ungrouped_weight_decay, proxgen_adam(unit_group_lasso)): the
  attention kernels (in no group) get the coupled decay lambda K, grouped
  input kernels are left alone, and output kernels whose gradients were
  all zero are pruned (d = eps)."""
  model = ppx.Transformer(64, 16, 2, 4, 32, 16, rngs=nnx.Rngs(0))
  spec = model.unit_spec()
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  lr, lam = 1e-3, 0.1
  tx = optax.chain(
      ppx.ungrouped_weight_decay(lam, spec),
      ppx.proxgen_adam(lr, lam, ppx.prox.unit_group_lasso(spec)),
  )
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  u, x, roles = flat(updates), flat(params), spec.roles
  by_role = {
      r: [p for p, q in roles.items() if q == r] for r in set(roles.values())
  }
  assert by_role["ungrouped_kernel"] and by_role["input_kernel"]
  for p in by_role["ungrouped_kernel"]:
    g = lam * x[p]  # m^ = g, sqrt(v^) = |g|
    np.testing.assert_allclose(
        u[p], -lr * g / (np.abs(g) + 1e-8), rtol=1e-4, err_msg=p
    )
  for p in by_role["input_kernel"]:  # no decay, zero gradient: unchanged
    np.testing.assert_array_equal(u[p], 0.0)
  for p in by_role["output_kernel"]:  # threshold lr lam / eps: pruned
    np.testing.assert_array_equal(x[p] + u[p], 0.0)


# ---------------------------------------------------------------------------
# float16 params
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("zero_step", [0, 2])
@pytest.mark.parametrize("prox", ["l1", "unit_group_lasso"])
def test_float16_params_with_default_eps_stay_finite(prox, zero_step):
  """float16 params with the default eps = 1e-8 and a step whose gradient is
  all zero: sqrt(v^) + eps must not underflow to 0 (moments in float32)."""
  params = jax.tree.map(lambda a: a.astype(jnp.float16), make_params(18))
  spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
  grads = [
      jax.tree.map(lambda a: a.astype(jnp.float16), g)
      for g in grads_like(params, 4, seed=19)
  ]
  grads[zero_step] = jax.tree.map(jnp.zeros_like, grads[zero_step])
  p = ppx.prox.prox_l1 if prox == "l1" else ppx.prox.unit_group_lasso(spec)
  out, state = run(ppx.proxgen_adam(1e-2, 1e-3, p), params, grads)
  assert finite((out, state))
  assert all(a.dtype == jnp.float16 for a in jax.tree.leaves(out))
  assert all(
      m.dtype == jnp.float32 for m in jax.tree.leaves((state.mu, state.nu))
  )
  assert np.all(
      np.asarray(out["fc1"]["bias"]) != np.asarray(params["fc1"]["bias"])
  )
