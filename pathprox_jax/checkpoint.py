"""Checkpoint and resume training state (params + optimizer state) with Orbax.

Orbax is an optional dependency (``pip install 'pathprox-jax[checkpoint]'``);
it is imported only when one of these functions is called.

A checkpoint directory holds one sub-directory per saved step. Optax states
are trees of NamedTuples, which Orbax stores as plain dicts and lists, so
restoring needs a *template*: a tree with the structure, shapes, dtypes and
(optionally) shardings to restore into. The natural template is a freshly
initialised ``params`` / ``tx.init(params)`` (or ``jax.eval_shape`` of them,
which allocates nothing). Restored arrays are bitwise the saved ones, so a
run interrupted at step ``k`` and resumed from its checkpoint continues
exactly as the uninterrupted run would.

Example:
  >>> import tempfile, jax.numpy as jnp, optax
  >>> from pathprox_jax import checkpoint
  >>> params = {"w": jnp.arange(3.0)}
  >>> tx = optax.sgd(0.1, momentum=0.9)
  >>> state = tx.init(params)
  >>> d = tempfile.mkdtemp()
  >>> _ = checkpoint.save_checkpoint(d, 10, params, state)
  >>> ckpt = checkpoint.restore_checkpoint(d, params, tx.init(params))
  >>> ckpt.step, ckpt.params["w"]
  (10, Array([0., 1., 2.], dtype=float32))
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np

from pathprox_jax.units.paths import path_str

_INSTALL_HINT = (
    "pathprox_jax.checkpoint needs the optional dependency "
    "orbax-checkpoint; install it with "
    "`pip install 'pathprox-jax[checkpoint]'` "
    "(or `pip install orbax-checkpoint`)."
)


def _orbax():
  """Imports ``orbax.checkpoint`` lazily, with an install hint on failure."""
  try:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_INSTALL_HINT) from e
  return ocp


_ITEMS = ("params", "opt_state", "extra")


class Checkpoint(NamedTuple):
  """What :func:`restore_checkpoint` returns: ``(step, params, opt_state, extra)``.

  Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> d = tempfile.mkdtemp()
    >>> p = {"w": jnp.ones(2)}
    >>> _ = save_checkpoint(d, 3, p, {"count": jnp.zeros([])})
    >>> restore_checkpoint(d, p, {"count": jnp.zeros([])}).step
    3
  """

  step: int
  params: Any
  opt_state: Any
  extra: Any


def _manager(directory: str, max_to_keep: int | None = None):
  ocp = _orbax()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  handlers = {name: ocp.StandardCheckpointHandler() for name in _ITEMS}
  return ocp.CheckpointManager(
      os.path.abspath(os.fspath(directory)),
      options=options,
      item_handlers=handlers,
  )


def _abstract(tree: Any) -> Any:
  """Template leaves -> ``jax.ShapeDtypeStruct`` (keeping shardings)."""
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      if x.sharding is None:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default)
      return x
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default)

  return jax.tree.map(one, tree)


def latest_step(directory: str) -> int | None:
  """The newest saved step in ``directory``, or ``None`` if there is none.

  Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> d = tempfile.mkdtemp()
    >>> latest_step(d) is None
    True
    >>> _ = save_checkpoint(d, 7, {"w": jnp.ones(2)}, {"count": jnp.zeros([])})
    >>> latest_step(d)
    7
  """
  if not os.path.isdir(directory):
    return None
  mngr = _manager(directory)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def save_checkpoint(
    directory: str,
    step: int,
    params: Any,
    opt_state: Any,
    *,
    extra: Any = None,
    max_to_keep: int | None = None,
    overwrite: bool = False,
) -> str:
  """Saves ``params`` and ``opt_state`` (and optional ``extra``) as ``step``.

  Blocks until the checkpoint is fully written, so it is safe to donate or
  overwrite the arrays afterwards. Sharded arrays are saved shard by shard;
  on several hosts every process must call this with the same arguments
  (Orbax coordinates the write).

  Args:
    directory: the checkpoint root (created if missing).
    step: the training step (non-negative int) this state belongs to; the
      conventional choice is the number of updates applied so far.
    params: any pytree of arrays (dict, Flax Linen params, ``nnx.State``).
    opt_state: the optimizer state (any optax state; NamedTuples are fine).
    extra: optional pytree of arrays to save alongside, e.g. the PRNG key
      data (``jax.random.key_data(key)``) or the data-stream position.
    max_to_keep: keep only this many newest steps (``None``: keep all).
    overwrite: replace an existing checkpoint of the same step instead of
      raising ``FileExistsError``.

  Returns:
    The path of the written step directory.

  Examples:
    >>> import tempfile, jax.numpy as jnp, optax
    >>> params = {"w": jnp.ones(3)}
    >>> tx = optax.adam(1e-3)
    >>> path = save_checkpoint(tempfile.mkdtemp(), 0, params, tx.init(params))
  """
  ocp = _orbax()
  if isinstance(step, bool) or int(step) != step or step < 0:
    raise ValueError(f"step must be a non-negative integer; got {step!r}.")
  step = int(step)
  mngr = _manager(directory, max_to_keep)
  try:
    if step in mngr.all_steps():
      if not overwrite:
        raise FileExistsError(
            f"A checkpoint for step {step} already exists in "
            f"{mngr.directory}; pass overwrite=True to replace it."
        )
      mngr.delete(step)
    items = {
        "params": ocp.args.StandardSave(params),
        "opt_state": ocp.args.StandardSave(opt_state),
    }
    if extra is not None:
      items["extra"] = ocp.args.StandardSave(extra)
    mngr.save(step, args=ocp.args.Composite(**items), force=True)
    mngr.wait_until_finished()
    return os.path.join(os.fspath(mngr.directory), str(step))
  finally:
    mngr.close()


def _leaf_table(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {
      path_str(kp): (tuple(getattr(x, "shape", ())), getattr(x, "dtype", None))
      for kp, x in flat
  }


def _check_against_metadata(
    name: str, where: str, template: Any, metadata: Any
) -> None:
  """Raises, naming the path, when the template does not match what is stored.

  Leaves are matched by path: NamedTuple fields are stored as dict keys, so
  the paths agree; Flax NNX ``Variable`` leaves are stored with a trailing
  ``value`` key, which is ignored here.
  """
  stored = {}
  for path, info in _leaf_table(getattr(metadata, "tree", metadata)).items():
    head, _, last = path.rpartition("/")
    if last in ("value", "raw_value"):
      path = head
    stored[path] = info
  wanted = _leaf_table(template)
  missing = sorted(p for p in wanted if p not in stored)
  unexpected = sorted(p for p in stored if p not in wanted)
  if missing or unexpected:
    raise ValueError(
        f"Cannot restore '{name}' from {where}: the template's tree does not "
        "match the checkpoint's. In the template but not stored: "
        f"{missing or 'none'}; stored but not in the template: "
        f"{unexpected or 'none'}."
    )
  for path, (shape, dtype) in wanted.items():
    s_shape, s_dtype = stored[path]
    if s_shape != shape:
      raise ValueError(
          f"Cannot restore '{name}/{path}' from {where}: the checkpoint "
          f"holds shape {s_shape}, the template has shape {shape}."
      )
    if s_dtype is not None and np.dtype(s_dtype) != np.dtype(dtype):
      raise ValueError(
          f"Cannot restore '{name}/{path}' from {where}: the checkpoint "
          f"holds dtype {np.dtype(s_dtype)}, the template has dtype "
          f"{np.dtype(dtype)} (a silent cast would break exact resumption)."
      )


def restore_checkpoint(
    directory: str,
    params_template: Any,
    opt_state_template: Any,
    step: int | None = None,
    *,
    extra_template: Any = None,
) -> Checkpoint:
  """Restores a checkpoint written by :func:`save_checkpoint`.

  Args:
    directory: the checkpoint root.
    params_template: a tree like the saved params: arrays, or
      ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``). Shardings of
      the template's leaves are used for the restored arrays, so a template
      sharded over a mesh restores a sharded state.
    opt_state_template: the same for the optimizer state, typically
      ``tx.init(params_template)`` or ``jax.eval_shape(tx.init, params)``.
      Its tree structure (NamedTuples included) is what is returned.
    step: the step to restore; ``None`` for the newest.
    extra_template: template for ``extra`` if it was saved.

  Returns:
    A :class:`Checkpoint` ``(step, params, opt_state, extra)``.

  Raises:
    FileNotFoundError: no checkpoint (or not the requested step) exists.
    ValueError: a stored array does not match the template's shape or dtype
      (naming its path), or the tree structures differ.

  Examples:
    >>> import tempfile, jax, jax.numpy as jnp, optax
    >>> params, tx, d = {"w": jnp.ones(3)}, optax.adam(1e-3), tempfile.mkdtemp()
    >>> _ = save_checkpoint(d, 5, params, tx.init(params))
    >>> template = jax.eval_shape(tx.init, params)      # allocates nothing
    >>> restore_checkpoint(d, params, template).opt_state[0].count
    Array(0, dtype=int32)
  """
  ocp = _orbax()
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoint directory {directory}.")
  mngr = _manager(directory)
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise FileNotFoundError(f"{directory} holds no checkpoint.")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(
          f"No checkpoint for step {step} in {directory}; saved steps are"
          f" {steps}."
      )
    where = f"{directory} step {step}"
    templates = {"params": params_template, "opt_state": opt_state_template}
    if extra_template is not None:
      templates["extra"] = extra_template
    metadata = mngr.item_metadata(step)
    for name, tmpl in templates.items():
      if metadata is not None and metadata.get(name) is None:
        raise ValueError(f"{where} has no '{name}' item.")
      if metadata is not None:
        _check_against_metadata(name, where, tmpl, metadata[name])
    args = {
        name: ocp.args.StandardRestore(_abstract(tmpl))
        for name, tmpl in templates.items()
    }
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**args))
    except ValueError as e:
      raise ValueError(f"Cannot restore from {where}: {e}") from e
    return Checkpoint(
        int(step),
        restored["params"],
        restored["opt_state"],
        restored["extra"] if extra_template is not None else None,
    )
  finally:
    mngr.close()
