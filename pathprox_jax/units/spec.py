"""UnitSpec: the validated unit groups of a network, and the roles of its leaves."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pathprox_jax.units.layouts import detect_layout, pair_group
from pathprox_jax.units.paths import (is_kernel, is_params_placeholder,
                                      leaf_index, path_str)
from pathprox_jax.units.slices import (UnitGroup, check_disjoint,
                                       resolve_group)
from pathprox_jax.units.weights import UnitWeights

INPUT_KERNEL = "input_kernel"
INPUT_BIAS = "input_bias"
OUTPUT_KERNEL = "output_kernel"
OUTPUT_BIAS = "output_bias"
UNGROUPED_KERNEL = "ungrouped_kernel"
OTHER = "other"
LABELS = (INPUT_KERNEL, INPUT_BIAS, OUTPUT_KERNEL, OUTPUT_BIAS,
          UNGROUPED_KERNEL, OTHER)


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

  Build it with :meth:`from_pairs` (a Dense/Conv layer pair per group, in
  the Flax, Haiku or Equinox layout), :meth:`from_groups` (explicit
  :class:`~pathprox_jax.UnitGroup` slices) or a bundled model's
  ``unit_spec()``. It is hashable and static: close over it in transforms
  and pass it to ``jax.jit`` as a static argument, never as a traced one.

  Layer-wise balancing (``balance=True``) passes a scale from group ``g``
  to group ``g + 1`` only where ``links[g]`` is true: there, group ``g``'s
  output slices must reach group ``g + 1``'s input slices through positively
  homogeneous, parameter-free operations only (no residual add, skip, branch
  or normalisation). :meth:`discover` finds the links from the model's
  graph; hand-built specs (:meth:`from_pairs`, :meth:`from_groups`) assume a
  chain in network order unless given ``links``.

  Attributes:
    groups: the validated groups, in network order.
    ungrouped_kernels: paths of the kernels in no group (they get ordinary
      weight decay).
    links: ``len(groups) - 1`` flags: may balancing pass a scale from group
      ``g`` to ``g + 1``.
    links_checked: whether ``links`` were verified on the graph
      (:meth:`discover`) or assumed.
    findings: what :meth:`discover` concluded about the other leaves (why a
      candidate was rejected); empty for hand-built specs.
  """
  groups: tuple[UnitGroup, ...]
  ungrouped_kernels: tuple[str, ...]
  links: tuple[bool, ...] = ()
  links_checked: bool = dataclasses.field(default=False, compare=False)
  findings: tuple = dataclasses.field(default=(), compare=False, repr=False)

  # ------------------------------------------------------------------ build
  @classmethod
  def from_groups(cls, params: Any, groups: Sequence[UnitGroup], *,
                  links: Sequence[bool] | None = None) -> "UnitSpec":
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
        raise TypeError(f"Group {k} is {type(g).__name__}; expected a "
                        "pathprox_jax.UnitGroup.")
    leaves, _, index = leaf_index(params)
    resolved = tuple(resolve_group(g, leaves, index, k)
                     for k, g in enumerate(groups))
    check_disjoint(resolved)
    grouped = {s.path for g in resolved for s in g.inputs + g.outputs}
    kernels = tuple(p for p, i in index.items()
                    if is_kernel(p, leaves[i]) and p not in grouped)
    if links is None:
      links = (True,) * (len(resolved) - 1)
    links = tuple(bool(x) for x in links)
    if len(links) != len(resolved) - 1:
      raise ValueError(f"links has {len(links)} entries; {len(resolved)} "
                       f"groups need {len(resolved) - 1}.")
    return cls(resolved, kernels, links)

  @classmethod
  def discover(cls, fn: Callable, params: Any, *example_inputs: Any
               ) -> "UnitSpec":
    """Finds every homogeneous unit group of ``fn(params, *example_inputs)``.

    ``fn`` is traced to a jaxpr with abstract inputs (no FLOPs): any pure
    function of the params, a Flax ``Module.apply``, a function merging an
    NNX graph, an Equinox module call (``jax.vmap`` included) or a Haiku
    ``transform``'s ``apply``; ``jit``, ``vmap``, ``custom_jvp`` activations
    are seen through. A group starts at a linear map in one parameter
    (``x @ W``, a convolution, or a per-channel scale such as a norm's
    ``scale``), optionally plus a bias and further linear maps summed into
    the same pre-activation, then passes only through positively homogeneous
    operations that keep each unit separate (ReLU and leaky ReLU however
    written, max and average pooling, reshapes, transposes, slices,
    concatenation), and is read by one or more linear maps in other
    parameters. Candidates that are not are reported with the reason
    (:meth:`report`). Groups are disjoint, chosen from the input side; a
    norm layer right before the activation makes the norm's ``(scale,
    shift)`` the units' input weights (``docs/algorithms.md``, "Unit
    discovery"). Where layer-wise balancing is exact is recorded in
    :attr:`links`.

    Args:
      fn: ``fn(params, *inputs) -> outputs``.
      params: the params pytree ``fn`` takes.
      *example_inputs: arrays (or ``jax.ShapeDtypeStruct``) with the
        shapes ``fn`` expects; a batch of one is enough.

    Returns:
      The spec, with :attr:`findings` for the leaves in no group.

    Raises:
      ValueError: if ``fn`` cannot be traced with these params and inputs
        (naming the shapes), or it has no homogeneous unit (naming every
        candidate and why it was rejected).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
      ...           "fc2": {"kernel": jnp.ones((4, 2))}}
      >>> def fn(p, x):
      ...   h = jax.nn.relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
      ...   return h @ p["fc2"]["kernel"]
      >>> UnitSpec.discover(fn, params, jnp.zeros((1, 3)))
      UnitSpec[(fc1 -> fc2: 4 units)]
    """
    from pathprox_jax.discovery.discover import discover_groups
    groups, links, findings = discover_groups(fn, params, example_inputs)
    spec = cls.from_groups(params, groups, links=links)
    return dataclasses.replace(spec, links_checked=True,
                               findings=tuple(findings))

  @classmethod
  def discover_module(cls, model: Any, *example_inputs: Any) -> "UnitSpec":
    """:meth:`discover` for a Flax NNX module: the params are
    ``nnx.state(model, nnx.Param)`` and ``fn`` calls the model on a copy of
    its other state (batch statistics, RNG state), so nothing is mutated.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import pathprox_jax as ppx
      >>> model = ppx.MLP(3, 8, in_features=4, num_classes=2, rngs=nnx.Rngs(0))
      >>> UnitSpec.discover_module(model, jnp.zeros((1, 4))) == model.unit_spec()
      True
    """
    from flax import nnx
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def fn(p, *xs):
      return nnx.merge(graphdef, p, rest, copy=True)(*xs)
    return cls.discover(fn, params, *example_inputs)

  @classmethod
  def from_pairs(cls, params: Any, pairs: Sequence[tuple[str, str]], *,
                 layout: str = "auto",
                 links: Sequence[bool] | None = None) -> "UnitSpec":
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
      raise ValueError("UnitSpec.from_pairs needs at least one "
                       "(input_layer, output_layer) pair; got none.")
    leaves, _, index = leaf_index(params)
    names = []
    for k, pair in enumerate(pairs):
      if len(pair) != 2:
        raise ValueError(f"Pair {k} is {pair!r}; expected (input_layer, "
                         "output_layer).")
      names.append(tuple((p if isinstance(p, str) else "/".join(map(str, p)))
                         .strip("/") for p in pair))
    lay = detect_layout([l for pair in names for l in pair], index, layout)
    return cls.from_groups(params, [pair_group(leaves, index, a, b, lay, k)
                                    for k, (a, b) in enumerate(names)],
                           links=links)

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
        lambda kp, _: self.role(path_str(kp)), params)

  def mask(self, *roles: str) -> Callable[[Any], Any]:
    """A function ``params -> bool pytree`` selecting the given roles
    (``optax.masked`` accepts it), e.g. ``spec.mask("ungrouped_kernel")``."""
    for r in roles:
      if r not in LABELS:
        raise ValueError(f"Unknown role {r!r}; expected one of {LABELS}.")

    def fn(params):
      return jax.tree_util.tree_map_with_path(
          lambda kp, _: self.role(path_str(kp)) in roles, params)
    return fn

  def masks(self, params: Any) -> UnitMasks:
    """All role masks for ``params`` as boolean pytrees."""
    return UnitMasks(*(self.mask(r)(params) for r in UnitMasks._fields))

  def check(self, params: Any, where: str = "params") -> None:
    """Raises ``ValueError`` if ``params`` no longer matches the spec."""
    if is_params_placeholder(params):
      return
    leaves, _, index = leaf_index(params)
    for k, g in enumerate(self.groups):
      for s in g.slices():
        if s.path not in index:
          raise ValueError(f"Group {k}: '{s.path}' is missing from the "
                           f"{where}.")
        leaf = leaves[index[s.path]]
        if tuple(np.shape(leaf)) != s.shape:
          raise ValueError(
              f"Group {k}: '{s.path}' has shape {tuple(np.shape(leaf))} in "
              f"the {where}, but the UnitSpec was built for shape {s.shape}. "
              "Rebuild the spec.")
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
          raise ValueError(
              f"Group {k}: '{s.path}' has dtype {jnp.result_type(leaf)} in "
              f"the {where}; PathProx needs real floating-point weights.")
      for p in g.output_biases:
        if p not in index:
          raise ValueError(f"Group {k}: '{p}' is missing from the {where}.")

  # ------------------------------------------------------ gather / scatter
  def gather(self, tree: Any) -> list[UnitWeights]:
    """Every group's :class:`~pathprox_jax.UnitWeights` from a params-shaped
    tree (params, updates, optimizer moments); each slice as its view.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = {"a": {"kernel": jnp.ones((3, 4))}, "b": {"kernel": jnp.ones((4, 2))}}
      >>> spec = UnitSpec.from_pairs(p, [("a", "b")])
      >>> [x.shape for x in spec.gather(p)[0].w]
      [(3, 4)]
    """
    leaves, _, index = leaf_index(tree)

    def get(path):
      if path not in index:
        raise ValueError(f"'{path}' is missing from the tree.")
      return leaves[index[path]]

    def views(slices):
      return tuple(jnp.reshape(get(s.path), s.view) for s in slices)
    return [UnitWeights(views(g.inputs), views(g.biases), views(g.outputs),
                        tuple(get(p) for p in g.output_biases),
                        tuple(s.axis for s in g.inputs),
                        tuple(s.axis for s in g.biases),
                        tuple(s.axis for s in g.outputs))
            for g in self.groups]

  def scatter(self, tree: Any, groups: Sequence[UnitWeights]) -> Any:
    """``tree`` with every grouped leaf replaced by its value in ``groups``
    (each view reshaped back and cast to the leaf's dtype)."""
    leaves, treedef, index = leaf_index(tree)
    leaves = list(leaves)
    for g, x in zip(self.groups, groups):
      pairs = [(s.path, a) for s, a in zip(g.inputs, x.w)]
      pairs += [(s.path, a) for s, a in zip(g.biases, x.b)]
      pairs += [(s.path, a) for s, a in zip(g.outputs, x.v)]
      pairs += list(zip(g.output_biases, x.c))
      for path, value in pairs:
        i = index[path]
        leaves[i] = jnp.reshape(value, np.shape(leaves[i])).astype(
            jnp.result_type(leaves[i]))
    return jax.tree_util.tree_unflatten(treedef, leaves)

  def map_groups(self, tree: Any, fn: Callable[[UnitWeights], UnitWeights]
                 ) -> Any:
    """``scatter(tree, [fn(x) for x in gather(tree)])``."""
    return self.scatter(tree, [fn(x) for x in self.gather(tree)])

  # ------------------------------------------------------------------ print
  def __repr__(self) -> str:
    body = ", ".join(f"({g.describe()}: {g.num_units} units)"
                     for g in self.groups)
    return f"UnitSpec[{body}]"

  def report(self) -> str:
    """Every grouped leaf (group, role, path, shape, view, unit axis), the
    balancing links, and, for a discovered spec, why other candidates were
    rejected. ``print(spec.report())``."""
    rows = []
    for k, g in enumerate(self.groups):
      for role, slices in ((INPUT_KERNEL, g.inputs), (INPUT_BIAS, g.biases),
                           (OUTPUT_KERNEL, g.outputs)):
        for s in slices:
          view = "" if s.view == s.shape else str(s.view)
          rows.append((str(k), role, s.path, str(s.shape), view, str(s.axis)))
      rows += [(str(k), OUTPUT_BIAS, p, "", "", "") for p in g.output_biases]
    rows += [("-", UNGROUPED_KERNEL, p, "", "", "")
             for p in self.ungrouped_kernels]
    text = [_table(("group", "role", "path", "shape", "view", "unit axis"), rows)]
    how = "checked on the graph" if self.links_checked else "assumed (hand-built spec)"
    text.append(f"\nlayer-wise balancing between consecutive groups ({how}):")
    text += [f"  {g} -> {g + 1}: {'exact' if ok else 'not exact: balancing does not pass a scale here'}"
             for g, ok in enumerate(self.links)] or ["  (one group)"]
    if self.findings:
      text.append("\nnot grouped:")
      text.append(_table(("path", "finding", "reason"),
                         [(f.path, f.role, f.reason) for f in self.findings]))
    return "\n".join(text)


def _table(header, rows) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  return "\n".join([fmt(header), fmt(["-" * w for w in widths])]
                   + [fmt(r) for r in rows])
