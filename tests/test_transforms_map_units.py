"""pathprox_jax.transforms.map_units: any map of the grouped weights as an optax transform."""

import jax
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from tests import reference
from tests.tree_utils import assert_tree_close, to_jnp

PAIRS = [("l0", "l1"), ("l2", "l3")]


def make(seed=0):
  r = np.random.default_rng(seed)
  sizes = {
      "l0": (4, 5),
      "l1": (5, 6),
      "l2": (6, 3),
      "l3": (3, 2),
      "head": (2, 2),
  }
  p = {
      k: {
          "kernel": r.normal(size=s).astype(np.float32),
          "bias": r.normal(size=s[-1]).astype(np.float32),
      }
      for k, s in sizes.items()
  }
  g = {
      k: {n: r.normal(size=a.shape).astype(np.float32) for n, a in d.items()}
      for k, d in p.items()
  }
  return p, g


def project(groups):
  return [ppx.prox.project_unit_sphere(x) for x in groups]


def double_outputs(groups):
  return [x.replace(v=tuple(2.0 * v for v in x.v)) for x in groups]


def step(tx, params, grads):
  @jax.jit
  def f(p, g):
    u, s = tx.update(g, tx.init(p), p)
    return u, optax.apply_updates(p, u)

  return f(to_jnp(params), to_jnp(grads))


def test_map_units_composes_in_a_chain():
  params, grads = make()
  spec = ppx.UnitSpec.from_pairs(params, PAIRS)
  lr = 0.1
  tx = optax.chain(
      optax.sgd(lr),
      ppx.map_units(spec, project),
      ppx.map_units(spec, double_outputs),
  )
  _, got = step(tx, params, grads)
  # NumPy: z = theta - lr g; w_i, b_i / ||w_i||; v doubled; the rest is SGD.
  z = reference.sgd_with_ungrouped_decay(params, grads, PAIRS, lr, 0.0)
  exp = reference.prox_step(z, PAIRS, tau=0.0)
  for _, b in PAIRS:
    exp[b]["kernel"] = 2.0 * exp[b]["kernel"]
  assert_tree_close(got, exp, rtol=1e-5, atol=1e-6)
  # followed by the library's own balancing transform
  tx2 = optax.chain(
      optax.sgd(lr),
      ppx.map_units(spec, project),
      ppx.balance_layers_update(spec),
  )
  _, got2 = step(tx2, params, grads)
  assert_tree_close(
      got2,
      reference.balance_walk(reference.prox_step(z, PAIRS, tau=0.0), PAIRS),
      rtol=1e-5,
      atol=1e-6,
  )


def test_map_units_is_the_prox_of_pathprox_update():
  params, grads = make(1)
  spec = ppx.UnitSpec.from_pairs(params, PAIRS)
  lr, lam = 0.1, 0.5
  fn = lambda groups: ppx.transforms.pathprox_groups(groups, lr, lam)
  _, got = step(
      optax.chain(optax.sgd(lr), ppx.map_units(spec, fn)), params, grads
  )
  _, exp = step(
      optax.chain(optax.sgd(lr), ppx.pathprox_update(lr, lam, spec)),
      params,
      grads,
  )
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(exp)):
    np.testing.assert_array_equal(a, b)


def test_untouched_arrays_keep_their_incoming_update_bitwise():
  params, grads = make(2)
  spec = ppx.UnitSpec.from_pairs(params, PAIRS)
  sgd_updates, _ = jax.jit(optax.sgd(0.1).update)(
      to_jnp(grads), optax.sgd(0.1).init(params)
  )
  only_w = lambda groups: [
      x.replace(w=tuple(w * 0 for w in x.w)) for x in groups
  ]
  upd, _ = step(
      optax.chain(optax.sgd(0.1), ppx.map_units(spec, only_w)), params, grads
  )
  for layer in ("l1", "l3", "head"):  # output kernels, ungrouped: as SGD
    for n in ("kernel", "bias"):
      np.testing.assert_array_equal(upd[layer][n], sgd_updates[layer][n])
  for layer in ("l0", "l2"):
    np.testing.assert_array_equal(
        upd[layer]["bias"], sgd_updates[layer]["bias"]
    )
    np.testing.assert_allclose(
        upd[layer]["kernel"], -params[layer]["kernel"], rtol=1e-6
    )  # new w = 0: update = -theta
  ident, _ = step(
      optax.chain(optax.sgd(0.1), ppx.map_units(spec, lambda g: g)),
      params,
      grads,
  )
  for a, b in zip(jax.tree.leaves(ident), jax.tree.leaves(sgd_updates)):
    np.testing.assert_array_equal(a, b)


def test_map_units_state_and_init_checks():
  params, _ = make(3)
  spec = ppx.UnitSpec.from_pairs(params, PAIRS)
  tx = ppx.map_units(spec, project)
  assert isinstance(tx.init(params), optax.EmptyState)
  with pytest.raises(ValueError, match=r"'l0/kernel' has shape \(4, 7\)"):
    tx.init(
        dict(
            params,
            l0={
                "kernel": np.ones((4, 7), np.float32),
                "bias": np.ones(7, np.float32),
            },
        )
    )
  with pytest.raises(ValueError, match="map_units needs the current params"):
    tx.update(params, None)


def test_map_units_on_a_group_with_a_flatten_view():
  """Unit 1 of a channels-last flatten owns rows 1, 5, 9 of the Dense kernel."""
  r = np.random.default_rng(4)
  params = {
      "conv": {"kernel": r.normal(size=(3, 3, 2, 4)).astype(np.float32)},
      "fc": {"kernel": r.normal(size=(3 * 4, 5)).astype(np.float32)},
  }
  spec = ppx.UnitSpec.from_groups(
      params,
      [
          ppx.UnitGroup(
              inputs=[("conv/kernel", -1)],
              outputs=[ppx.Slice("fc/kernel", 1, view=(3, 4, 5))],
          )
      ],
  )

  def kill_unit_1(groups):
    return [
        x.replace(
            v=(x.v[0].at[:, 1, :].set(0.0),), w=(x.w[0].at[..., 1].set(0.0),)
        )
        for x in groups
    ]

  zero = jax.tree.map(np.zeros_like, params)
  _, got = step(
      optax.chain(optax.sgd(0.1), ppx.map_units(spec, kill_unit_1)),
      params,
      zero,
  )
  exp_fc = params["fc"]["kernel"].copy()
  exp_fc[[1, 5, 9]] = 0.0
  np.testing.assert_array_equal(got["fc"]["kernel"], exp_fc)
  exp_conv = params["conv"]["kernel"].copy()
  exp_conv[..., 1] = 0.0
  np.testing.assert_array_equal(got["conv"]["kernel"], exp_conv)
