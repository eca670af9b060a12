"""Independent NumPy references (float64, explicit loops) for the tests.

Written from the papers (PathProx, arXiv:2210.03069, Algorithm 4.1 and
Appendix B; ProxGen, arXiv:2007.07484, Algorithm 1 and eq. 2), not from the
library: explicit loops over groups and units, a sequential balancing walk,
scipy root finding / minimisation for proxes without a closed form. Nothing
here imports ``pathprox_jax`` (or ``jax``).

Params are nested dicts of NumPy arrays. The PathProx helpers come in two
forms. The general one works on a ``{path: float64 array}`` dict
(:func:`flat`) and unit groups described by slices: any object with
``inputs``, ``biases`` and ``outputs``, sequences of slices with ``path``,
``axis``, optional ``view`` (the leaf reshaped) and, for output slices,
``bias`` (a ``pathprox_jax.UnitGroup`` qualifies, as does :class:`Group`).
The Dense-pair form takes Flax-layout Dense/Conv dicts ``{layer: {"kernel":
(..., in, out), "bias": (out,)}}`` and ``pairs`` of ``(input_layer,
output_layer)`` names in network order, unit ``i`` being output channel
``i`` of the input layer and input channel ``i`` of the output layer
(:func:`pair_groups` turns them into groups).
"""

from typing import NamedTuple

import numpy as np
from scipy import optimize


# ------------------------------------------------------------- pytrees
def flat(tree, prefix=""):
  """``{"a/b": float64 copy}`` from nested dicts / lists (no jax needed)."""
  out = {}
  items = (
      tree.items()
      if isinstance(tree, dict)
      else enumerate(tree)
      if isinstance(tree, (list, tuple))
      else None
  )
  if items is None:
    return {prefix: np.array(tree, np.float64)}
  for k, v in items:
    out.update(flat(v, f"{prefix}/{k}" if prefix else str(k)))
  return out


def unflat(flat_tree):
  """Nested dicts from a ``{"a/b": array}`` dict (inverse of :func:`flat`
  for nested dicts)."""
  out = {}
  for path, v in flat_tree.items():
    *head, last = path.split("/")
    d = out
    for k in head:
      d = d.setdefault(k, {})
    d[last] = v
  return out


def copy64(params):
  """A float64 deep copy of a nested dict of arrays."""
  return {
      k: copy64(v) if isinstance(v, dict) else np.array(v, np.float64)
      for k, v in params.items()
  }


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
    out[i] = np.sqrt(
        sum(
            np.sum(np.asarray(unit_slice(a, i, ax), np.float64) ** 2)
            for a, ax in zip(arrays, axes)
        )
    )
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
  return [
      np.concatenate([
          np.asarray(unit_slice(a, i, ax), np.float64).ravel()
          for a, ax in zip(arrays, axes)
      ])
      for i in range(n)
  ]


def from_unit_vectors(vectors, like, axes):
  """Inverse of :func:`unit_vectors`: writes per-unit vectors into copies of ``like``."""
  out = [np.zeros(np.shape(a)) for a in like]
  for i, vec in enumerate(vectors):
    pos = 0
    for a, ax in zip(out, axes):
      s = unit_slice(a, i, ax)
      s[...] = vec[pos : pos + s.size].reshape(s.shape)
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
  r = optimize.brentq(
      f,
      lo * (1 - 1e-12),
      hi * (1 + 1e-12),
      xtol=1e-300,
      rtol=1e-15,
      maxiter=1000,
  )
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

  best = optimize.minimize(
      fun,
      x,
      jac=grad,
      method="L-BFGS-B",
      options=dict(ftol=1e-15, gtol=1e-13, maxiter=10000),
  )
  zero = np.zeros_like(x)
  return zero if fun(zero) <= fun(best.x) else best.x


def group_prox_slices(arrays, axes, reg, scalings, solver=group_prox_root):
  """Group prox where unit ``i``'s group is its entries in every array;
  ``scalings`` one array per input (broadcastable). Float64."""
  s_full = [
      np.broadcast_to(np.asarray(s, np.float64), np.shape(a))
      for s, a in zip(scalings, arrays)
  ]
  xs = unit_vectors(arrays, axes)
  ss = unit_vectors(s_full, axes)
  return from_unit_vectors(
      [solver(x, reg, s) for x, s in zip(xs, ss)], arrays, axes
  )


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
      c1 = 1 - self.b1**self.t if self.bc else 1.0
      c2 = 1 - self.b2**self.t if self.bc else 1.0
      m_hat[k], v_hat[k] = self.mu[k] / c1, self.nu[k] / c2
    return m_hat, v_hat


# ------------------------------------------------------------- PathProx
class Slice(NamedTuple):
  """A slice of a leaf: unit ``i`` is entry ``i`` along ``axis`` of the leaf
  reshaped to ``view`` (``None``: the leaf's shape); ``bias`` names an output
  slice's bias."""

  path: str
  axis: int
  view: tuple | None = None
  bias: str | None = None


class Group(NamedTuple):
  """A unit group: its input slices, input-bias slices and output slices."""

  inputs: tuple
  biases: tuple
  outputs: tuple


def pair_groups(params, pairs):
  """The groups of Dense/Conv ``pairs`` (Flax layout, nested dict params)."""
  out = []
  for a, b in pairs:
    biases = (Slice(f"{a}/bias", 0),) if "bias" in params[a] else ()
    out_bias = f"{b}/bias" if "bias" in params[b] else None
    out.append(
        Group(
            (Slice(f"{a}/kernel", -1),),
            biases,
            (Slice(f"{b}/kernel", -2, bias=out_bias),),
        )
    )
  return out


def view_of(flat_tree, s):
  """Slice ``s`` of its leaf in ``flat_tree``: a NumPy view, writes go to the
  leaf."""
  a = flat_tree[s.path]
  v = a.reshape(a.shape if s.view is None else s.view)
  assert np.shares_memory(v, a)
  return v


def slice_views(flat_tree, slices):
  """``(views, axes)`` of a sequence of slices."""
  return [view_of(flat_tree, s) for s in slices], [s.axis for s in slices]


def scale_unit(flat_tree, slices, i, factor):
  """Unit ``i``'s entries of every slice times ``factor``, in place."""
  for s in slices:
    unit_slice(view_of(flat_tree, s), i, s.axis)[...] *= factor


def group_unit_norms(flat_tree, g):
  """``(||w_i||, ||v_i||)`` of every unit of group ``g``: sums of squares
  over every input slice and over every output slice (biases excluded)."""
  return (
      unit_norms(*slice_views(flat_tree, g.inputs)),
      unit_norms(*slice_views(flat_tree, g.outputs)),
  )


def group_bias_sq(flat_tree, g):
  """``||b_i||^2`` of every unit of group ``g`` over its input biases."""
  if not g.biases:
    return 0.0
  return unit_norms(*slice_views(flat_tree, g.biases)) ** 2


def group_path_norm(flat_tree, g):
  """``P_g = sum_i ||w_i|| ||v_i||``."""
  nw, nv = group_unit_norms(flat_tree, g)
  return float(np.sum(nw * nv))


def project_units(
    ws, w_axes, bs=(), b_axes=(), include_bias=False, min_norm=1e-12
):
  """The sphere projection: w_i (all slices) and b_i divided by ``||w_i||``
  (or ``||[w_i; b_i]||``), units at or below ``min_norm`` left alone, by a
  loop over units. Returns float64 copies ``(ws, bs)``."""
  ws = [np.array(w, np.float64) for w in ws]
  bs = [np.array(b, np.float64) for b in bs]
  n = ws[0].shape[w_axes[0]]
  for i in range(n):
    sq = sum(np.sum(unit_slice(w, i, a) ** 2) for w, a in zip(ws, w_axes))
    if include_bias:
      sq += sum(np.sum(unit_slice(b, i, a) ** 2) for b, a in zip(bs, b_axes))
    norm = np.sqrt(sq)
    if norm > min_norm:
      for arr, a in list(zip(ws, w_axes)) + list(zip(bs, b_axes)):
        unit_slice(arr, i, a)[...] /= norm
  return ws, bs


def group_prox(flat_tree, g, tau, include_bias=False, eps=1e-12):
  """Algorithm 4.1's prox on group ``g``, in place: project each w_i (bias
  entries divided by the same norm), group soft-threshold each v_i (spread
  over every output slice) at ``tau``."""
  w, w_axes = slice_views(flat_tree, g.inputs)
  b, b_axes = slice_views(flat_tree, g.biases)
  v, v_axes = slice_views(flat_tree, g.outputs)
  new_w, new_b = project_units(w, w_axes, b, b_axes, include_bias, eps)
  new_v = group_soft_threshold(v, v_axes, tau)
  for view, new in zip(w + b + v, new_w + new_b + new_v):
    view[...] = new


def balance_groups(flat_tree, groups, dead=1e-12):
  """Appendix B as a walk over a chain of groups, in place: group g's output
  slices and their biases times s_g, group g+1's input biases times s_g and
  its output slices over s_g, s_g making group g's path norm the geometric
  mean of the live ones (P_g > dead); a dead group forwards the scale it
  received."""
  p = [group_path_norm(flat_tree, g) for g in groups]
  live = [x > dead for x in p]
  if not any(live):
    return
  target = np.exp(np.mean([np.log(x) for x, l in zip(p, live) if l]))
  incoming = 1.0
  for k in range(len(groups) - 1):
    g, nxt = groups[k], groups[k + 1]
    s = target / group_path_norm(flat_tree, g) if live[k] else incoming
    for sl in g.outputs:
      flat_tree[sl.path] *= s
      if sl.bias is not None:
        flat_tree[sl.bias] *= s
    for sl in nxt.biases:
      flat_tree[sl.path] *= s
    for sl in nxt.outputs:
      flat_tree[sl.path] /= s
    incoming = s


def layer_scales_walk(p, dead=1e-12):
  """The walk of Appendix B on path norms alone: ``(c_in, c_out)`` per group.
  Live groups move to the geometric mean P* of the live groups, dead ones
  forward what they receive, the last group hands on 1."""
  live = [x > dead for x in p]
  target = (
      np.exp(np.mean([np.log(x) for x, l in zip(p, live) if l]))
      if any(live)
      else 1.0
  )
  c_in, c_out, incoming = [], [], 1.0
  for g, x in enumerate(p):
    c_in.append(incoming)
    out = incoming * target / x if live[g] else incoming
    if g == len(p) - 1:
      out = 1.0
    c_out.append(out)
    incoming = out
  return np.array(c_in), np.array(c_out)


def pathprox_step_groups(
    params,
    grads,
    groups,
    ungrouped,
    lr,
    lam,
    balance=True,
    include_bias=False,
    eps=1e-12,
):
  """One PathProx iteration (Algorithm 4.1) on slice groups: SGD (plus
  weight decay ``lam`` on the ``ungrouped`` kernel paths), balancing, prox at
  ``tau = lr * lam``. Returns a ``{path: float64}`` dict."""
  p, g = flat(params), flat(grads)
  for k in p:
    d = g[k] + (lam * p[k] if k in ungrouped else 0.0)
    p[k] = p[k] - lr * d
  if balance:
    balance_groups(p, groups)
  for grp in groups:
    group_prox(p, grp, lr * lam, include_bias, eps)
  return p


def ungrouped_kernels(params, pairs):
  """Paths of the kernels of the layers in no pair."""
  grouped = {x for pair in pairs for x in pair}
  return {
      f"{layer}/kernel"
      for layer, d in params.items()
      if layer not in grouped and "kernel" in d
  }


def balance_walk(params, pairs, dead=1e-12):
  """:func:`balance_groups` on Dense/Conv pairs; nested float64 dicts."""
  p = flat(params)
  balance_groups(p, pair_groups(params, pairs), dead)
  return unflat(p)


def prox_step(params, pairs, tau, eps=1e-12, include_bias_in_norm=False):
  """:func:`group_prox` on Dense/Conv pairs; nested float64 dicts."""
  p = flat(params)
  for grp in pair_groups(params, pairs):
    group_prox(p, grp, tau, include_bias_in_norm, eps)
  return unflat(p)


def ungrouped_decay_grads(params, grads, pairs, lam):
  """``g + lam K`` on the kernels in no pair, ``g`` elsewhere (float64)."""
  p, g = flat(params), flat(grads)
  decayed = ungrouped_kernels(params, pairs)
  return unflat({k: g[k] + (lam * p[k] if k in decayed else 0.0) for k in g})


def sgd_with_ungrouped_decay(params, grads, pairs, lr, lam):
  """``theta - lr (g + lam K)`` with weight decay on the kernels in no pair."""
  p, g = flat(params), flat(ungrouped_decay_grads(params, grads, pairs, lam))
  return unflat({k: p[k] - lr * g[k] for k in p})


def pathprox_step(params, grads, pairs, lr, lam, balance=True):
  """:func:`pathprox_step_groups` on Dense/Conv pairs; nested float64 dicts."""
  return unflat(
      pathprox_step_groups(
          params,
          grads,
          pair_groups(params, pairs),
          ungrouped_kernels(params, pairs),
          lr,
          lam,
          balance,
      )
  )


# ---------------------------------------------------------- forward passes
def relu(z):
  return np.maximum(z, 0.0)


def conv_valid(x, k):
  """NHWC x HWIO, stride 1, VALID, by loops over the taps."""
  kh, kw = k.shape[:2]
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = np.zeros(x.shape[:1] + (ho, wo, k.shape[3]))
  for dy in range(kh):
    for dx in range(kw):
      out += np.einsum(
          "nhwi,io->nhwo", x[:, dy : dy + ho, dx : dx + wo], k[dy, dx]
      )
  return out


def forward(params, layers, x, relu_after):
  """Dense-only forward pass, ReLU after the listed layer indices."""
  h = np.asarray(x, np.float64)
  for i, name in enumerate(layers):
    h = h @ params[name]["kernel"] + params[name].get("bias", 0.0)
    if i in relu_after:
      h = np.maximum(h, 0.0)
  return h
