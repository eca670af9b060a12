"""Same numbers as an earlier release: 20-step trajectories on the Task 1 model.

Trains MLP-3-400 factorized (PyTorch init, 1000 real MNIST digits, batch 200)
for 20 steps with PathProx (balancing on/off, momentum, the in-place form),
adaptive PathProx and ProxGen-Adam with the unit group prox, at lambda 1e-4
(no pruning), 3e-2 and 1e-1 (pruning), plus the pure rescalings; saves every
step's parameters. With ``--against REV`` it checks out ``REV`` in a
temporary git worktree, records the same trajectories with that release's
package in a subprocess, and prints the largest relative difference per
run and whether they are bitwise equal.

Only calls that exist in release 0.1 are used (deprecated ones included).

Usage::

    python -m benchmarks.api_regression --against 9184da3   # 0.1.0
    python benchmarks/api_regression.py --save OUT.npz        # record only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

STEPS, BATCH, LR = 20, 200, 0.3
LAMBDAS = (1e-4, 3e-2, 1e-1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record(path: str) -> None:
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  import pathprox_jax as ppx
  from pathprox_jax.data import load_mnist_subset

  warnings.simplefilter("ignore", DeprecationWarning)
  model = ppx.FactorizedMLP(3, 400, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  spec = ppx.UnitSpec.from_pairs(params, model.unit_pairs())

  def apply(p, x):
    s = jax.tree.map(lambda a: a, state)
    nnx.replace_by_pure_dict(s, p)
    return nnx.merge(graphdef, s)(x)

  data = load_mnist_subset(100, seed=0)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  rng = np.random.default_rng(0)
  batches = [rng.permutation(len(x))[:BATCH] for _ in range(STEPS)]

  def flat(tree):
    return np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(tree)])

  def run(tx, post=None):
    def loss(p, xb, yb):
      return optax.softmax_cross_entropy_with_integer_labels(
          apply(p, xb), yb).mean()

    @jax.jit
    def step(p, s, xb, yb):
      u, s = tx.update(jax.grad(loss)(p, xb, yb), s, p)
      p = optax.apply_updates(p, u)
      return (post(p) if post else p), s

    p, s, out = params, tx.init(params), []
    for i in batches:
      p, s = step(p, s, x[i], y[i])
      out.append(flat(p))
    return np.stack(out), float(ppx.active_units(p, spec).fraction)

  res = {}
  for lam in LAMBDAS:
    gradient = optax.chain(
        optax.add_decayed_weights(lam, mask=spec.mask("ungrouped_kernel")),
        optax.sgd(LR))
    runs = {   # name: (transform, in-place post-processing or None)
        "pathprox": (ppx.pathprox(LR, lam, spec), None),
        "pathprox_nobalance": (ppx.pathprox(LR, lam, spec, balance=False), None),
        "pathprox_momentum": (ppx.pathprox(0.05, lam, spec, momentum=0.9), None),
        "inplace": (gradient, lambda p, lam=lam:
                    ppx.path_prox_params(p, spec, lam, LR)),
        "adaptive": (ppx.adaptive_pathprox(1e-3, lam, spec), None),
        "adaptive_nobalance": (ppx.adaptive_pathprox(1e-3, lam, spec,
                                                     balance=False), None),
        "proxgen_group": (ppx.proxgen_adam(
            1e-3, prox=ppx.group_prox_from_units(spec), reg=lam), None),
    }
    for name, (tx, post) in runs.items():
      traj, active = run(tx, post)
      res[f"{name}@{lam:g}"] = traj
      res[f"{name}@{lam:g}/active"] = np.array([active])
  for name in ("balance_layers", "balance_neurons", "normalize_units"):
    res[name] = flat(getattr(ppx, name)(params, spec))[None]
  np.savez(path, **res)


def compare(a_path: str, b_path: str) -> list[dict]:
  a, b = np.load(a_path), np.load(b_path)
  rows = []
  for k in a.files:
    if k.endswith("/active"):
      continue
    x, y = a[k], b[k]
    with np.errstate(all="ignore"):
      rel = [float(np.linalg.norm(x[i] - y[i]) / max(np.linalg.norm(x[i]), 1e-30))
             for i in range(len(x))]
    rows.append({"run": k, "bitwise": bool(np.array_equal(x, y, equal_nan=True)),
                 "max_rel": float(np.nanmax(rel)) if len(rel) else 0.0,
                 "finite": bool(np.isfinite(x).all()),
                 "active": (float(a[k + "/active"][0])
                            if k + "/active" in a.files else None)})
  return rows


def main(argv=None) -> list[dict] | None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--save", help="record the installed package's trajectories")
  p.add_argument("--against", help="git revision of the release to compare with")
  args = p.parse_args(argv)
  if args.save:
    record(args.save)
    return None
  if not args.against:
    p.error("give --save OUT.npz or --against REV")
  with tempfile.TemporaryDirectory() as tmp:
    tree = os.path.join(tmp, "release")
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", tree,
                    args.against], check=True, capture_output=True)
    try:
      env = dict(os.environ, PYTHONPATH=tree)
      old, new = os.path.join(tmp, "old.npz"), os.path.join(tmp, "new.npz")
      subprocess.run([sys.executable, os.path.abspath(__file__), "--save", old],
                     cwd=tree, env=env, check=True)
      subprocess.run([sys.executable, os.path.abspath(__file__), "--save", new],
                     cwd=REPO, check=True)
      rows = compare(old, new)
    finally:
      subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", tree],
                     check=False, capture_output=True)
  print(f"{'run':28s} {'bitwise':8s} {'max rel. diff':>13s}  finite  active (old)")
  for r in rows:
    act = "" if r["active"] is None else f"{r['active']:.4f}"
    print(f"{r['run']:28s} {str(r['bitwise']):8s} {r['max_rel']:13.2e}  "
          f"{str(r['finite']):6s}  {act}")
  return rows


if __name__ == "__main__":
  main()
