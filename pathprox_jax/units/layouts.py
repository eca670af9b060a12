"""Layer layouts of the JAX frameworks: from a pair of layers to a unit group.

============  ===========  =========  ===================================  ==========
layout        kernel leaf  bias leaf  kernel shape                         bias shape
============  ===========  =========  ===================================  ==========
``flax``      ``kernel``   ``bias``   ``(in, out)``, ``(kh, kw, in, out)``  ``(out,)``
``haiku``     ``w``        ``b``      ``(in, out)``, ``(kh, kw, in, out)``  ``(out,)``
``equinox``   ``weight``   ``bias``   ``(out, in)``, ``(out, in, kh, kw)``  ``(out,)``, ``(out, 1, 1)``
============  ===========  =========  ===================================  ==========

``layout="auto"`` picks the framework whose kernel leaf name the layers
have; all layers of one spec must agree (a Flax model with a leaf named ``w``
is not silently read as Haiku). A unit is output channel ``i`` of the input
layer and input channel ``i`` of the output layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from pathprox_jax.units.paths import join
from pathprox_jax.units.slices import Slice, UnitGroup


class Layout(NamedTuple):
  kernel: str
  bias: str
  in_axis: int  # input-channel axis of the kernel
  out_axis: int  # output-channel axis of the kernel


LAYOUTS = {
    "flax": Layout("kernel", "bias", -2, -1),
    "haiku": Layout("w", "b", -2, -1),
    "equinox": Layout("weight", "bias", 1, 0),
}


def detect_layout(layers, index: dict[str, int], layout: str) -> Layout:
  """The one layout of all ``layers`` (see the module docstring)."""
  if layout != "auto":
    if layout not in LAYOUTS:
      raise ValueError(
          f"Unknown layout {layout!r}; expected 'auto' or one of "
          f"{sorted(LAYOUTS)}."
      )
    return LAYOUTS[layout]
  names = {layer: _layout_name(layer, index) for layer in layers}
  if len(set(names.values())) > 1:
    raise ValueError(
        f"The layers use different layouts ({names}); pass "
        "layout='flax'|'haiku'|'equinox' or use "
        "UnitSpec.from_groups."
    )
  return LAYOUTS[next(iter(names.values()))]


def _layout_name(layer: str, index: dict[str, int]) -> str:
  found = [n for n in LAYOUTS if join(layer, LAYOUTS[n].kernel) in index]
  if len(found) == 1:
    return found[0]
  leaves = sorted(
      p[len(layer) + 1 :] for p in index if p.startswith(layer + "/")
  )
  if not leaves and not any(p == layer for p in index):
    layers = sorted({p.rsplit("/", 1)[0] for p in index if "/" in p})
    raise ValueError(f"Layer '{layer}' is not in the params. Layers: {layers}.")
  raise ValueError(
      f"Layer '{layer}' has {'no' if not found else 'several'} kernel leaf "
      f"({', '.join(repr(l.kernel) for l in LAYOUTS.values())}); its leaves "
      f"are {leaves}. Name the layout (layout='flax'|'haiku'|'equinox') or "
      "describe the group with UnitSpec.from_groups."
  )


def _kernel(leaves, index, layer: str, lay: Layout, role: str):
  path = join(layer, lay.kernel)
  if path not in index:
    name = next(n for n, l in LAYOUTS.items() if l == lay)
    raise ValueError(
        f"{role} layer '{layer}' has no '{lay.kernel}' leaf (the "
        f"{name} layout's kernel)."
    )
  shape = tuple(np.shape(leaves[index[path]]))
  if len(shape) < 2:
    raise ValueError(
        f"{role} kernel '{path}' has shape {shape}; expected a Dense or Conv "
        "kernel with input- and output-channel axes."
    )
  bias = join(layer, lay.bias)
  return path, shape, (bias if bias in index else None)


def _flatten_hint(path, bias, shape, lay: Layout, n: int) -> str:
  """How to describe the output kernel if a flatten of ``n`` channels sits
  between the layers (each channel then owns ``m // n`` of its inputs)."""
  ax, m = lay.in_axis % len(shape), shape[lay.in_axis]
  if not n or m % n:
    return ""
  out = lay.out_axis % len(shape)

  def slice_text(split, unit):
    view = shape[:ax] + split + shape[ax + 1 :]
    out_axes = (out + (1 if out > ax else 0),)
    extra = f", bias='{bias}'" if bias else ""
    return (
        f"Slice('{path}', axis={unit}, view={view}, out_axes={out_axes}, "
        f"conv=False{extra})"
    )

  return (
      f" If a flatten of a {n}-channel feature map sits between them, "
      "describe the output slice with UnitSpec.from_groups and "
      f"{slice_text((m // n, n), ax + 1)} for a channel-minor flatten "
      f"(channels last, e.g. Flax NHWC) or {slice_text((n, m // n), ax)} "
      "for a channel-major one (channels first, e.g. Equinox CHW)."
  )


def pair_group(
    leaves: list[Any],
    index: dict[str, int],
    input_layer: str,
    output_layer: str,
    lay: Layout,
    k: int,
) -> UnitGroup:
  """The unit group of the layer pair ``(input_layer, output_layer)``."""
  a, a_shape, a_bias = _kernel(leaves, index, input_layer, lay, "Input")
  b, b_shape, b_bias = _kernel(leaves, index, output_layer, lay, "Output")
  n, m = a_shape[lay.out_axis], b_shape[lay.in_axis]
  if n != m:
    raise ValueError(
        f"Unit-count mismatch in pair {k}: input layer '{input_layer}' kernel "
        f"{a_shape} has {n} output channels, but output layer "
        f"'{output_layer}' kernel {b_shape} takes {m} inputs."
        + _flatten_hint(b, b_bias, b_shape, lay, n)
    )
  out_axis = lay.out_axis % len(b_shape)
  return UnitGroup(
      inputs=(Slice(a, lay.out_axis),),
      biases=(Slice(a_bias, 0),) if a_bias else (),
      outputs=(
          Slice(
              b,
              lay.in_axis,
              bias=b_bias,
              out_axes=(out_axis,),
              conv=len(b_shape) > 2,
          ),
      ),
  )
