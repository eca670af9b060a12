"""Where layer-wise balancing is exact: links between consecutive groups.

Balancing multiplies group ``g``'s output slices and their biases by ``c``
and expects the next group to absorb it (its input biases times ``c``, its
output slices over ``c``). That preserves the network function only if
everything computed from group ``g``'s outputs is scaled by ``c`` until it
enters group ``g + 1``'s linear maps, and goes nowhere else: no residual add,
skip, branch or normalisation between them.
"""

from __future__ import annotations

from pathprox_jax.discovery.graph import Lit
from pathprox_jax.discovery.labels import LAYOUT
from pathprox_jax.discovery.rules import Candidate, Context

_SCALE_FREE = frozenset({"neg", "abs", "reduce_sum", "reduce_max", "reduce_min",
                         "reduce_window_sum", "reduce_window_max",
                         "reduce_window_min"})


def _after_bias(ctx: Context, cand: Candidate, k: int) -> int:
  """The consumer output ``k`` of ``cand`` after its bias add (if any)."""
  graph, v = ctx.graph, cand.consumer_outs[k]
  if cand.outputs[k].bias is None:
    return v
  while True:
    node = graph.nodes[graph.uses[v][0]]
    v = node.outs[0]
    if node.prim == "add":
      return v


def link_is_exact(ctx: Context, a: Candidate, b: Candidate) -> bool:
  """Whether scaling ``a``'s outputs by ``c`` reaches only ``b``'s inputs."""
  graph = ctx.graph
  for k, v in enumerate(a.consumer_outs):
    uses = graph.uses.get(v, [])
    if len(uses) != 1:
      return False
  scaled = {_after_bias(ctx, a, k) for k in range(len(a.outputs))}
  targets = {b.producer_nodes[i]: x for i, x in enumerate(b.data_inputs)}
  reached = set()
  start = min(graph.uses.get(v, [len(graph.nodes)])[0] for v in scaled) \
      if scaled else len(graph.nodes)
  for j in range(start, len(graph.nodes)):
    node = graph.nodes[j]
    hit = [not isinstance(x, Lit) and x in scaled for x in node.ins]
    if not any(hit):
      continue
    if j in targets:
      x = targets[j]
      if isinstance(x, Lit) or x not in scaled or sum(hit) != 1:
        return False
      reached.add(j)
      continue
    effect = _effect(ctx, node, hit)
    if effect is None:
      return False
    if effect == "scaled":
      scaled.update(node.outs)
  if any(not isinstance(o, Lit) and o in scaled for o in graph.outputs):
    return False
  return reached == set(targets)


def _effect(ctx: Context, node, hit) -> str | None:
  """``"scaled"`` if ``node``'s output is multiplied by ``c`` when its ``hit``
  operands are, ``"invariant"`` if it does not change, ``None`` otherwise."""
  prim = node.prim
  others = [a for a, h in zip(node.ins, hit) if not h]
  zeros = all(ctx.consts.is_zero(a) for a in others)
  ok = False
  if prim in LAYOUT or prim in _SCALE_FREE:
    ok = prim != "concatenate" or all(hit)
  elif prim in ("add", "sub", "max", "min"):
    ok = all(hit) or zeros
  elif prim in ("mul", "div"):
    ok = (sum(hit) == 1 and (prim == "mul" or hit[0])
          and ctx.scaled_view(others[0]) is None)
  elif prim == "select_n":
    ok = not hit[0] and all(h or ctx.consts.is_zero(a)
                            for a, h in zip(node.ins[1:], hit[1:]))
  elif prim == "dot_general":
    ok = sum(hit) == 1 and ctx.scaled_view(others[0]) is None
  elif prim in ("gt", "ge", "lt", "le") and (all(hit) or zeros):
    return "invariant"
  return "scaled" if ok else None


def links(ctx: Context, cands: list[Candidate]) -> tuple[bool, ...]:
  """For consecutive groups, whether balancing may pass a scale between them."""
  return tuple(bool(link_is_exact(ctx, a, b))
               for a, b in zip(cands[:-1], cands[1:]))

