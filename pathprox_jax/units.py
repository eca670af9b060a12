"""Unit specification: which kernel slices form each homogeneous unit.

A *homogeneous unit* is one hidden neuron (Dense) or hidden channel (Conv)
between an input layer ``A`` and an output layer ``B`` with a positively
homogeneous activation (ReLU, leaky ReLU, max/avg pooling, identity) between
them. Its input weights ``w_i`` are column ``i`` of ``A``'s kernel (the last
axis; ``A``'s bias entry ``b_i`` scales with it) and its output weights ``v_i``
are slice ``i`` of ``B``'s input-channel axis (axis ``-2``). A *group* is one
``(A, B)`` pair; groups are disjoint and listed in network order.

Paths are ``/``-separated keys into any nested-mapping params pytree (plain
dicts, Flax Linen params, Flax NNX ``State``); list indices are written as
numbers (``"layers/0"``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]

INPUT_KERNEL = "input_kernel"
INPUT_BIAS = "input_bias"
OUTPUT_KERNEL = "output_kernel"
OUTPUT_BIAS = "output_bias"
UNGROUPED_KERNEL = "ungrouped_kernel"
OTHER = "other"
LABELS = (INPUT_KERNEL, INPUT_BIAS, OUTPUT_KERNEL, OUTPUT_BIAS,
          UNGROUPED_KERNEL, OTHER)


def _key_str(key: Any) -> str | None:
  """One path entry as a string; ``None`` for wrapper entries to skip."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.GetAttrKey):
    # flax.nnx Variables flatten through their ``value`` attribute.
    return None if key.name in ("value", "raw_value") else key.name
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def normalize_path(key_path: Iterable[Any]) -> Path:
  """Turns a JAX key path into a tuple of strings (Variable wrappers dropped)."""
  return tuple(s for s in map(_key_str, key_path) if s is not None)


def parse_path(path: str | Sequence[str]) -> Path:
  """Turns ``"a/b/0"`` (or a sequence of keys) into ``("a", "b", "0")``."""
  parts = path.split("/") if isinstance(path, str) else [str(p) for p in path]
  parts = tuple(p for p in parts if p)
  if not parts:
    raise ValueError(f"Empty layer path {path!r}.")
  return parts


def fmt(path: Path) -> str:
  return "/".join(path)


def leaf_index(tree: Any) -> tuple[list[Any], Any, dict[Path, int]]:
  """Flattens ``tree`` and maps every normalised leaf path to its position."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  leaves = [leaf for _, leaf in flat]
  index = {normalize_path(kp): i for i, (kp, _) in enumerate(flat)}
  return leaves, treedef, index


class Group(NamedTuple):
  """One ``(input layer, output layer)`` pair of a :class:`UnitSpec`."""
  input_path: Path
  output_path: Path
  input_kernel_shape: tuple[int, ...]
  output_kernel_shape: tuple[int, ...]
  has_input_bias: bool
  has_output_bias: bool

  @property
  def num_units(self) -> int:
    return self.input_kernel_shape[-1]

  def leaf(self, which: str) -> Path:
    layer, name = {
        INPUT_KERNEL: (self.input_path, "kernel"),
        INPUT_BIAS: (self.input_path, "bias"),
        OUTPUT_KERNEL: (self.output_path, "kernel"),
        OUTPUT_BIAS: (self.output_path, "bias"),
    }[which]
    return layer + (name,)


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

  Build it with :meth:`UnitSpec.from_pairs` (or a model's ``unit_spec()``).
  It is hashable and static: close over it in transforms, do not pass it
  through ``jax.jit`` as an argument.

  Attributes:
    groups: the validated ``(input, output)`` layer pairs in network order.
    kernel_paths: paths of every leaf named ``kernel`` in the params (grouped
      or not), used for weight decay of ungrouped kernels.
  """
  groups: tuple[Group, ...]
  kernel_paths: tuple[Path, ...]

  # ------------------------------------------------------------------ build
  @classmethod
  def from_pairs(cls, params: Any,
                 pairs: Sequence[tuple[str, str]]) -> "UnitSpec":
    """Validates ``pairs`` against ``params`` and builds the spec.

    Args:
      params: nested-mapping params pytree (dict, Flax Linen params or
        ``nnx.State``; ``nnx.Variable`` leaves are fine).
      pairs: ``(input_layer_path, output_layer_path)`` in network order; each
        path leads to the sub-tree holding ``kernel`` (and optionally
        ``bias``).

    Returns:
      The spec.

    Raises:
      ValueError: naming the path and shapes, for an empty pair list, a
        missing path, a sub-tree without ``kernel``, a kernel that is not
        Dense ``(in, out)`` or Conv ``(..., in, out)``, a non-floating dtype,
        a unit-count mismatch, or a layer used twice.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
      ...           "fc2": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
      >>> spec = UnitSpec.from_pairs(params, [("fc1", "fc2")])
      >>> spec.num_units
      (4,)
    """
    pairs = list(pairs)
    if not pairs:
      raise ValueError("UnitSpec.from_pairs needs at least one "
                       "(input_layer, output_layer) pair; got none.")
    leaves, _, index = leaf_index(params)
    kernel_paths = tuple(p for p in index if p and p[-1] == "kernel")
    layers = {p[:-1] for p in index}

    def layer_info(path: Path, role: str):
      if path not in layers and not any(p[:len(path)] == path for p in index):
        raise ValueError(
            f"{role} layer path '{fmt(path)}' is not in the params. Top-level "
            f"layers are: {sorted({fmt(p[:1]) for p in index})}.")
      kpath = path + ("kernel",)
      if kpath not in index:
        raise ValueError(
            f"{role} layer '{fmt(path)}' has no 'kernel' leaf; its leaves are "
            f"{sorted(fmt(p[len(path):]) for p in index if p[:len(path)] == path)}.")
      kernel = leaves[index[kpath]]
      shape = tuple(np.shape(kernel))
      dtype = jnp.result_type(kernel)
      if len(shape) < 2:
        raise ValueError(
            f"{role} kernel '{fmt(kpath)}' has shape {shape}; expected a Dense "
            "(in, out) or Conv (kh, kw, in, out) kernel.")
      if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{role} kernel '{fmt(kpath)}' has dtype {dtype}; PathProx needs "
            "real floating-point weights.")
      bpath = path + ("bias",)
      has_bias = bpath in index
      if has_bias:
        bshape = tuple(np.shape(leaves[index[bpath]]))
        if bshape != (shape[-1],):
          raise ValueError(
              f"Bias '{fmt(bpath)}' has shape {bshape}; expected ({shape[-1]},)"
              f" to match kernel '{fmt(kpath)}' of shape {shape}.")
        if not jnp.issubdtype(jnp.result_type(leaves[index[bpath]]),
                              jnp.floating):
          raise ValueError(f"Bias '{fmt(bpath)}' is not floating point.")
      return shape, has_bias

    groups, used = [], {}
    for k, pair in enumerate(pairs):
      if len(pair) != 2:
        raise ValueError(f"Pair {k} is {pair!r}; expected (input_layer, "
                         "output_layer).")
      a, b = parse_path(pair[0]), parse_path(pair[1])
      for path, role in ((a, "input"), (b, "output")):
        if path in used:
          raise ValueError(
              f"Layer '{fmt(path)}' is used twice: as the {used[path]} and as "
              f"the {role} layer of pair {k}. Groups must be disjoint.")
        used[path] = f"{role} layer of pair {k}"
      a_shape, a_bias = layer_info(a, "Input")
      b_shape, b_bias = layer_info(b, "Output")
      if a_shape[-1] != b_shape[-2]:
        raise ValueError(
            f"Unit-count mismatch in pair {k}: input layer '{fmt(a)}' kernel "
            f"{a_shape} has {a_shape[-1]} output units, but output layer "
            f"'{fmt(b)}' kernel {b_shape} takes {b_shape[-2]} inputs.")
      groups.append(Group(a, b, a_shape, b_shape, a_bias, b_bias))
    return cls(tuple(groups), kernel_paths)

  # ------------------------------------------------------------- queries
  @property
  def num_units(self) -> tuple[int, ...]:
    """Number of units in each group."""
    return tuple(g.num_units for g in self.groups)

  def role(self, path: Path) -> str:
    """The label (one of :data:`LABELS`) of the leaf at normalised ``path``."""
    for g in self.groups:
      for which in (INPUT_KERNEL, INPUT_BIAS, OUTPUT_KERNEL, OUTPUT_BIAS):
        if path == g.leaf(which):
          return which
    return UNGROUPED_KERNEL if path in self.kernel_paths else OTHER

  def labels(self, params: Any) -> Any:
    """A pytree of role labels shaped like ``params``.

    Usable directly as ``optax.partition(transforms, spec.labels)``.
    """
    return jax.tree_util.tree_map_with_path(
        lambda kp, _: self.role(normalize_path(kp)), params)

  def mask(self, *roles: str) -> Callable[[Any], Any]:
    """A mask function ``params -> bool pytree`` selecting the given roles.

    Pass it to ``optax.masked`` (which accepts callables), e.g.
    ``optax.masked(optax.add_decayed_weights(1e-4), spec.mask(UNGROUPED_KERNEL))``.
    """
    for r in roles:
      if r not in LABELS:
        raise ValueError(f"Unknown role {r!r}; expected one of {LABELS}.")

    def fn(params):
      return jax.tree_util.tree_map_with_path(
          lambda kp, _: self.role(normalize_path(kp)) in roles, params)
    return fn

  def masks(self, params: Any) -> UnitMasks:
    """All role masks for ``params`` as boolean pytrees."""
    return UnitMasks(*(self.mask(r)(params) for r in UnitMasks._fields))

  def check(self, params: Any, where: str = "params") -> None:
    """Raises ``ValueError`` if ``params`` no longer matches the spec."""
    if type(params).__name__ == "_ParamsPlaceholder":
      return  # optax.tree_map_params probes init with a placeholder
    leaves, _, index = leaf_index(params)
    for k, g in enumerate(self.groups):
      for which, shape in ((INPUT_KERNEL, g.input_kernel_shape),
                           (OUTPUT_KERNEL, g.output_kernel_shape)):
        path = g.leaf(which)
        if path not in index:
          raise ValueError(f"Group {k}: '{fmt(path)}' is missing from the "
                           f"{where} passed to the optimizer.")
        got = tuple(np.shape(leaves[index[path]]))
        if got != shape:
          raise ValueError(
              f"Group {k}: '{fmt(path)}' has shape {got} in the {where}, but "
              f"the UnitSpec was built for shape {shape}. Rebuild the spec.")
        dtype = jnp.result_type(leaves[index[path]])
        if not jnp.issubdtype(dtype, jnp.floating):
          raise ValueError(
              f"Group {k}: '{fmt(path)}' has dtype {dtype} in the {where}; "
              "PathProx needs real floating-point weights.")
      for which, has in ((INPUT_BIAS, g.has_input_bias),
                         (OUTPUT_BIAS, g.has_output_bias)):
        if has and g.leaf(which) not in index:
          raise ValueError(f"Group {k}: '{fmt(g.leaf(which))}' is missing "
                           f"from the {where} passed to the optimizer.")

  def __repr__(self) -> str:
    body = ", ".join(f"({fmt(g.input_path)} -> {fmt(g.output_path)}: "
                     f"{g.num_units} units)" for g in self.groups)
    return f"UnitSpec[{body}]"


def group_leaves(spec: UnitSpec, tree: Any) -> tuple[list[Any], Any, list[dict[str, int]]]:
  """Leaves of ``tree`` and, per group, the positions of its four roles.

  Used by the transforms and objectives at trace time: ``positions[g][role]``
  is the index of that role's leaf in ``leaves`` (absent if no bias).
  """
  leaves, treedef, index = leaf_index(tree)
  positions = []
  for g in spec.groups:
    pos = {}
    for which in (INPUT_KERNEL, INPUT_BIAS, OUTPUT_KERNEL, OUTPUT_BIAS):
      path = g.leaf(which)
      if path in index:
        pos[which] = index[path]
      elif which in (INPUT_KERNEL, OUTPUT_KERNEL):
        raise ValueError(f"'{fmt(path)}' is missing from the tree.")
    positions.append(pos)
  return leaves, treedef, positions
