"""Independent NumPy references (float64, explicit loops) for the tests.

Written from the papers (PathProx, arXiv:2210.03069, Algorithm 4.1 and
Appendix B; ProxGen, arXiv:2007.07484, Algorithm 1 and eq. 2), not from the
library: explicit loops over groups and units, a sequential balancing walk,
scipy root finding / minimisation for proxes without a closed form. Nothing
here imports ``pathprox_jax`` (or ``jax``).

Params are nested dicts of NumPy arrays. For the PathProx helpers the layers
are Flax-layout Dense/Conv dicts ``{layer: {"kernel": (..., in, out),
"bias": (out,)}}``; ``pairs`` are ``(input_layer, output_layer)`` names in
network order, unit ``i`` being output channel ``i`` of the input layer and
input channel ``i`` of the output layer.
"""

import numpy as np
from scipy import optimize


# ------------------------------------------------------------- pytrees
def flat(tree, prefix=""):
  """``{"a/b": float64 array}`` from nested dicts / lists (no jax needed)."""
  out = {}
  items = (tree.items() if isinstance(tree, dict)
           else enumerate(tree) if isinstance(tree, (list, tuple)) else None)
  if items is None:
    return {prefix: np.asarray(tree, np.float64)}
  for k, v in items:
    out.update(flat(v, f"{prefix}/{k}" if prefix else str(k)))
  return out


def copy64(params):
  """A float64 deep copy of a nested dict of arrays."""
  return {k: (copy64(v) if isinstance(v, dict) else np.array(v, np.float64))
          for k, v in params.items()}


# --------------------------------------------------- unit slices, norms
def unit_slice(x, i, axis):
  """Entry ``i`` of ``x`` along ``axis``, that axis kept with length 1 (a
  writable view, also for 1-D arrays)."""
  index = [slice(None)] * x.ndim
  index[axis] = slice(i, i + 1)
  return x[tuple(index)]


def unit_norms(arrays, axes):
  """Per unit ``i``: ``sqrt(sum_k ||arrays[k].take(i, axes[k])||^2)``, by loops."""
  n = arrays[0].shape[axes[0]]
  out = np.zeros(n)
  for i in range(n):
    out[i] = np.sqrt(sum(np.sum(np.asarray(unit_slice(a, i, ax), np.float64) ** 2)
                         for a, ax in zip(arrays, axes)))
  return out


def group_soft_threshold(arrays, axes, tau):
  """``v_i <- v_i max(1 - tau / ||v_i||, 0)`` with ``v_i`` spread over every
  array (entry ``i`` along each array's axis); float64 copies."""
  out = [np.array(a, np.float64) for a in arrays]
  norms = unit_norms(out, axes)
  for i, nv in enumerate(norms):
    f = 0.0 if nv <= tau else 1.0 - tau / nv
    for a, ax in zip(out, axes):
      unit_slice(a, i, ax)[...] *= f
  return out


def unit_vectors(arrays, axes):
  """Per unit, the concatenation of its entries in every array (C order)."""
  n = arrays[0].shape[axes[0]]
  return [np.concatenate([np.asarray(unit_slice(a, i, ax), np.float64).ravel()
                          for a, ax in zip(arrays, axes)]) for i in range(n)]


def from_unit_vectors(vectors, like, axes):
  """Inverse of :func:`unit_vectors`: writes per-unit vectors into copies of ``like``."""
  out = [np.zeros(np.shape(a)) for a in like]
  for i, vec in enumerate(vectors):
    pos = 0
    for a, ax in zip(out, axes):
      s = unit_slice(a, i, ax)
      s[...] = vec[pos:pos + s.size].reshape(s.shape)
      pos += s.size
  return out


# ------------------------------------------------------- group proxes
def group_prox_objective(y, x, reg, s):
  """``sum (y - x)^2 / (2 s) + reg ||y||`` for one group (float64)."""
  return np.sum((y - x) ** 2 / (2 * s)) + reg * np.linalg.norm(y)


def group_prox_root(x, reg, s):
  """argmin_y sum (y - x)^2 / (2 s) + reg ||y|| for one group, by brentq.

  Optimality: ``y = 0`` iff ``||x / s|| <= reg``; else ``y_j = x_j d_j r /
  (d_j r + reg)`` with ``d = 1 / s`` and ``r = ||y||`` the root of
  ``sum_j (d_j x_j / (d_j r + reg))^2 = 1``.
  """
  x = np.asarray(x, np.float64).ravel()
  s = np.broadcast_to(np.asarray(s, np.float64), x.shape).ravel()
  d = 1.0 / s
  ndx = np.linalg.norm(d * x)
  if ndx <= reg:
    return np.zeros_like(x)
  f = lambda r: np.sum((d * x / (d * r + reg)) ** 2) - 1.0
  lo, hi = (ndx - reg) / d.max(), (ndx - reg) / d.min()
  r = optimize.brentq(f, lo * (1 - 1e-12), hi * (1 + 1e-12), xtol=1e-300,
                      rtol=1e-15, maxiter=1000)
  return x * d * r / (d * r + reg)


def group_prox_generic(x, reg, s):
  """The same minimiser by a generic solver (scipy L-BFGS-B), compared with
  the only non-smooth point ``y = 0``."""
  x = np.asarray(x, np.float64).ravel()
  s = np.broadcast_to(np.asarray(s, np.float64), x.shape).ravel()
  fun = lambda y: group_prox_objective(y, x, reg, s)

  def grad(y):
    n = np.linalg.norm(y)
    return (y - x) / s + (reg * y / n if n > 0 else 0.0)
  best = optimize.minimize(fun, x, jac=grad, method="L-BFGS-B",
                           options=dict(ftol=1e-15, gtol=1e-13, maxiter=10000))
  zero = np.zeros_like(x)
  return zero if fun(zero) <= fun(best.x) else best.x


def group_prox_slices(arrays, axes, reg, scalings, solver=group_prox_root):
  """Group prox where unit ``i``'s group is its entries in every array;
  ``scalings`` one array per input (broadcastable). Float64."""
  s_full = [np.broadcast_to(np.asarray(s, np.float64), np.shape(a))
            for s, a in zip(scalings, arrays)]
  xs = unit_vectors(arrays, axes)
  ss = unit_vectors(s_full, axes)
  return from_unit_vectors([solver(x, reg, s) for x, s in zip(xs, ss)],
                           arrays, axes)


# ------------------------------------------------ elementwise proxes
def soft(z, mu):
  """Soft threshold (prox of mu |y|)."""
  return np.sign(z) * np.maximum(np.abs(z) - mu, 0.0)


def hard(z, mu):
  """Hard threshold (prox of mu ||y||_0): 0 for |z| <= sqrt(2 mu)."""
  return np.where(np.abs(z) > np.sqrt(2 * mu), z, 0.0)


# ----------------------------------------------------------------- Adam
class Adam:
  """Adam's moments in float64 on ``{path: array}`` dicts."""

  def __init__(self, params, b1=0.9, b2=0.999, bias_correction=True):
    self.mu = {k: np.zeros_like(v, np.float64) for k, v in params.items()}
    self.nu = {k: np.zeros_like(v, np.float64) for k, v in params.items()}
    self.t, self.b1, self.b2, self.bc = 0, b1, b2, bias_correction

  def step(self, grads):
    """Updates the moments; returns the (bias-corrected) ``m_hat, v_hat``."""
    self.t += 1
    m_hat, v_hat = {}, {}
    for k, g in grads.items():
      self.mu[k] = self.b1 * self.mu[k] + (1 - self.b1) * g
      self.nu[k] = self.b2 * self.nu[k] + (1 - self.b2) * g * g
      c1 = 1 - self.b1 ** self.t if self.bc else 1.0
      c2 = 1 - self.b2 ** self.t if self.bc else 1.0
      m_hat[k], v_hat[k] = self.mu[k] / c1, self.nu[k] / c2
    return m_hat, v_hat


# ------------------------------------------------------------- PathProx
def unit_w(kernel, i):
  return kernel[..., i]


def unit_v(kernel, i):
  return kernel[..., i, :]


def group_path_norm(p, a, b):
  n = p[a]["kernel"].shape[-1]
  return sum(np.linalg.norm(unit_w(p[a]["kernel"], i)) *
             np.linalg.norm(unit_v(p[b]["kernel"], i)) for i in range(n))


def balance_walk(params, pairs, dead=1e-12):
  """Appendix B: walk the groups in order, scale B_g so that P_g = P*, and
  compensate in group g+1 (its input bias times s, its output kernel over s).
  A dead group (P_g <= dead) forwards the scale it received."""
  p = copy64(params)
  norms = [group_path_norm(p, a, b) for a, b in pairs]
  live = [x > dead for x in norms]
  if not any(live):
    return p
  target = np.exp(np.mean([np.log(x) for x, l in zip(norms, live) if l]))
  incoming = 1.0
  for g, (a, b) in enumerate(pairs[:-1]):
    s = target / group_path_norm(p, a, b) if live[g] else incoming
    p[b]["kernel"] *= s
    if "bias" in p[b]:
      p[b]["bias"] *= s
    a2, b2 = pairs[g + 1]
    if "bias" in p[a2]:
      p[a2]["bias"] *= s
    p[b2]["kernel"] /= s
    incoming = s
  return p


def prox_step(params, pairs, tau, eps=1e-12, include_bias_in_norm=False):
  """Algorithm 4.1's prox: project each w_i (bias entry divided by the same
  norm), group soft-threshold each v_i at tau."""
  p = copy64(params)
  for a, b in pairs:
    ka, kb = p[a]["kernel"], p[b]["kernel"]
    for i in range(ka.shape[-1]):
      sq = np.sum(ka[..., i] ** 2)
      if include_bias_in_norm and "bias" in p[a]:
        sq += p[a]["bias"][i] ** 2
      nw = np.sqrt(sq)
      if nw > eps:
        ka[..., i] /= nw
        if "bias" in p[a]:
          p[a]["bias"][i] /= nw
      nv = np.linalg.norm(kb[..., i, :])
      kb[..., i, :] = 0.0 if nv <= tau else kb[..., i, :] * (1 - tau / nv)
  return p


def ungrouped_decay_grads(params, grads, pairs, lam):
  """``g + lam K`` on the kernels in no pair, ``g`` elsewhere (float64)."""
  grouped = {x for pair in pairs for x in pair}
  out = {}
  for layer, d in params.items():
    out[layer] = {}
    for n, a in d.items():
      g = np.array(grads[layer][n], np.float64)
      if n == "kernel" and layer not in grouped:
        g = g + lam * np.asarray(a, np.float64)
      out[layer][n] = g
  return out


def sgd_with_ungrouped_decay(params, grads, pairs, lr, lam):
  """``theta - lr (g + lam K)`` with weight decay on the kernels in no pair."""
  g = ungrouped_decay_grads(params, grads, pairs, lam)
  return {layer: {n: np.asarray(a, np.float64) - lr * g[layer][n]
                  for n, a in d.items()} for layer, d in params.items()}


def pathprox_step(params, grads, pairs, lr, lam, balance=True):
  """One full PathProx iteration (Algorithm 4.1): SGD (+WD on ungrouped
  kernels), balancing, projection, soft-threshold at lam * lr."""
  z = sgd_with_ungrouped_decay(params, grads, pairs, lr, lam)
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
