"""Independent NumPy reference of ALGORITHMS.md sections 2-3 (loops, float64).

Written from the notes, not from the library: explicit loops over groups and
units, a sequential balancing walk, no shared code with ``pathprox_jax``.
Params are dicts ``{layer: {"kernel": array, "bias": array}}``; ``pairs`` are
``(input_layer, output_layer)`` names in network order.
"""

import numpy as np


def unit_w(kernel, i):
  return kernel[..., i]


def unit_v(kernel, i):
  return kernel[..., i, :]


def balance_walk(params, pairs, dead=1e-12):
  """Appendix B: walk the groups in order, scale B_g so that P_g = P*, and
  compensate in group g+1 (its input bias times s, its output kernel over s).
  A dead group (P_g <= dead) forwards the scale it received."""
  p = {k: {n: np.array(a, np.float64) for n, a in d.items()} for k, d in params.items()}

  def path_norm(a, b):
    n = p[a]["kernel"].shape[-1]
    return sum(np.linalg.norm(unit_w(p[a]["kernel"], i)) *
               np.linalg.norm(unit_v(p[b]["kernel"], i)) for i in range(n))

  norms = [path_norm(a, b) for a, b in pairs]
  live = [x > dead for x in norms]
  if not any(live):
    return p
  target = np.exp(np.mean([np.log(x) for x, l in zip(norms, live) if l]))
  incoming = 1.0
  for g, (a, b) in enumerate(pairs[:-1]):
    s = target / path_norm(a, b) if live[g] else incoming
    p[b]["kernel"] *= s
    if "bias" in p[b]:
      p[b]["bias"] *= s
    a2, b2 = pairs[g + 1]
    if "bias" in p[a2]:
      p[a2]["bias"] *= s
    p[b2]["kernel"] /= s
    incoming = s
  return p


def prox_step(params, pairs, tau, eps=1e-12):
  """Section 2 steps 3-4: project each w_i, group soft-threshold each v_i."""
  p = {k: {n: np.array(a, np.float64) for n, a in d.items()} for k, d in params.items()}
  for a, b in pairs:
    ka, kb = p[a]["kernel"], p[b]["kernel"]
    for i in range(ka.shape[-1]):
      nw = np.linalg.norm(ka[..., i])
      if nw > eps:
        ka[..., i] /= nw
        if "bias" in p[a]:
          p[a]["bias"][i] /= nw
      nv = np.linalg.norm(kb[..., i, :])
      kb[..., i, :] = 0.0 if nv <= tau else kb[..., i, :] * (1 - tau / nv)
  return p


def pathprox_step(params, grads, pairs, lr, lam, balance=True):
  """One full PathProx iteration (section 2): SGD (+WD on ungrouped kernels),
  balancing, projection, soft-threshold."""
  grouped = {x for pair in pairs for x in pair}
  z = {}
  for layer, d in params.items():
    z[layer] = {}
    for n, a in d.items():
      g = np.array(grads[layer][n], np.float64)
      if n == "kernel" and layer not in grouped:
        g = g + lam * np.asarray(a, np.float64)
      z[layer][n] = np.asarray(a, np.float64) - lr * g
  if balance:
    z = balance_walk(z, pairs)
  return prox_step(z, pairs, lam * lr)


def forward(params, layers, x, relu_after):
  """Dense-only forward pass, ReLU after the listed layer indices."""
  h = np.asarray(x, np.float64)
  for i, name in enumerate(layers):
    h = h @ params[name]["kernel"] + params[name].get("bias", 0.0)
    if i in relu_after:
      h = np.maximum(h, 0.0)
  return h
