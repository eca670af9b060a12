"""Compaction: turn a PathProx-pruned network into the smaller dense network.

PathProx drives whole units to zero (``v_i = 0``), so a trained network
carries dead rows and columns at full width. :func:`compact` removes them and
returns the same params pytree (same containers: ``dict``, ``nnx.State`` ...)
with smaller arrays, plus the matching :class:`~pathprox_jax.UnitSpec`, so
training can continue with PathProx on the small network. :func:`rebuild`
turns a Flax NNX model into one of the compact size holding those params.

Compaction is a host-side operation, not a jitted one: the output shapes
depend on the parameter values. Call it between training phases, never inside
a jitted step. Optimizer states built for the old shapes must be re-created
(``tx.init``) or sliced with :func:`select_units` (e.g. a momentum buffer).

Every slice of a group is cut along its unit axis, whatever the layout
(Flax, Haiku, Equinox, several input or output slices, a Dense layer after a
flatten). Assumption (as in the rest of the library): between a group's input
and output slices sits an element-wise activation (``activation``, ReLU by
default) and otherwise only operations that map a constant feature map to the
same constant (identity, max pooling, average pooling, reshapes). That is what
makes a unit with zero input weights a constant, see :func:`kept_units`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pathprox_jax._checks import check_int, check_number, check_units, is_traced
from pathprox_jax._numerics import accumulation_dtype
from pathprox_jax.objectives import unit_path_norms
from pathprox_jax.units import Slice, UnitGroup, UnitSpec, UnitWeights
from pathprox_jax.units.paths import leaf_index

if TYPE_CHECKING:
  from flax import nnx

Activation = Callable[[jax.Array], jax.Array]

__all__ = [
    "kept_units",
    "select_units",
    "compact",
    "OutputChange",
    "compaction_error",
    "rebuild",
]


# ------------------------------------------------------------- validation
def _check_spec(params: Any, units: Any, where: str) -> None:
  check_units(units)
  units.check(params, where=where)
  if any(is_traced(x) for x in jax.tree_util.tree_leaves(params)):
    raise ValueError(
        "compaction is a host-side operation (output shapes depend "
        "on the values); call it outside jax.jit / jax.grad."
    )


def _check_threshold(threshold: Any) -> float:
  if is_traced(threshold):
    raise ValueError(
        "compact is a host-side operation (output shapes depend on "
        "values); call it outside jax.jit."
    )
  check_number("threshold", threshold, hi_open=False)
  return float(threshold)


# ------------------------------------------------------------ unit choice
def _constant_parts(
    group: UnitGroup, x: UnitWeights, activation: Activation
) -> list[tuple[jax.Array, jax.Array]]:
  """Per output slice, ``(part, emits)``: ``part (n, outputs)`` is what unit
  ``i`` adds to that layer's pre-activation when ``w_i = 0``,
  ``activation(b_i) * sum v_i`` (the sum over the slice's input axes other
  than the unit axis); ``emits (n,)`` says whether the unit sends any
  constant at all (``activation(b_i) != 0`` and ``v_i != 0``): a conv with
  taps summing to zero still changes the borders of a padded image."""
  acc = accumulation_dtype(x.v[0].dtype)
  n = group.num_units
  b = jnp.zeros((n,), acc)
  for bias, axis in zip(x.b, x.b_axes):
    b = b + jnp.sum(jnp.moveaxis(bias.astype(acc), axis, 0).reshape(n, -1), 1)
  a = jnp.asarray(activation(b), acc)
  if a.shape != (n,):
    raise ValueError(
        f"activation must be element-wise; mapped a ({n},) bias "
        f"to shape {a.shape}."
    )
  out = []
  for s, v in zip(group.outputs, x.v):
    order = [s.axis] + list(s.other_axes)
    summed = tuple(
        i for i, ax in enumerate(order) if ax not in s.out_axes and ax != s.axis
    )
    moved = jnp.transpose(v.astype(acc), order)
    per_unit = jnp.sum(moved, axis=summed)
    emits = (a != 0) & jnp.any(moved.reshape(n, -1) != 0, axis=1)
    out.append((a[:, None] * per_unit.reshape(n, -1), emits))
  return out


@functools.partial(jax.jit, static_argnums=(1, 2))
def _unit_stats(params, units, activation):
  """One compiled pass: per group the unit path norms and constant parts."""
  return (
      unit_path_norms(params, units),
      [
          _constant_parts(g, x, activation)
          for g, x in zip(units.groups, units.split(params)[0])
      ],
  )


def _foldable(group: UnitGroup, s: Slice, fold_conv_constants: bool) -> bool:
  """Whether a constant input of output slice ``s`` is exactly a bias shift."""
  scalar_bias = all(math.prod(b.view) == b.num_units for b in group.biases)
  return (
      s.bias is not None and scalar_bias and (not s.conv or fold_conv_constants)
  )


def _check_complete(units: UnitSpec) -> None:
  """Refuses groups whose units are a norm's channels but whose upstream
  channels are not listed: cutting only the norm would break the shapes."""
  for k, g in enumerate(units.groups):
    if not g.passengers and all(len(s.shape) == 1 for s in g.inputs):
      raise ValueError(
          f"Group {k} ({g.describe()}): its input weights are per-channel "
          f"scales {[s.path for s in g.inputs]} (a norm's), so the layer "
          "in front of the norm and the norm's statistics carry the same "
          "channels; compact would leave them at full width. List them as the "
          "group's passengers (UnitGroup(..., passengers=[...]); e.g. "
          "ResNet.compaction_spec())."
      )


def _plan(params, units, threshold, activation, fold_conv_constants, min_width):
  """Kept unit indices and the (host) constant parts, per group."""
  _check_complete(units)
  norms, parts = jax.device_get(_unit_stats(params, units, activation))
  kept = []
  for k, (g, pn, gparts) in enumerate(zip(units.groups, norms, parts)):
    pn = np.asarray(pn)
    bad = ~np.isfinite(pn)
    if bad.any():
      raise ValueError(
          f"Group {k} ({g.describe()}): {int(bad.sum())} of {pn.size} unit path"
          " norms are not finite (first at unit"
          f" {int(np.flatnonzero(bad)[0])}); cannot compact."
      )
    accounted = np.ones(g.num_units, bool)
    for s, (_, emits) in zip(g.outputs, gparts):
      if not _foldable(g, s, fold_conv_constants):
        accounted &= ~np.asarray(emits)
    keep = ~((pn <= threshold) & accounted)
    need = min(min_width, g.num_units) - int(keep.sum())
    if need > 0:  # revive the strongest removed units, untouched
      order = np.argsort(-pn, kind="stable")
      keep[[i for i in order if not keep[i]][:need]] = True
    kept.append(np.flatnonzero(keep))
  return kept, parts


def kept_units(
    params: Any,
    units: UnitSpec,
    threshold: float = 0.0,
    *,
    activation: Activation = jax.nn.relu,
    fold_conv_constants: bool = False,
    min_width: int = 1,
) -> tuple[np.ndarray, ...]:
  r"""Indices of the units :func:`compact` keeps, one sorted array per group.

  Unit ``i`` (input weights ``w_i``, bias ``b_i``, output weights ``v_i``)
  is removed when its path norm ``||w_i|| ||v_i||`` (kernel entries only, as
  in PathProx) is ``<= threshold`` and its *constant part*
  ``activation(b_i) * v_i`` can be accounted for:

  * it is zero (``v_i = 0``, the way PathProx kills units; or
    ``activation(b_i) = 0``), or
  * it can be folded into the bias of every output slice it reaches: the
    slice has a bias and is Dense (a Dense after a flatten included), or it
    is a Conv and ``fold_conv_constants=True``.

  Why: a unit with ``w_i = 0`` still outputs the constant
  ``activation(b_i)``, which reaches the next layer as
  ``activation(b_i) v_i``. For a Dense output layer this is exactly a bias
  shift; for a Conv output layer with ``SAME`` padding a constant input
  channel gives a constant output only away from the borders (the padded taps
  see zeros), so folding is exact only for ``VALID`` padding, which params
  alone cannot tell. By default such Conv units are therefore kept.

  Each group keeps at least ``min(min_width, num_units)`` units: if fewer
  survive, the removed units with the largest path norms are kept unchanged
  (exact). The default ``min_width=1`` keeps a fully dead group one unit wide,
  so every layer keeps a valid shape and the library's models can be built
  at the compact widths (their initialisers need a fan-in >= 1).
  ``min_width=0`` allows zero-width layers; JAX, :class:`UnitSpec`,
  PathProx and :func:`rebuild` handle them, but ``MLP(width=[0, ...])``
  cannot be constructed.

  Args:
    params: params pytree matching ``units``.
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    threshold: path norms at or below this count as dead (``0``: exact
      removal; the paper uses ``1e-5`` for pruning decisions).
    activation: the element-wise activation between each group's input and
      output layer, used for the constant part (ReLU by default).
    fold_conv_constants: fold constant parts into Conv output biases too
      (exact only for ``VALID`` padding).
    min_width: minimum units kept per group.

  Returns:
    A tuple with one ``int`` array of kept unit indices per group.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax import UnitSpec
    >>> p = {"a": {"kernel": jnp.ones((2, 3))},
    ...      "b": {"kernel": jnp.array([[1.], [0.], [2.]])}}
    >>> kept_units(p, UnitSpec.from_pairs(p, [("a", "b")]))
    (array([0, 2]),)
  """
  _check_spec(params, units, "params passed to kept_units")
  kept, _ = _plan(
      params,
      units,
      _check_threshold(threshold),
      activation,
      fold_conv_constants,
      check_int("min_width", min_width),
  )
  return tuple(kept)


# --------------------------------------------------------------- slicing
def _like(new: np.ndarray, old: Any) -> Any:
  """A NumPy result as the array type of ``old`` (NumPy stays NumPy)."""
  return new if isinstance(old, np.ndarray) else jnp.asarray(new)


def _slice_tree(tree, units, kept) -> tuple[Any, list[UnitGroup]]:
  """Host-side cut of every slice along its unit axis (no XLA compilation per
  shape); returns the new tree and the resized groups."""
  leaves, treedef, index = leaf_index(tree)
  out = list(leaves)
  groups = []
  for g, idx in zip(units.groups, kept):
    small = g.resized(len(idx))
    for s, t in zip(g.slices(), small.slices()):
      old = leaves[index[s.path]]
      cut = np.take(np.asarray(old).reshape(s.view), idx, axis=s.axis)
      out[index[s.path]] = _like(cut.reshape(t.shape), old)
    groups.append(small)
  return jax.tree_util.tree_unflatten(treedef, out), groups


def _check_kept(units: UnitSpec, kept: Sequence[Any]) -> list[np.ndarray]:
  if len(kept) != len(units.groups):
    raise ValueError(
        f"kept has {len(kept)} entries; the UnitSpec has "
        f"{len(units.groups)} groups."
    )
  out = []
  for k, (g, idx) in enumerate(zip(units.groups, kept)):
    idx = np.asarray(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
      raise ValueError(f"kept[{k}] must be a 1-D int array; got {idx!r}.")
    idx = idx.astype(np.int64)
    if idx.size and (
        idx.min() < 0 or idx.max() >= g.num_units or np.any(np.diff(idx) <= 0)
    ):
      raise ValueError(
          f"kept[{k}] must be strictly increasing indices in "
          f"[0, {g.num_units}); got {idx}."
      )
    out.append(idx)
  return out


def select_units(tree: Any, units: UnitSpec, kept: Sequence[Any]) -> Any:
  """Keeps only the ``kept`` units of every group in a params-shaped tree.

  Pure slicing (no bias folding): every slice of every group is cut along
  its unit axis; other leaves are untouched. Use it
  to slice a tree shaped like the params (e.g. an SGD momentum buffer) with
  the indices of :func:`kept_units`.

  Args:
    tree: pytree with the params' paths and shapes.
    units: the :class:`~pathprox_jax.UnitSpec` of ``tree``.
    kept: per group, strictly increasing unit indices to keep.

  Returns:
    ``tree`` with the same structure and sliced arrays.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax import UnitSpec
    >>> p = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((3, 1))}}
    >>> spec = UnitSpec.from_pairs(p, [("a", "b")])
    >>> select_units(p, spec, [[0, 2]])["b"]["kernel"].shape
    (2, 1)
  """
  _check_spec(tree, units, "tree passed to select_units")
  kept = _check_kept(units, kept)
  return _slice_tree(tree, units, kept)[0]


# ---------------------------------------------------------------- compact
def compact(
    params: Any,
    units: UnitSpec,
    threshold: float = 0.0,
    *,
    activation: Activation = jax.nn.relu,
    fold_conv_constants: bool = False,
    min_width: int = 1,
) -> tuple[Any, UnitSpec]:
  r"""Removes dead units, returning smaller params and their UnitSpec.

  For every group the units chosen by :func:`kept_units` are removed: entry
  ``i`` along the unit axis of every input slice, input bias and output slice
  (Flax Dense: column ``i`` of the input kernel, row ``i`` of the output
  kernel). The constant part of every removed unit is folded into the bias
  of each output slice::

      bias += activation(b_i) * sum_inputs(v_i)

  (``sum_inputs`` over the slice's input axes other than the unit axis, e.g.
  the spatial taps of a conv or the positions of a flatten).

  With ``threshold=0`` the network function is unchanged (up to float
  rounding): a removed unit has ``v_i = 0`` (it contributes nothing) or
  ``w_i = 0`` (it contributes exactly the folded constant). With
  ``threshold > 0`` the change of the output layer's pre-activation, for a Dense pair
  and a 1-Lipschitz activation, is at most ``||x|| * sum_removed ||w_i||
  ||v_i||`` (``x`` the input of ``A``), since
  ``|act(w_i.x + b_i) - act(b_i)| <= |w_i.x|``; measure the effect on the
  outputs with :func:`compaction_error`.

  This is a host-side operation (the output shapes depend on the values):
  do not call it under ``jax.jit``. Re-create the optimizer state afterwards
  (or slice it with :func:`select_units`).

  Args:
    params: params pytree matching ``units`` (``dict``, Flax Linen params,
      ``nnx.State``).
    units: the network's :class:`~pathprox_jax.UnitSpec`.
    threshold: path norms ``||w_i|| ||v_i|| <= threshold`` count as dead.
    activation: element-wise activation between the input and output slices
      (ReLU by default; must be the one the network uses for the bias folding to be
      exact).
    fold_conv_constants: also fold constant parts into Conv output biases
      (exact for ``VALID`` padding only; see :func:`kept_units`).
    min_width: minimum units kept per group (see :func:`kept_units`).

  Returns:
    ``(new_params, new_units)``: a pytree with the same structure and
    container types as ``params`` and smaller grouped arrays, and
    the spec of the same groups at their new sizes.

  Raises:
    TypeError: if ``units`` is not a ``UnitSpec``.
    ValueError: if ``units`` does not match ``params`` (path and shapes
      named), ``threshold`` is negative, NaN or not a scalar, ``min_width``
      is not a non-negative int, or a path norm is not finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pathprox_jax import UnitSpec
    >>> p = {"a": {"kernel": jnp.array([[1., 0., 2.]]), "bias": jnp.array([0., 3., 0.])},
    ...      "b": {"kernel": jnp.array([[1.], [2.], [0.]]), "bias": jnp.zeros(1)}}
    >>> spec = UnitSpec.from_pairs(p, [("a", "b")])
    >>> small, small_spec = compact(p, spec)
    >>> small_spec.num_units   # unit 1 (w = 0) folded, unit 2 (v = 0) dropped
    (1,)
    >>> small["b"]["bias"]     # relu(3) * 2
    Array([6.], dtype=float32)
  """
  _check_spec(params, units, "params passed to compact")
  threshold = _check_threshold(threshold)
  min_width = check_int("min_width", min_width)
  kept, parts = _plan(
      params, units, threshold, activation, fold_conv_constants, min_width
  )
  new_params, groups = _slice_tree(params, units, kept)
  leaves, treedef, index = leaf_index(new_params)
  leaves = list(leaves)
  for g, idx, gparts in zip(units.groups, kept, parts):
    removed = np.setdiff1d(np.arange(g.num_units), idx)
    for s, (part, _) in zip(g.outputs, gparts):
      if s.bias is None or removed.size == 0:
        continue  # without a bias, removed units have no constant part
      shift = np.sum(np.asarray(part, np.float64)[removed], axis=0)
      if np.any(shift != 0):
        old = leaves[index[s.bias]]
        bias = np.asarray(old)
        leaves[index[s.bias]] = _like(
            (bias.astype(np.float64) + shift.reshape(bias.shape)).astype(
                bias.dtype
            ),
            old,
        )
  new_params = jax.tree_util.tree_unflatten(treedef, leaves)
  return new_params, UnitSpec.from_groups(new_params, groups)


# ---------------------------------------------------------------- report
class OutputChange(NamedTuple):
  """Result of :func:`compaction_error`.

  Examples:
    >>> OutputChange(relative=0.0, max_abs=0.0).relative
    0.0
  """

  relative: float  # ||f_after(x) - f_before(x)||_F / ||f_before(x)||_F
  max_abs: float  # max |f_after(x) - f_before(x)|


def compaction_error(
    apply_before: Callable[[Any], Any],
    apply_after: Callable[[Any], Any],
    x: Any,
) -> OutputChange:
  r"""How much compaction changed the network's outputs on a batch.

  Evaluates both functions on ``x`` and compares in float64 on the host:
  ``relative = ||after - before||_F / ||before||_F`` (``0`` if both are zero,
  ``inf`` if only ``before`` is) and ``max_abs = max |after - before|``.

  Args:
    apply_before: ``x -> outputs`` of the original network (e.g. the model).
    apply_after: ``x -> outputs`` of the compact network.
    x: a batch of inputs.

  Returns:
    An :class:`OutputChange`.

  Examples:
    >>> import jax.numpy as jnp
    >>> err = compaction_error(lambda x: 2 * x, lambda x: 2 * x + 0.5,
    ...                        jnp.ones((1, 4)))
    >>> err.relative, err.max_abs
    (0.25, 0.5)
  """
  before = np.asarray(apply_before(x), np.float64)
  after = np.asarray(apply_after(x), np.float64)
  if before.shape != after.shape:
    raise ValueError(
        f"Outputs differ in shape: {before.shape} before, "
        f"{after.shape} after compaction."
    )
  diff = after - before
  num, den = float(np.linalg.norm(diff)), float(np.linalg.norm(before))
  rel = num / den if den > 0 else (0.0 if num == 0 else math.inf)
  return OutputChange(rel, float(np.max(np.abs(diff))) if diff.size else 0.0)


# ---------------------------------------------------------------- rebuild
def rebuild(model: nnx.Module, params: Any) -> nnx.Module:
  """A copy of an NNX ``model`` resized to hold ``params`` (e.g. from :func:`compact`).

  The model is cloned (the template is not modified), its ``nnx.Param``
  values are replaced by ``params`` and the size attributes of every
  resized ``nnx.Linear`` (``in_features``, ``out_features``) and
  ``nnx.Conv`` (also ``kernel_shape``) are updated, so ``model(x)`` and
  attributes derived from them (``MLP.widths``, ``VGG19.channels``) are
  those of the compact network. The template may be abstract
  (``nnx.eval_shape``), which avoids initialising the full-size weights.

  Args:
    model: the original (or an abstract full-size) model.
    params: params with the same paths as ``nnx.state(model, nnx.Param)``
      (or the full ``nnx.state(model)``, batch statistics included): an
      ``nnx.State`` or a nested dict (e.g. restored by orbax, keys may be
      strings).

  Returns:
    A new model holding ``params``.

  Raises:
    ValueError: if the paths differ from the model's, or a resized parameter
      belongs to a module other than ``nnx.Linear``, ``nnx.Conv`` (ungrouped,
      unmasked), ``nnx.BatchNorm`` or ``nnx.LayerNorm``, whose size
      attributes this cannot update.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pathprox_jax import MLP
    >>> m = MLP(2, 8, in_features=3, num_classes=2, rngs=nnx.Rngs(0))
    >>> state = nnx.state(m, nnx.Param)
    >>> small, _ = compact(state, m.unit_spec(), threshold=float("inf"))
    >>> rebuild(m, small).widths
    (1,)
  """
  from flax import nnx  # only rebuild needs flax

  if not isinstance(model, nnx.Module):
    raise TypeError(f"rebuild needs an nnx.Module; got {type(model)}.")
  new_leaves, _, new_index = leaf_index(params)
  old_state = nnx.state(model, nnx.Param)
  old_leaves, treedef, old_index = leaf_index(old_state)
  if set(new_index) != set(old_index):  # the full state (batch statistics)?
    full = nnx.state(model)
    if set(leaf_index(full)[2]) == set(new_index):
      old_state = full
      old_leaves, treedef, old_index = leaf_index(old_state)
  if set(old_index) != set(new_index):
    missing = sorted(set(old_index) - set(new_index))
    extra = sorted(set(new_index) - set(old_index))
    hint = (
        " (the params hold nnx.Variable dicts with a 'value' key: save "
        "nnx.to_pure_dict(state) instead)"
        if extra and all(p.endswith("/value") for p in extra)
        else ""
    )
    raise ValueError(
        "params do not match the model's nnx.Param paths; "
        f"missing {missing}, unexpected {extra}{hint}."
    )
  values = [None] * len(old_leaves)
  changed = []
  for path, i in old_index.items():
    values[i] = new_leaves[new_index[path]]
    if tuple(np.shape(values[i])) != tuple(np.shape(old_leaves[i])):
      changed.append(path)
  new_model = nnx.clone(model)
  nnx.update(new_model, jax.tree_util.tree_unflatten(treedef, values))
  modules = {"/".join(map(str, p)): m for p, m in nnx.iter_modules(new_model)}
  for path in changed:
    m = modules.get(path.rsplit("/", 1)[0] if "/" in path else "")
    if (
        isinstance(m, nnx.Conv)
        and m.feature_group_count == 1
        and m.mask is None
    ):
      shape = tuple(m.kernel.shape)
      m.in_features, m.out_features, m.kernel_shape = (
          shape[-2],
          shape[-1],
          shape,
      )
    elif isinstance(m, nnx.Linear):
      m.in_features, m.out_features = tuple(m.kernel.shape)
    elif isinstance(m, (nnx.BatchNorm, nnx.LayerNorm)):
      m.num_features = int(np.shape(values[old_index[path]])[-1])
    else:
      raise ValueError(
          f"'{path}' changed shape"
          f" {tuple(np.shape(old_leaves[old_index[path]]))} ->"
          f" {tuple(np.shape(values[old_index[path]]))}, but its module"
          f" {type(m).__name__} is not an nnx.Linear or ungrouped, unmasked"
          " nnx.Conv; rebuild cannot update its size attributes."
      )
  return new_model
