"""Subprocess worker for tests/test_sharding.py: 8 forced CPU devices.

Run as ``python tests/_sharding_worker.py``; prints one JSON object on the
last line of stdout. XLA_FLAGS must be set before jax is imported, which is
why this runs in its own process.

For each sharding layout (data parallel, model parallel along the unit axis,
model parallel along the other axis, and a 2-D data x model mesh) and each
optimizer, it takes a single-device trajectory and, at every step, runs the
same step from the same params and optimizer state with the params and batch
sharded under ``jax.jit`` with ``NamedSharding`` in/out shardings. It reports
the largest relative difference, whether pruning happened, and whether XLA
inserted cross-device reductions.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import pathprox_jax as ppx  # noqa: E402

IN, WIDTH, OUT, BATCH, STEPS = 16, 32, 8, 64, 4
LAYERS = [(IN, WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, OUT), (OUT, OUT)]
PAIRS = [("l0", "l1"), ("l2", "l3")]  # l4 is an ungrouped head


def init_params(key):
  params = {}
  for i, (a, b) in enumerate(LAYERS):
    key, k1, k2 = jax.random.split(key, 3)
    bound = 1.0 / np.sqrt(a)
    params[f"l{i}"] = {
        "kernel": jax.random.uniform(k1, (a, b), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(k2, (b,), jnp.float32, -bound, bound),
    }
  return params


def apply(params, x):
  # Factorized groups: relu inside each (l0->l1), (l2->l3); then a head.
  h = jax.nn.relu(x @ params["l0"]["kernel"] + params["l0"]["bias"])
  h = h @ params["l1"]["kernel"] + params["l1"]["bias"]
  h = jax.nn.relu(h @ params["l2"]["kernel"] + params["l2"]["bias"])
  h = h @ params["l3"]["kernel"] + params["l3"]["bias"]
  return jax.nn.relu(h) @ params["l4"]["kernel"] + params["l4"]["bias"]


def loss_fn(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(
      apply(params, x), y
  ).mean()


def make_step(tx):
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def param_specs(layout):
  """PartitionSpecs for the params under a layout."""
  unit = {
      "kernel_in": P(None, "model"),
      "bias_in": P("model"),
      "kernel_out": P("model", None),
      "bias_out": P(),
  }
  other = {
      "kernel_in": P("model", None),
      "bias_in": P(),
      "kernel_out": P(None, "model"),
      "bias_out": P("model"),
  }
  table = {"units": unit, "2d": unit, "other": other}.get(layout)
  specs = {}
  for i in range(len(LAYERS)):
    if table is None or i == 4:
      specs[f"l{i}"] = {"kernel": P(), "bias": P()}
    elif i % 2 == 0:
      specs[f"l{i}"] = {"kernel": table["kernel_in"], "bias": table["bias_in"]}
    else:
      specs[f"l{i}"] = {
          "kernel": table["kernel_out"],
          "bias": table["bias_out"],
      }
  return specs


MESHES = {
    "data": ((8,), ("data",)),
    "units": ((8,), ("model",)),
    "other": ((8,), ("model",)),
    "2d": ((2, 4), ("data", "model")),
}


def opt_state_shardings(opt_state, params, param_shardings, replicated):
  """Params-shaped sub-trees of the state get the params' shardings."""
  pdef = jax.tree.structure(params)

  def is_params(x):
    return jax.tree.structure(x) == pdef and x is not None

  return jax.tree.map(
      lambda sub: (
          jax.tree.map(lambda _, s: s, sub, param_shardings)
          if is_params(sub)
          else replicated
      ),
      opt_state,
      is_leaf=is_params,
  )


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(np.max(np.abs(b)), 1e-30) if b.size else 1.0
  return float(np.max(np.abs(a - b)) / scale) if b.size else 0.0


def optimizers(spec):
  """(optimizer, layouts to check). Hyper-parameters chosen so that units are
  pruned (but not all) within the compared steps."""
  return {
      "pathprox": (ppx.pathprox(0.5, 0.2, spec), tuple(MESHES)),
      "pathprox_momentum": (
          ppx.pathprox(0.2, 0.5, spec, momentum=0.9),
          ("units", "other"),
      ),
      "sgd_pathprox_update_nobalance": (
          optax.chain(
              optax.sgd(0.5), ppx.pathprox_update(0.5, 0.3, spec, balance=False)
          ),
          ("2d",),
      ),
  }


def main():
  assert jax.device_count() == 8, jax.devices()
  key = jax.random.key(0)
  params0 = init_params(key)
  spec = ppx.UnitSpec.from_pairs(params0, PAIRS)
  xs = jax.random.normal(jax.random.key(1), (STEPS, BATCH, IN))
  ys = jax.random.randint(jax.random.key(2), (STEPS, BATCH), 0, OUT)
  results = []
  for opt_name, (tx, layouts) in optimizers(spec).items():
    single = jax.jit(make_step(tx))
    # Reference trajectory on one device.
    traj = [(params0, tx.init(params0))]
    for t in range(STEPS):
      p, s, _ = single(*traj[-1], xs[t], ys[t])
      traj.append((p, s))
    counts = [ppx.active_units(p, spec).counts.tolist() for p, _ in traj]
    for layout in layouts:
      shape, names = MESHES[layout]
      mesh = jax.make_mesh(
          shape, names, axis_types=(AxisType.Auto,) * len(names)
      )
      rep = NamedSharding(mesh, P())
      p_sh = jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(layout))
      s_sh = opt_state_shardings(traj[0][1], params0, p_sh, rep)
      batch = P("data") if "data" in names else P()
      x_sh, y_sh = NamedSharding(mesh, batch), NamedSharding(mesh, batch)
      sharded = (
          jax.jit(
              make_step(tx),
              in_shardings=(p_sh, s_sh, x_sh, y_sh),
              out_shardings=(p_sh, s_sh, rep),
          )
          .lower(traj[0][0], traj[0][1], xs[0], ys[0])
          .compile()
      )
      hlo = sharded.as_text()
      worst, shardings_ok = 0.0, True
      for t in range(STEPS):
        p_t, s_t = traj[t]
        p_in = jax.device_put(p_t, p_sh)
        s_in = jax.device_put(s_t, s_sh)
        p_out, s_out, _ = sharded(
            p_in, s_in, jax.device_put(xs[t], x_sh), jax.device_put(ys[t], y_sh)
        )
        ref_p, ref_s = traj[t + 1]
        for a, b in zip(
            jax.tree.leaves((p_out, s_out)), jax.tree.leaves((ref_p, ref_s))
        ):
          worst = max(worst, rel_err(a, b))
        shardings_ok &= all(
            a.sharding.is_equivalent_to(s, a.ndim)
            for a, s in zip(jax.tree.leaves(p_out), jax.tree.leaves(p_sh))
        )
      results.append({
          "optimizer": opt_name,
          "layout": layout,
          "max_rel_err": worst,
          "active_counts": counts,
          "all_reduce": "all-reduce" in hlo,
          "shardings_ok": bool(shardings_ok),
      })

  # Sharded checkpoint round trip: save sharded params/state, restore into a
  # sharded template, compare bitwise and check the shardings survive.
  from pathprox_jax import checkpoint  # noqa: PLC0415

  mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
  p_sh = jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs("units"))
  tx = ppx.pathprox(0.2, 0.5, spec, momentum=0.9)
  p, s = traj[-1][0], tx.init(traj[-1][0])
  s_sh = opt_state_shardings(s, p, p_sh, NamedSharding(mesh, P()))
  p, s = jax.device_put(p, p_sh), jax.device_put(s, s_sh)
  with tempfile.TemporaryDirectory() as d:
    checkpoint.save_checkpoint(d, 3, p, s)
    template_p = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), p
    )
    template_s = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), s
    )
    ck = checkpoint.restore_checkpoint(d, template_p, template_s)
  ckpt = {
      "bitwise": all(
          bool(np.array_equal(np.asarray(a), np.asarray(b)))
          for a, b in zip(
              jax.tree.leaves((ck.params, ck.opt_state)),
              jax.tree.leaves((p, s)),
          )
      ),
      "shardings": all(
          a.sharding == b.sharding
          for a, b in zip(
              jax.tree.leaves((ck.params, ck.opt_state)),
              jax.tree.leaves((p, s)),
          )
      ),
  }
  print(
      json.dumps({
          "devices": jax.device_count(),
          "results": results,
          "checkpoint": ckpt,
      })
  )
  sys.stdout.flush()


if __name__ == "__main__":
  main()
