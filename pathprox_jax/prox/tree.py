"""Proxes over a whole params tree: the protocol ProxGen's transforms call.

A *tree prox* is any object with

* ``__call__(tree, weight_decay, scaling) -> tree``: the prox of
  ``weight_decay * R`` at ``tree`` in the metric ``1 / scaling``
  (``scaling`` a scalar or a tree shaped like ``tree``), and
* ``check(params, name)``: raises ``ValueError`` at ``init`` if it cannot act
  on ``params`` (naming the path).

:func:`elementwise` lifts a ``prox(x, weight_decay, scaling)`` of
:mod:`pathprox_jax.prox` to the masked leaves of a tree;
:func:`unit_group_lasso` is a structured one (one group per hidden unit,
spanning several leaves). A user's own structured prox (filters, heads)
only needs the two methods.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pathprox_jax._checks import INJECT_HINT
from pathprox_jax.prox.group import group_lasso_slices
from pathprox_jax.units import UnitSpec, kernel_mask, path_str

MaskOrFn = (
    Any  # bool pytree (or a prefix of one), params -> bool pytree, or None
)


def is_scalar(tree: Any) -> bool:
  """A scalar (number or 0-d array), as opposed to a tree of arrays."""
  if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(tree)):
    return False
  return getattr(tree, "ndim", None) == 0 or isinstance(tree, (int, float))


def mask_leaves(mask: MaskOrFn, params: Any, name: str) -> list[bool]:
  """Resolves ``mask`` to one Python bool per leaf of ``params`` (flatten order).

  ``mask`` is ``None`` (every kernel, :func:`~pathprox_jax.units.kernel_mask`),
  a callable ``params -> bool pytree`` (as ``optax.masked`` accepts) or a bool
  pytree. Matching is by path, and a mask leaf also covers everything below
  it, so a prefix tree like ``{"encoder": True, "head": False}`` works.

  Examples:
    >>> import jax.numpy as jnp
    >>> mask_leaves({"enc": True, "head": False},
    ...             {"enc": {"w": jnp.ones(2)}, "head": jnp.ones(1)}, "demo")
    [True, False]
  """
  tree = (
      (mask or kernel_mask)(params) if mask is None or callable(mask) else mask
  )
  table = {}
  for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.core.Tracer):
      raise ValueError(
          f"{name}: mask entries must be static Python bools; "
          f"'{path_str(kp)}' is traced."
      )
    table[path_str(kp)] = bool(leaf)
  out = []
  for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    parts = path_str(kp).split("/")
    for cut in range(len(parts), -1, -1):
      key = "/".join(parts[:cut])
      if key in table:
        out.append(table[key])
        break
    else:
      raise ValueError(
          f"{name}: the mask does not cover parameter "
          f"'{path_str(kp)}'. Mask paths: {sorted(table)}."
      )
  return out


def _refuse_one_argument(prox: Any, args: tuple) -> None:
  """``optax.inject_hyperparams`` calls every callable argument with the
  step count, as a schedule; say what to pass instead."""
  if len(args) != 2:
    raise TypeError(
        f"{type(prox).__name__}(tree, weight_decay, scaling) was "
        f"called with {len(args) + 1} argument(s). If this is "
        f"inside an optimizer: {INJECT_HINT}."
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ElementwiseProx:
  """An elementwise ``prox(x, weight_decay, scaling)`` on the masked leaves.

  Examples:
    >>> from pathprox_jax.prox import prox_l0
    >>> ElementwiseProx(prox_l0)({"kernel": jnp.array([0.1, 2.0])}, 1.0, 1.0)
    {'kernel': Array([0., 2.], dtype=float32)}
  """

  prox: Callable[..., jax.Array]
  mask: MaskOrFn = None

  def __call__(self, tree: Any, *args: Any) -> Any:
    _refuse_one_argument(self, args)
    weight_decay, scaling = args
    leaves, treedef = jax.tree.flatten(tree)
    s = (
        [scaling] * len(leaves)
        if is_scalar(scaling)
        else treedef.flatten_up_to(scaling)
    )
    on = mask_leaves(self.mask, tree, "prox")
    return jax.tree.unflatten(
        treedef,
        [
            self.prox(x, weight_decay, si) if use else x
            for x, si, use in zip(leaves, s, on)
        ],
    )

  def check(self, params: Any, name: str) -> None:
    """Traces the prox abstractly on every masked leaf, so a wrong signature
    or a shape change fails at ``init``, naming the path."""
    reg0 = jnp.zeros([], jnp.float32)
    on = mask_leaves(self.mask, params, name)
    for (kp, leaf), use in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], on
    ):
      if not use:
        continue
      try:
        out = jax.eval_shape(self.prox, leaf, reg0, leaf)
      except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{name}: prox failed on parameter '{path_str(kp)}' of shape "
            f"{jnp.shape(leaf)}; it must accept (x, weight_decay, scaling) "
            f"with an array scaling shaped like x. Error: {e}"
        ) from e
      if getattr(out, "shape", None) != jnp.shape(leaf):
        raise ValueError(
            f"{name}: prox returned shape "
            f"{getattr(out, 'shape', None)} for parameter "
            f"'{path_str(kp)}' of shape {jnp.shape(leaf)}."
        )


def elementwise(
    prox: Callable[..., jax.Array], mask: MaskOrFn = None
) -> ElementwiseProx:
  """Lifts ``prox(x, weight_decay, scaling)`` to a tree prox on the masked leaves.

  Args:
    prox: an elementwise prox such as :func:`~pathprox_jax.prox.prox_l1`.
    mask: which leaves to regularise: ``None`` (every kernel), a bool pytree
      (or a prefix of one) or a callable ``params -> bool pytree``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax.prox import prox_l1
    >>> tp = elementwise(prox_l1)
    >>> tp({"kernel": jnp.array([1.0, -0.1]), "bias": jnp.array([0.1])}, 0.5, 1.0)
    {'bias': Array([0.1], dtype=float32), 'kernel': Array([ 0.5, -0. ], dtype=float32)}
  """
  if not callable(prox):
    raise TypeError(
        f"`prox` must be prox(x, weight_decay, scaling); got {prox!r}."
    )
  return ElementwiseProx(prox, mask)


@dataclasses.dataclass(frozen=True)
class UnitGroupLasso:
  """The tree prox of :func:`unit_group_lasso`.

  Examples:
    >>> from pathprox_jax.units import UnitSpec
    >>> p = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.array([[3.], [0.5]])}}
    >>> UnitGroupLasso(UnitSpec.from_pairs(p, [("a", "b")]))(p, 1.0, 1.0)["b"]["kernel"].round(4)
    Array([[2.],
           [0.]], dtype=float32)
  """

  units: UnitSpec

  def __call__(self, tree: Any, *args: Any) -> Any:
    _refuse_one_argument(self, args)
    weight_decay, scaling = args
    groups, rest = self.units.split(tree)
    s_groups = None if is_scalar(scaling) else self.units.split(scaling)[0]
    out = []
    for k, x in enumerate(groups):
      s = scaling if s_groups is None else tuple(s_groups[k].v)
      out.append(
          x.replace(v=group_lasso_slices(x.v, weight_decay, s, axes=x.v_axes))
      )
    return self.units.merge(out, rest)

  def check(self, params: Any, name: str) -> None:
    self.units.check(params, where=f"params passed to {name}.init")


def unit_group_lasso(units: UnitSpec) -> UnitGroupLasso:
  r"""Group lasso over every hidden unit's output weights, ``lambda sum_i ||v_i||``.

  A structured tree prox: unit ``i``'s group is entry ``i`` of every output
  slice of its :class:`~pathprox_jax.UnitGroup` (several leaves when a
  hidden layer feeds several heads), so a unit is removed exactly when its
  group is zeroed. In Adam's metric there is no closed form and the
  diagonal-metric group prox is used. Only ``v`` is penalised: with a
  homogeneous activation the network can move scale from ``v_i`` into
  ``w_i`` at no cost, so pair this with weight decay on the input kernels,
  or use :func:`~pathprox_jax.adaptive_pathprox`, which fixes ``||w_i|| = 1``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import pathprox_jax as ppx
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4))},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = ppx.UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> tx = ppx.proxgen_adam(1e-3, 1e-4, ppx.prox.unit_group_lasso(spec))
    >>> state = tx.init(params)

  References:
    Yun, Lozano and Yang, ProxGen, arXiv:2007.07484, eq. 2.
  """
  if not isinstance(units, UnitSpec):
    raise TypeError(
        f"`units` must be a pathprox_jax.UnitSpec; got {type(units).__name__}."
    )
  return UnitGroupLasso(units)


def as_tree_prox(prox: Any, mask: MaskOrFn, name: str) -> Any:
  """``prox`` itself if it is a tree prox (it has ``check``), else its
  :func:`elementwise` lift with ``mask``; a mask with a tree prox raises."""
  if callable(getattr(prox, "check", None)):
    if mask is not None:
      raise ValueError(
          f"{name}: `mask` applies to an elementwise prox; a tree "
          f"prox ({type(prox).__name__}) chooses its own leaves."
      )
    return prox
  if not callable(prox):
    raise TypeError(
        f"{name}: `prox` must be prox(x, weight_decay, scaling) or "
        "a tree prox (e.g. ppx.prox.unit_group_lasso(units)); got "
        f"{prox!r}."
    )
  return ElementwiseProx(prox, mask)
