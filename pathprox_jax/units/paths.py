"""Leaf paths: one string per parameter leaf, for every pytree layout.

A path is the ``/``-joined chain of keys that leads to a leaf: ``"fc1/kernel"``
(Flax dicts, Linen ``params``, NNX ``State``), ``"layers/0/weight"``
(Equinox modules; attribute names and list indices), ``"mlp/~/linear_0/w"``
(Haiku, whose module names contain ``/`` themselves). Wrapper entries that
are not part of the user's naming (the ``value`` of an ``nnx.Variable``) are
dropped. Paths are compared as whole strings, so a Haiku module name is
matched exactly as Haiku prints it.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np

#: Leaf names that hold the weight matrix of a layer: Flax ``kernel``,
#: Haiku ``w``, Equinox ``weight``.
KERNEL_NAMES = ("kernel", "w", "weight")


def _key_str(key: Any) -> str | None:
  """One key-path entry as a string; ``None`` for wrapper entries."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return None if key.name in ("value", "raw_value") else key.name
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def path_str(key_path: Iterable[Any]) -> str:
  """The path string of a JAX key path (``nnx.Variable`` wrappers dropped).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> [path_str(kp) for kp, _ in
    ...  jax.tree_util.tree_flatten_with_path({"fc": {"w": jnp.ones(2)}})[0]]
    ['fc/w']
  """
  return "/".join(s for s in map(_key_str, key_path) if s is not None)


def join(*parts: str) -> str:
  """Joins path parts with ``/`` (empty parts skipped)."""
  return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def leaf_name(path: str) -> str:
  """The last key of a path (``"fc1/kernel"`` -> ``"kernel"``)."""
  return path.rsplit("/", 1)[-1]


def leaf_index(tree: Any) -> tuple[list[Any], Any, dict[str, int]]:
  """Flattens ``tree``; returns ``(leaves, treedef, {path: position})``.

  Raises:
    ValueError: if two leaves have the same path string (for example the
      keys ``"a/b"`` and ``("a", "b")`` in one tree).
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  index: dict[str, int] = {}
  for i, (kp, _) in enumerate(flat):
    p = path_str(kp)
    if p in index:
      raise ValueError(
          f"Two parameter leaves have the same path '{p}'; rename one of them."
      )
    index[p] = i
  return [leaf for _, leaf in flat], treedef, index


def is_kernel(path: str, leaf: Any) -> bool:
  """Whether a leaf is a layer's weight matrix (it gets weight decay).

  True for leaves named ``kernel`` (Flax), ``w`` (Haiku) or ``weight``
  (Equinox); a one-dimensional ``w``/``weight`` is a norm scale (Equinox
  ``LayerNorm.weight``), not a kernel. Biases and norm scales are never
  kernels.
  """
  name = leaf_name(path)
  return name == "kernel" or (name in KERNEL_NAMES and np.ndim(leaf) >= 2)


def kernel_mask(params: Any) -> Any:
  """Boolean pytree shaped like ``params``: ``True`` on every kernel (:func:`is_kernel`).

  Usable as an ``optax.masked`` / ``optax.add_decayed_weights`` mask.

  Examples:
    >>> import jax.numpy as jnp
    >>> kernel_mask({"fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
    {'fc': {'bias': False, 'kernel': True}}
  """
  return jax.tree_util.tree_map_with_path(
      lambda kp, leaf: is_kernel(path_str(kp), leaf), params
  )
