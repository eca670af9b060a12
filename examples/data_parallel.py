"""PathProx with data and model parallelism (JAX SPMD) on 8 CPU devices.

Trains the Task 1 network (``FactorizedMLP(3, 400)``) on the offline MNIST
subset with :func:`pathprox_jax.pathprox`, with params and batches laid out
over a ``jax.sharding.Mesh`` and one ``jax.jit`` with ``NamedSharding``
in/out shardings; XLA inserts the collectives (gradient all-reduce for data
parallelism, the reductions behind the per-unit norms and the layer-wise
balancing for model parallelism). Layouts:

* ``data``:  batch split over 8 devices, params replicated;
* ``units``: every unit group's input kernel split along its unit (output)
  axis, its bias likewise, and its output kernel along its unit (input) axis,
  so each device owns whole units;
* ``other``: the kernels split along their other axis (input kernels along
  fan-in, output kernels along fan-out), so every unit is spread over all
  devices and its norm needs a cross-device reduction;
* ``2d``:    a 2 x 4 ``(data, model)`` mesh: batch over ``data``, units over
  ``model``.

An axis that the mesh does not divide (e.g. the 10 classes) is replicated.
The same run is made on one device first. The first step, from the same
params, agrees to float reduction order (~1e-7 relative); later steps
drift apart because training this network is sensitive to rounding (plain
SGD too), so the runs are compared by their final metrics.

The fake devices come from ``XLA_FLAGS=--xla_force_host_platform_device_count``
which must be set before jax is imported, as done below. On a real
multi-device (or multi-host, see docs/SCALING.md) machine drop that line.

Usage (one process, 8 forced CPU devices)::

    python examples/data_parallel.py --layout all --steps 200

Several processes (one per host; here two on one machine, 4 devices each)::

    python examples/data_parallel.py --devices 4 --coordinator 127.0.0.1:12355 \
        --num-processes 2 --process-id 0 &
    python examples/data_parallel.py --devices 4 --coordinator 127.0.0.1:12355 \
        --num-processes 2 --process-id 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
      "--layout", default="all", choices=["data", "units", "other", "2d", "all"]
  )
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--batch", type=int, default=200)
  p.add_argument("--lr", type=float, default=0.3)
  p.add_argument("--weight-decay", type=float, default=1e-4)
  p.add_argument(
      "--devices",
      type=int,
      default=8,
      help="forced CPU devices per process (0: use the real ones)",
  )
  p.add_argument(
      "--coordinator",
      default=None,
      help="multi-host: address:port of process 0",
  )
  p.add_argument("--num-processes", type=int, default=1)
  p.add_argument("--process-id", type=int, default=0)
  return p.parse_args()


ARGS = _parse()
if ARGS.devices:
  if "jax" in sys.modules:
    raise RuntimeError("XLA_FLAGS must be set before jax is imported.")
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count={ARGS.devices}"
  )

# pylint: disable=wrong-import-position
import jax  # noqa: E402

if ARGS.coordinator:  # must precede every other JAX call
  jax.distributed.initialize(
      coordinator_address=ARGS.coordinator,
      num_processes=ARGS.num_processes,
      process_id=ARGS.process_id,
  )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import pathprox_jax as ppx  # noqa: E402
from pathprox_jax.data import load_mnist_subset  # noqa: E402


def make_mesh(layout: str) -> jax.sharding.Mesh:
  n = jax.device_count()
  shape, names = {
      "data": ((n,), ("data",)),
      "units": ((n,), ("model",)),
      "other": ((n,), ("model",)),
      "2d": ((2, n // 2), ("data", "model")),
  }[layout]
  # Auto axes: classic GSPMD, driven by the jit in/out shardings.
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))


def _axis_spec(shape, axis, mesh, name="model"):
  """PartitionSpec splitting ``axis`` over mesh axis ``name`` if it divides."""
  spec = [None] * len(shape)
  if name in mesh.axis_names and shape[axis] % mesh.shape[name] == 0:
    spec[axis] = name
  return P(*spec)


def param_shardings(params, spec: ppx.UnitSpec, mesh, layout: str):
  """A NamedSharding per parameter, chosen from its place in the UnitSpec.

  "units"/"2d": every unit slice is split along the leaf axis that holds its
  units; "other": along its last non-unit axis (output biases along their
  last axis); everything else is replicated.
  """
  axes = {}
  for g in spec.groups:
    for s in g.inputs + g.biases + g.outputs:
      unit = s.leaf_axis
      if layout in ("units", "2d"):
        axes[s.path] = unit
      elif layout == "other" and s not in g.biases:
        axes[s.path] = max(a for a in range(len(s.shape)) if a != unit)
    if layout == "other":
      axes.update({p: -1 for p in g.output_biases})

  def one(kp, x):
    axis = axes.get(ppx.units.path_str(kp))
    if axis is None:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, _axis_spec(x.shape, axis, mesh))

  return jax.tree_util.tree_map_with_path(one, params)


def opt_state_shardings(opt_state, params, p_shardings, replicated):
  """Params-shaped parts of the optimizer state follow the params' layout.

  (Equivalent to ``optax.tree_map_params``; scalars such as step counts are
  replicated.)
  """
  pdef = jax.tree.structure(params)

  def is_params(x):
    return x is not None and jax.tree.structure(x) == pdef

  return jax.tree.map(
      lambda sub: (
          jax.tree.map(lambda _, s: s, sub, p_shardings)
          if is_params(sub)
          else replicated
      ),
      opt_state,
      is_leaf=is_params,
  )


def make_train(graphdef, tx, batch_sharding):
  """``steps`` PathProx steps in one compiled call (lax.scan, no host trips)."""

  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def train(params, opt_state, x_all, y_all, batch_idx):
    def step(carry, idx):
      params, opt_state = carry
      x, y = x_all[idx], y_all[idx]
      if batch_sharding is not None:  # split the batch over the data axis
        x = jax.lax.with_sharding_constraint(x, batch_sharding)
        y = jax.lax.with_sharding_constraint(y, batch_sharding)
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    # The first step is kept apart so that its result can be compared with
    # the single-device one (the same step from the same params).
    carry, first_loss = step((params, opt_state), batch_idx[0])
    first_params = carry[0]
    (params, opt_state), losses = jax.lax.scan(step, carry, batch_idx[1:])
    return (
        params,
        opt_state,
        jnp.concatenate([first_loss[None], losses]),
        first_params,
    )

  return train


def put_global(tree, shardings):
  """Host values -> global arrays with the given shardings.

  Every process passes the same values (same seed, same data) and
  contributes the shards its own devices hold, so this works on one host
  and on several.
  """

  def one(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, shardings), tree)
  return jax.tree.map(one, tree, shardings)


def make_evaluate(graphdef, spec):
  def evaluate(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return acc, ppx.active_units(params, spec).fraction

  return evaluate


def main():
  log = print if jax.process_index() == 0 else (lambda *a, **k: None)
  data = load_mnist_subset(100, seed=0)  # 1000 train / 4000 test
  model = ppx.FactorizedMLP(3, 400, rngs=nnx.Rngs(0))
  graphdef, params0 = nnx.split(model, nnx.Param)
  spec = model.unit_spec()
  tx = ppx.pathprox(ARGS.lr, ARGS.weight_decay, spec)
  opt_state0 = tx.init(params0)
  rng = np.random.default_rng(0)
  batch_idx = rng.integers(0, len(data.x_train), (ARGS.steps, ARGS.batch))
  host_inputs = (data.x_train, data.y_train, batch_idx)
  log(
      f"{jax.process_count()} process(es), {jax.device_count()} devices; "
      f"{ARGS.steps} steps, batch {ARGS.batch}; {spec}"
  )

  ref_first = None
  if jax.process_count() == 1:  # single-device reference
    ref_train = jax.jit(make_train(graphdef, tx, None))
    t0 = time.perf_counter()
    ref_params, _, ref_losses, ref_first = jax.block_until_ready(
        ref_train(params0, opt_state0, *host_inputs)
    )
    acc, active = jax.jit(make_evaluate(graphdef, spec))(
        ref_params, data.x_test, data.y_test
    )
    log(
        f"single device: {time.perf_counter() - t0:.1f}s (incl. compile); "
        f"loss {float(ref_losses[-1]):.4f}; test acc {float(acc):.3f}; "
        f"active units {float(active):.3f}"
    )

  layouts = (
      ["data", "units", "other", "2d"]
      if ARGS.layout == "all"
      else [ARGS.layout]
  )
  for layout in layouts:
    mesh = make_mesh(layout)
    rep = NamedSharding(mesh, P())
    p_sh = param_shardings(params0, spec, mesh, layout)
    s_sh = opt_state_shardings(opt_state0, params0, p_sh, rep)
    batch_sh = (
        NamedSharding(mesh, P("data")) if "data" in mesh.axis_names else None
    )
    train = jax.jit(
        make_train(graphdef, tx, batch_sh),
        in_shardings=(p_sh, s_sh, rep, rep, rep),
        out_shardings=(p_sh, s_sh, rep, p_sh),
    )
    evaluate = jax.jit(
        make_evaluate(graphdef, spec),
        in_shardings=(p_sh, rep, rep),
        out_shardings=rep,
    )
    params = put_global(params0, p_sh)
    opt_state = put_global(opt_state0, s_sh)
    inputs = put_global(host_inputs, rep)
    t0 = time.perf_counter()
    params, opt_state, losses, first = jax.block_until_ready(
        train(params, opt_state, *inputs)
    )
    elapsed = time.perf_counter() - t0
    acc, active = evaluate(params, *put_global((data.x_test, data.y_test), rep))
    k0 = params["layers"][0]["kernel"]
    log(
        f"[{layout:5s}] mesh {dict(mesh.shape)}; layers/0/kernel "
        f"{k0.shape} as {k0.sharding.spec}, per device "
        f"{k0.addressable_shards[0].data.shape}; {elapsed:.1f}s (incl. "
        "compile)"
    )
    if ref_first is not None:
      log(
          "        first step vs 1 device: max rel. diff "
          f"{_rel_diff(first, ref_first):.1e}"
      )
    log(
        f"        after {ARGS.steps} steps: loss {float(losses[-1]):.4f}; "
        f"test acc {float(acc):.3f}; active units {float(active):.3f}"
    )


def _rel_diff(tree, ref):
  return max(
      float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
      for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(ref))
  )


if __name__ == "__main__":
  main()
