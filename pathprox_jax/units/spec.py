"""UnitSpec: the validated unit groups of a network, and the roles of its leaves."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pathprox_jax.units.layouts import detect_layout, pair_group
from pathprox_jax.units.paths import is_kernel, leaf_index, path_str
from pathprox_jax.units.slices import UnitGroup, check_disjoint, resolve_group
from pathprox_jax.units.weights import UnitWeights

INPUT_KERNEL = "input_kernel"
INPUT_BIAS = "input_bias"
OUTPUT_KERNEL = "output_kernel"
OUTPUT_BIAS = "output_bias"
UNGROUPED_KERNEL = "ungrouped_kernel"
OTHER = "other"
LABELS = (
    INPUT_KERNEL,
    INPUT_BIAS,
    OUTPUT_KERNEL,
    OUTPUT_BIAS,
    UNGROUPED_KERNEL,
    OTHER,
)


class UnitMasks(NamedTuple):
  """Boolean pytrees with the structure of the params, one per role."""

  input_kernel: Any
  input_bias: Any
  output_kernel: Any
  output_bias: Any
  ungrouped_kernel: Any


@dataclasses.dataclass(frozen=True)
class UnitSpec:
  """The homogeneous-unit groups of a network, validated against its params.

  Build it with :func:`~pathprox_jax.discover` (from the model's graph),
  :meth:`from_pairs` (a Dense/Conv layer pair per group, in the Flax, Haiku
  or Equinox layout), :meth:`from_groups` (explicit
  :class:`~pathprox_jax.UnitGroup` slices) or a bundled model's
  ``unit_spec()``. It is hashable and static: close over it in transforms
  and pass it to ``jax.jit`` as a static argument, never as a traced one.

  Layer-wise balancing (``balance=True``) passes a scale from group ``g``
  to group ``g + 1`` only where ``links[g]`` is true: there, group ``g``'s
  output slices must reach group ``g + 1``'s input slices through positively
  homogeneous, parameter-free operations only (no residual add, skip, branch
  or normalisation). :func:`~pathprox_jax.discover` finds the links from the model's
  graph; hand-built specs (:meth:`from_pairs`, :meth:`from_groups`) assume a
  chain in network order unless given ``links``.

  Attributes:
    groups: the validated groups, in network order.
    ungrouped_kernels: paths of the kernels in no group (they get ordinary
      weight decay).
    links: ``len(groups) - 1`` flags: may balancing pass a scale from group
      ``g`` to ``g + 1``.
    links_checked: whether ``links`` were verified on the graph
      (:func:`~pathprox_jax.discover`) or assumed.
    findings: what :func:`~pathprox_jax.discover` concluded about the other leaves (why a
      candidate was rejected); empty for hand-built specs.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
    ...           "fc2": {"kernel": jnp.ones((4, 2))}}
    >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
    >>> spec.num_units, spec.role("fc1/bias")
    ((4,), 'input_bias')
  """

  groups: tuple[UnitGroup, ...]
  ungrouped_kernels: tuple[str, ...]
  links: tuple[bool, ...] = ()
  links_checked: bool = dataclasses.field(default=False, compare=False)
  findings: tuple = dataclasses.field(default=(), compare=False, repr=False)

  # ------------------------------------------------------------------ build
  @classmethod
  def from_groups(
      cls,
      params: Any,
      groups: Sequence[UnitGroup],
      *,
      links: Sequence[bool] | None = None,
  ) -> "UnitSpec":
    """Validates explicit unit groups against ``params``.

    Args:
      params: the params pytree (dicts, Linen params, ``nnx.State``, an
        Equinox module, Haiku params).
      groups: :class:`~pathprox_jax.UnitGroup` objects in network order.
      links: for each pair of consecutive groups, whether layer-wise
        balancing is exact between them (``None``: assume a chain, all
        true).

    Returns:
      The spec.

    Raises:
      ValueError: naming the path, axis and shapes, for a missing leaf, a
        non-floating dtype, an axis out of range, a view of the wrong size,
        a unit-count mismatch inside a group, a leaf in two groups, or no
        group at all.

    Examples:
      >>> import jax.numpy as jnp
      >>> from pathprox_jax import Slice, UnitGroup
      >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
      ...           "head_a": {"kernel": jnp.ones((4, 2))},
      ...           "head_b": {"kernel": jnp.ones((4, 5))}}
      >>> spec = UnitSpec.from_groups(params, [UnitGroup(
      ...     inputs=[("fc1/kernel", -1)], biases=["fc1/bias"],
      ...     outputs=[("head_a/kernel", 0), ("head_b/kernel", 0)])])
      >>> spec
      UnitSpec[(fc1 -> head_a, head_b: 4 units)]
    """
    groups = list(groups)
    if not groups:
      raise ValueError("A UnitSpec needs at least one unit group; got none.")
    for k, g in enumerate(groups):
      if not isinstance(g, UnitGroup):
        raise TypeError(
            f"Group {k} is {type(g).__name__}; expected a "
            "pathprox_jax.UnitGroup."
        )
    leaves, _, index = leaf_index(params)
    resolved = tuple(
        resolve_group(g, leaves, index, k) for k, g in enumerate(groups)
    )
    check_disjoint(resolved)
    grouped = {s.path for g in resolved for s in g.inputs + g.outputs}
    kernels = tuple(
        p
        for p, i in index.items()
        if is_kernel(p, leaves[i]) and p not in grouped
    )
    if links is None:
      links = (True,) * (len(resolved) - 1)
    links = tuple(bool(x) for x in links)
    if len(links) != len(resolved) - 1:
      raise ValueError(
          f"links has {len(links)} entries; {len(resolved)} "
          f"groups need {len(resolved) - 1}."
      )
    return cls(resolved, kernels, links)

  @classmethod
  def from_pairs(
      cls,
      params: Any,
      pairs: Sequence[tuple[str, str]],
      *,
      layout: str = "auto",
      links: Sequence[bool] | None = None,
  ) -> "UnitSpec":
    """One group per ``(input layer, output layer)`` pair.

    Unit ``i`` is output channel ``i`` of the input layer (its kernel slice
    and bias entry) and input channel ``i`` of the output layer.

    Args:
      params: the params pytree.
      pairs: ``(input_layer_path, output_layer_path)`` in network order;
        each path leads to the sub-tree that holds the layer's kernel (and
        optionally its bias).
      layout: ``"flax"`` (``kernel`` ``(..., in, out)``, ``bias``),
        ``"haiku"`` (``w``, ``b``), ``"equinox"`` (``weight`` ``(out, in,
        ...)``, ``bias``) or ``"auto"`` (by the kernel leaf's name).
      links: as in :meth:`from_groups` (``None``: a chain).

    Returns:
      The spec.

    Raises:
      ValueError: for an empty pair list, a missing layer, a layer without
        a kernel, a kernel that is not Dense or Conv, a non-floating dtype,
        a unit-count mismatch (with a hint when a flatten could explain it),
        or a layer used twice.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
      ...           "fc2": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
      >>> UnitSpec.from_pairs(params, [("fc1", "fc2")]).num_units
      (4,)
      >>> eqx_like = {"l0": {"weight": jnp.ones((4, 3))},    # (out, in)
      ...             "l1": {"weight": jnp.ones((2, 4))}}
      >>> UnitSpec.from_pairs(eqx_like, [("l0", "l1")]).num_units
      (4,)
    """
    pairs = list(pairs)
    if not pairs:
      raise ValueError(
          "UnitSpec.from_pairs needs at least one "
          "(input_layer, output_layer) pair; got none."
      )
    leaves, _, index = leaf_index(params)
    names = []
    for k, pair in enumerate(pairs):
      if len(pair) != 2:
        raise ValueError(
            f"Pair {k} is {pair!r}; expected (input_layer, output_layer)."
        )
      names.append(
          tuple(
              (p if isinstance(p, str) else "/".join(map(str, p))).strip("/")
              for p in pair
          )
      )
    lay = detect_layout([l for pair in names for l in pair], index, layout)
    return cls.from_groups(
        params,
        [
            pair_group(leaves, index, a, b, lay, k)
            for k, (a, b) in enumerate(names)
        ],
        links=links,
    )

  # ---------------------------------------------------------------- queries
  @property
  def num_units(self) -> tuple[int, ...]:
    """Units in each group."""
    return tuple(g.num_units for g in self.groups)

  @functools.cached_property
  def roles(self) -> dict[str, str]:
    """``{path: role}`` for every leaf the spec names (see :data:`LABELS`)."""
    out = {p: UNGROUPED_KERNEL for p in self.ungrouped_kernels}
    for g in self.groups:
      out.update({s.path: INPUT_KERNEL for s in g.inputs})
      out.update({s.path: INPUT_BIAS for s in g.biases})
      out.update({s.path: OUTPUT_KERNEL for s in g.outputs})
      out.update({p: OUTPUT_BIAS for p in g.output_biases})
    return out

  def role(self, path: str | Sequence[str]) -> str:
    """The role (one of :data:`LABELS`) of the leaf at ``path``
    (``"fc1/kernel"`` or ``("fc1", "kernel")``)."""
    if not isinstance(path, str):
      path = "/".join(map(str, path))
    return self.roles.get(path, OTHER)

  def labels(self, params: Any) -> Any:
    """A pytree of role labels shaped like ``params``
    (usable as ``optax.partition(transforms, spec.labels)``)."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, _: self.role(path_str(kp)), params
    )

  def mask(self, *roles: str) -> Callable[[Any], Any]:
    """A function ``params -> bool pytree`` selecting the given roles
    (``optax.masked`` accepts it), e.g. ``spec.mask("ungrouped_kernel")``."""
    for r in roles:
      if r not in LABELS:
        raise ValueError(f"Unknown role {r!r}; expected one of {LABELS}.")

    def fn(params):
      return jax.tree_util.tree_map_with_path(
          lambda kp, _: self.role(path_str(kp)) in roles, params
      )

    return fn

  def masks(self, params: Any) -> UnitMasks:
    """All role masks for ``params`` as boolean pytrees."""
    return UnitMasks(*(self.mask(r)(params) for r in UnitMasks._fields))

  def check(self, params: Any, where: str = "params") -> None:
    """Raises ``ValueError`` if ``params`` do not match the spec: a grouped
    leaf missing, of another shape, or not floating point (naming the group,
    the path and both shapes). Trees of non-arrays (``optax.tree_map_params``
    probes ``init`` with one) are structure probes and pass."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if not any(hasattr(x, "shape") for x in leaves):
      return
    self._check_leaves(leaves, _positions(treedef), where)

  def _check_leaves(self, leaves, index, where: str) -> None:
    for k, g in enumerate(self.groups):
      for path in [s.path for s in g.slices()] + list(g.output_biases):
        if path not in index:
          raise ValueError(
              f"Group {k}: '{path}' is missing from the {where} "
              "(a mask or a filter must keep every grouped "
              "leaf)."
          )
      for s in g.slices():
        leaf = leaves[index[s.path]]
        if tuple(np.shape(leaf)) != s.shape:
          raise ValueError(
              f"Group {k}: '{s.path}' has shape {tuple(np.shape(leaf))} in "
              f"the {where}, but the UnitSpec was built for shape {s.shape}. "
              "Rebuild the spec."
          )
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
          raise ValueError(
              f"Group {k}: '{s.path}' has dtype {jnp.result_type(leaf)} in "
              f"the {where}; PathProx needs real floating-point weights."
          )

  # --------------------------------------------------------- split / merge
  def split(
      self, tree: Any, where: str = "params"
  ) -> tuple[list[UnitWeights], Rest]:
    """Every group's :class:`~pathprox_jax.units.UnitWeights` from a params-shaped
    tree (params, updates, optimizer moments), and the :class:`Rest` to
    :meth:`merge` them back into.

    Each slice is a reshaped view of its leaf (no copy). The tree is checked
    against the spec (paths, shapes; trace time, no run-time cost) and a
    mismatch raises the ``ValueError`` of :meth:`check`.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
      >>> spec = UnitSpec.from_pairs(p, [("a", "b")])
      >>> groups, rest = spec.split(p)
      >>> [x.shape for x in groups[0].w]
      [(3, 4)]
      >>> spec.merge(groups, rest)["b"]["kernel"].shape
      (4, 2)
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    index = _positions(treedef)
    self._check_leaves(leaves, index, where)

    def views(slices):
      return tuple(jnp.reshape(leaves[index[s.path]], s.view) for s in slices)

    groups = [
        UnitWeights(
            views(g.inputs),
            views(g.biases),
            views(g.outputs),
            tuple(leaves[index[p]] for p in g.output_biases),
            tuple(s.axis for s in g.inputs),
            tuple(s.axis for s in g.biases),
            tuple(s.axis for s in g.outputs),
        )
        for g in self.groups
    ]
    return groups, Rest(treedef, tuple(leaves))

  def merge(self, groups: Sequence[UnitWeights], rest: Rest) -> Any:
    """The tree of :meth:`split` with every grouped leaf replaced by its
    value in ``groups`` (each view reshaped back and cast to the leaf's dtype).
    """
    index = _positions(rest.treedef)
    leaves = list(rest.leaves)
    for g, x in zip(self.groups, groups):
      pairs = [(s.path, a) for s, a in zip(g.inputs, x.w)]
      pairs += [(s.path, a) for s, a in zip(g.biases, x.b)]
      pairs += [(s.path, a) for s, a in zip(g.outputs, x.v)]
      pairs += list(zip(g.output_biases, x.c))
      for path, value in pairs:
        i = index[path]
        leaves[i] = jnp.reshape(value, np.shape(leaves[i])).astype(
            jnp.result_type(leaves[i])
        )
    return jax.tree_util.tree_unflatten(rest.treedef, leaves)

  def map_groups(
      self, tree: Any, fn: Callable[[UnitWeights], UnitWeights]
  ) -> Any:
    """``merge([fn(x) for x in groups], rest)`` with ``groups, rest = split(tree)``."""
    groups, rest = self.split(tree)
    return self.merge([fn(x) for x in groups], rest)

  # ------------------------------------------------------------------ print
  def __repr__(self) -> str:
    body = ", ".join(
        f"({g.describe()}: {g.num_units} units)" for g in self.groups
    )
    return f"UnitSpec[{body}]"

  def report(self) -> str:
    """Every grouped leaf (group, role, path, shape, view, unit axis), the
    balancing links, and, for a discovered spec, why other candidates were
    rejected. ``print(spec.report())``."""
    rows = []
    for k, g in enumerate(self.groups):
      for role, slices in (
          (INPUT_KERNEL, g.inputs),
          (INPUT_BIAS, g.biases),
          (OUTPUT_KERNEL, g.outputs),
      ):
        for s in slices:
          view = "" if s.view == s.shape else str(s.view)
          rows.append((str(k), role, s.path, str(s.shape), view, str(s.axis)))
      rows += [(str(k), OUTPUT_BIAS, p, "", "", "") for p in g.output_biases]
    rows += [
        ("-", UNGROUPED_KERNEL, p, "", "", "") for p in self.ungrouped_kernels
    ]
    text = [
        _table(("group", "role", "path", "shape", "view", "unit axis"), rows)
    ]
    how = (
        "checked on the graph"
        if self.links_checked
        else "assumed (hand-built spec)"
    )
    text.append(f"\nlayer-wise balancing between consecutive groups ({how}):")
    text += [
        f"  {g} -> {g + 1}:"
        f" {'exact' if ok else 'not exact: balancing does not pass a scale here'}"
        for g, ok in enumerate(self.links)
    ] or ["  (one group)"]
    if self.findings:
      text.append("\nnot grouped:")
      text.append(
          _table(
              ("path", "finding", "reason"),
              [(f.path, f.role, f.reason) for f in self.findings],
          )
      )
    return "\n".join(text)


class Rest(NamedTuple):
  """What :meth:`UnitSpec.split` leaves aside: the tree structure and all
  leaves (grouped ones included, for their shapes and dtypes)."""

  treedef: Any
  leaves: tuple


@functools.lru_cache(maxsize=256)
def _positions(treedef) -> dict[str, int]:
  """``{path: leaf position}`` of a tree structure, computed once per
  structure and cached (the path index of :meth:`UnitSpec.split`)."""
  paths = [
      path_str(kp)
      for kp, _ in jax.tree_util.tree_flatten_with_path(
          jax.tree_util.tree_unflatten(treedef, [0] * treedef.num_leaves)
      )[0]
  ]
  index = {p: i for i, p in enumerate(paths)}
  if len(index) != len(paths):
    leaf_index(jax.tree_util.tree_unflatten(treedef, paths))  # names the clash
  return index


def _table(header, rows) -> str:
  widths = [
      max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
      for i, h in enumerate(header)
  ]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  return "\n".join(
      [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
  )
