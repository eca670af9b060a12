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
from pathprox_jax.discovery.primitives import Scale, lookup
from pathprox_jax.discovery.rules import Candidate, Context


def link_is_exact(ctx: Context, a: Candidate, b: Candidate) -> bool:
  """Whether scaling ``a``'s outputs by ``c`` reaches only ``b``'s inputs."""
  graph = ctx.graph
  if any(len(graph.uses.get(v, [])) != 1 for v in a.consumer_outs):
    return False
  scaled = set(a.ends)
  targets = {b.producer_nodes[i]: x for i, x in enumerate(b.data_inputs)}
  reached = set()
  n = len(graph.nodes)
  start = min((graph.uses.get(v, [n])[0] for v in scaled), default=n)
  for j in range(start, n):
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
    if effect is Scale.PASSES:
      scaled.update(node.outs)
  if any(not isinstance(o, Lit) and o in scaled for o in graph.outputs):
    return False
  return reached == set(targets)


def _effect(ctx: Context, node, hit) -> Scale | None:
  """``Scale.PASSES`` if ``node``'s outputs are multiplied by ``c`` when its
  ``hit`` operands are, ``Scale.REMOVES`` if they do not change, else ``None``.
  """
  prim = lookup(node.prim)
  data = prim.data_operands(len(node.ins))
  if any(h for i, h in enumerate(hit) if i not in data):
    return None
  others = [
      a for i, (a, h) in enumerate(zip(node.ins, hit)) if i in data and not h
  ]
  if prim.scale in (Scale.PASSES, Scale.REMOVES):
    return prim.scale if all(ctx.consts.is_zero(a) for a in others) else None
  if (
      prim.scale in (Scale.PRODUCT, Scale.NUMERATOR)
      and sum(hit) == 1
      and (prim.scale is Scale.PRODUCT or hit[0])
      and ctx.scaled_view(others[0]) is None
  ):
    return Scale.PASSES
  return None


def links(ctx: Context, cands: list[Candidate]) -> tuple[bool, ...]:
  """For consecutive groups, whether balancing may pass a scale between them."""
  return tuple(
      bool(link_is_exact(ctx, a, b)) for a, b in zip(cands[:-1], cands[1:])
  )
