"""Unit groups beyond a Dense pair: two heads, summed pre-activations, conv -> flatten -> dense.

Each topology is a small network with a NumPy float64 forward pass and its
``UnitGroup`` description. The library's unit norms, PathProx prox, PathProx
step (with and without balancing) are checked against the independent NumPy
float64 reference of ``tests/reference.py`` (explicit loops over units, each
slice reshaped to its view and indexed with NumPy). That the descriptions are
right, i.e. that they describe homogeneous units, is checked on the network
function itself: rescaling every unit (input slices and input-bias entries
by ``a_i``, output slices by ``1 / a_i``) leaves the output unchanged, and a
wrong description does not. ``compact`` is checked for exactness, shapes
and bias folding; ``from_groups`` and ``from_pairs`` for their errors.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pathprox_jax as ppx
from pathprox_jax import Slice, UnitGroup
from tests import reference
from tests.reference import (
    conv_valid,
    group_path_norm,
    group_unit_norms,
    relu,
    scale_unit,
    view_of,
)

N = 7  # batch
H = W = 4  # conv output size (VALID 3x3 on 6x6)
C = 5  # conv channels (units)


# ================================================================ topologies
@dataclasses.dataclass
class Topology:
  name: str
  params: dict  # nested dict of float32 NumPy arrays
  groups: list  # [UnitGroup] in network order
  forward: object  # (params, x) -> (N, out), NumPy float64
  x: object
  ungrouped: tuple = ()

  def spec(self, groups=None):
    return ppx.UnitSpec.from_groups(
        self.params, self.groups if groups is None else groups
    )

  def out(self, params):
    return self.forward(reference.copy64(params), self.x)


def _rng(seed):
  return np.random.default_rng(seed)


def _normal(r, *shape):
  return r.normal(size=shape).astype(np.float32)


def two_heads():
  """relu(x A + a) feeding two heads; the output is their concatenation."""
  r = _rng(1)
  params = {
      "fc1": {"kernel": _normal(r, 5, 6), "bias": _normal(r, 6)},
      "head_a": {"kernel": _normal(r, 6, 3), "bias": _normal(r, 3)},
      "head_b": {"kernel": _normal(r, 6, 4), "bias": _normal(r, 4)},
  }

  def forward(p, x):
    h = relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    return np.concatenate(
        [
            h @ p["head_a"]["kernel"] + p["head_a"]["bias"],
            h @ p["head_b"]["kernel"] + p["head_b"]["bias"],
        ],
        1,
    )

  group = UnitGroup(
      inputs=[("fc1/kernel", -1)],
      biases=["fc1/bias"],
      outputs=[
          Slice("head_a/kernel", 0, bias="head_a/bias"),
          Slice("head_b/kernel", 0, bias="head_b/bias"),
      ],
  )
  return Topology("two_heads", params, [group], forward, _normal(r, N, 5))


def sum_inputs():
  """relu(x1 A1 + (z E) A2 + b) V + c; E is an ungrouped kernel."""
  r = _rng(2)
  params = {
      "embed": {"kernel": _normal(r, 5, 3)},
      "a1": {"kernel": _normal(r, 4, 6), "bias": _normal(r, 6)},
      "a2": {"kernel": _normal(r, 3, 6)},
      "out": {"kernel": _normal(r, 6, 3), "bias": _normal(r, 3)},
  }

  def forward(p, x):
    x1, z = x
    x2 = z @ p["embed"]["kernel"]
    h = relu(x1 @ p["a1"]["kernel"] + x2 @ p["a2"]["kernel"] + p["a1"]["bias"])
    return h @ p["out"]["kernel"] + p["out"]["bias"]

  group = UnitGroup(
      inputs=[("a1/kernel", 1), ("a2/kernel", 1)],
      biases=["a1/bias"],
      outputs=[Slice("out/kernel", 0, bias="out/bias")],
  )
  return Topology(
      "sum_inputs",
      params,
      [group],
      forward,
      (_normal(r, N, 4), _normal(r, N, 5)),
      ungrouped=("embed/kernel",),
  )


def conv_flatten(order, conv_flag=False):
  """Conv (3, 3, 2, C) VALID -> ReLU -> flatten (NHWC or NCHW) -> Dense."""
  r = _rng(3)
  out = 3
  params = {
      "conv": {"kernel": _normal(r, 3, 3, 2, C) / 2, "bias": _normal(r, C)},
      "fc": {"kernel": _normal(r, H * W * C, out) / 4, "bias": _normal(r, out)},
  }

  def forward(p, x):
    h = relu(conv_valid(x, p["conv"]["kernel"]) + p["conv"]["bias"])
    if order == "nchw":
      h = h.transpose(0, 3, 1, 2)
    return h.reshape(h.shape[0], -1) @ p["fc"]["kernel"] + p["fc"]["bias"]

  if order == "nhwc":
    fc = Slice(
        "fc/kernel",
        axis=1,
        view=(H * W, C, out),
        bias="fc/bias",
        conv=conv_flag,
    )
  else:
    fc = Slice(
        "fc/kernel",
        axis=0,
        view=(C, H * W, out),
        bias="fc/bias",
        conv=conv_flag,
    )
  group = UnitGroup(
      inputs=[("conv/kernel", -1)], biases=["conv/bias"], outputs=[fc]
  )
  return Topology(
      f"conv_{order}", params, [group], forward, _normal(r, N, H + 2, W + 2, 2)
  )


def chain():
  """Two groups: relu(x A + a) -> heads B1, B2 -> relu(y1 C1 + y2 C2 + d) -> E.

  Group 0 has two output slices (B1, B2, each with its bias), group 1 two
  input slices (C1, C2) and the bias d; balancing moves a scale from
  group 0's outputs to group 1."""
  r = _rng(4)
  params = {
      "a": {"kernel": _normal(r, 5, 6), "bias": _normal(r, 6)},
      "b1": {"kernel": _normal(r, 6, 3), "bias": _normal(r, 3)},
      "b2": {"kernel": _normal(r, 6, 4), "bias": _normal(r, 4)},
      "c1": {"kernel": _normal(r, 3, 5), "bias": _normal(r, 5)},
      "c2": {"kernel": _normal(r, 4, 5)},
      "e": {"kernel": 5 * _normal(r, 5, 3), "bias": _normal(r, 3)},
  }

  def forward(p, x):
    h = relu(x @ p["a"]["kernel"] + p["a"]["bias"])
    y1 = h @ p["b1"]["kernel"] + p["b1"]["bias"]
    y2 = h @ p["b2"]["kernel"] + p["b2"]["bias"]
    h2 = relu(y1 @ p["c1"]["kernel"] + y2 @ p["c2"]["kernel"] + p["c1"]["bias"])
    return h2 @ p["e"]["kernel"] + p["e"]["bias"]

  g0 = UnitGroup(
      inputs=[("a/kernel", -1)],
      biases=["a/bias"],
      outputs=[
          Slice("b1/kernel", 0, bias="b1/bias"),
          Slice("b2/kernel", 0, bias="b2/bias"),
      ],
  )
  g1 = UnitGroup(
      inputs=[("c1/kernel", -1), ("c2/kernel", -1)],
      biases=["c1/bias"],
      outputs=[Slice("e/kernel", 0, bias="e/bias")],
  )
  return Topology("chain", params, [g0, g1], forward, _normal(r, N, 5))


TOPOLOGIES = {
    "two_heads": two_heads,
    "sum_inputs": sum_inputs,
    "conv_nhwc": lambda: conv_flatten("nhwc"),
    "conv_nchw": lambda: conv_flatten("nchw"),
    "chain": chain,
}
NAMES = list(TOPOLOGIES)


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  den = np.linalg.norm(b)
  return np.linalg.norm(a - b) / den if den > 0 else np.linalg.norm(a)


def assert_trees_close(got, want_flat, tol, what=""):
  got = reference.flat(got)
  assert got.keys() == want_flat.keys()
  for p in got:
    assert got[p].shape == want_flat[p].shape, p
    r = rel(got[p], want_flat[p])
    assert r <= tol, (what, p, r)


# ================================================================== checks
def test_numpy_conv_matches_lax():
  """The reference's conv (the basis of the conv topologies) is right."""
  r = _rng(0)
  x, k = _normal(r, 2, 6, 6, 2), _normal(r, 3, 3, 2, 4)
  want = jax.lax.conv_general_dilated(
      x,
      k,
      (1, 1),
      "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST,
  )
  np.testing.assert_allclose(
      conv_valid(x.astype(np.float64), k), want, rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("include_bias", [False, True])
def test_unit_norms_and_prox_path_norm(name, include_bias):
  t = TOPOLOGIES[name]()
  spec = t.spec()
  flat = reference.flat(t.params)
  ref_norms = [group_unit_norms(flat, g) for g in t.groups]
  # a threshold between the unit norms: some units are cut, some kept
  taus = [float(np.sort(nv)[2] + 1e-3) for _, nv in ref_norms]

  @jax.jit
  def run(params, taus):
    groups, rest = spec.split(params)
    norms = [ppx.prox.unit_norms(x) for x in groups]
    new = [
        ppx.prox.prox_path_norm(
            x, tau / 0.5, 0.5, include_bias_in_norm=include_bias
        )
        for x, tau in zip(groups, taus)
    ]
    return norms, spec.merge(new, rest)

  norms, new = run(t.params, jnp.asarray(taus))
  for (nw, nv), (rw, rv) in zip(norms, ref_norms):
    np.testing.assert_allclose(nw, rw, rtol=1e-5)
    np.testing.assert_allclose(nv, rv, rtol=1e-5)
  for g, tau in zip(t.groups, taus):
    reference.group_prox(flat, g, tau, include_bias=include_bias)
  assert_trees_close(new, flat, 1e-5, name)
  for g in t.groups:
    _, nv = group_unit_norms(flat, g)
    assert 0 < np.sum(nv == 0) < len(nv)  # the prox cut some units
    nw, _ = group_unit_norms(flat, g)
    if include_bias:
      nw = np.sqrt(nw**2 + reference.group_bias_sq(flat, g))
    np.testing.assert_allclose(nw, 1.0, rtol=1e-12)


def _prunable(t, seed):
  """The topology's params with units 0 and 1 of every group given tiny
  output weights (so the step prunes them), and random gradients (tiny on
  those output weights too)."""
  flat = reference.flat(t.params)
  for g in t.groups:
    for i in (0, 1):
      scale_unit(flat, g.outputs, i, 1e-3)
  r = _rng(seed)
  grads = {p: 0.1 * r.normal(size=a.shape) for p, a in flat.items()}
  for g in t.groups:
    for i in (0, 1):
      scale_unit(grads, g.outputs, i, 1e-3)
  f32 = lambda d: jax.tree.map(
      lambda a: a.astype(np.float32), reference.unflat(d)
  )
  return f32(flat), f32(grads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("balance", [True, False])
def test_pathprox_step_matches_numpy(name, balance):
  t = TOPOLOGIES[name]()
  spec = t.spec()
  assert spec.ungrouped_kernels == t.ungrouped
  params, grads = _prunable(t, seed=5)
  lr, lam = 0.5, 0.2
  tx = ppx.pathprox(lr, lam, spec, balance=balance)

  @jax.jit
  def step(params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)

  got = step(params, grads)
  want = reference.pathprox_step_groups(
      params, grads, t.groups, set(t.ungrouped), lr, lam, balance
  )
  assert_trees_close(got, want, 1e-5, (name, balance))
  for g in t.groups:
    _, nv = group_unit_norms(want, g)
    assert nv[0] == nv[1] == 0 and np.all(nv[2:] > 0), nv
  # Balancing: trivial for one group, not for the chain.
  on, off = (
      reference.pathprox_step_groups(
          params, grads, t.groups, set(t.ungrouped), lr, lam, b
      )
      for b in (True, False)
  )
  diff = max(rel(on[p], off[p]) for p in on)
  if len(t.groups) == 1:
    assert diff <= 1e-12
  else:
    assert diff > 1e-2
    if balance:  # after balancing the two path norms were equal
      z = reference.flat(params)
      for p in z:
        z[p] = z[p] - lr * reference.flat(grads)[p]
      reference.balance_groups(z, t.groups)
      pn = [group_path_norm(z, g) for g in t.groups]
      assert abs(pn[0] - pn[1]) <= 1e-9 * pn[0]
      raw = [group_path_norm(reference.flat(params), g) for g in t.groups]
      assert max(raw) / min(raw) > 2  # and they were not before


def _rescaled(t, spec, seed):
  r = _rng(seed)
  a = [
      jnp.asarray(r.uniform(0.3, 3.0, size=n), jnp.float32)
      for n in spec.num_units
  ]

  @jax.jit
  def run(params, a):
    groups, rest = spec.split(params)
    return spec.merge(
        [
            ppx.units.scale_units(x, w=ai, b=ai, v=1 / ai)
            for x, ai in zip(groups, a)
        ],
        rest,
    )

  return run(t.params, a), a


@pytest.mark.parametrize("name", NAMES)
def test_rescaling_units_preserves_function(name):
  """The description names homogeneous units: scaling unit i's input slices
  and input-bias entries by a_i and its output slices by 1 / a_i does not
  change the network output."""
  t = TOPOLOGIES[name]()
  spec = t.spec()
  scaled, a = _rescaled(t, spec, seed=6)
  before, after = t.out(t.params), t.out(scaled)
  assert rel(after, before) <= 1e-5, rel(after, before)
  # the rescaling did change every grouped leaf
  f0, f1 = reference.flat(t.params), reference.flat(scaled)
  for g in t.groups:
    for s in g.inputs + g.outputs + g.biases:
      assert rel(f1[s.path], f0[s.path]) > 0.05, s.path
  # ... and it is what the NumPy reference does
  for g, ai in zip(t.groups, a):
    for i, f in enumerate(np.asarray(ai, np.float64)):
      scale_unit(f0, g.inputs + g.biases, i, f)
      scale_unit(f0, g.outputs, i, 1 / f)
  assert_trees_close(scaled, f0, 1e-6, name)


@pytest.mark.parametrize(
    "name,wrong",
    [
        # the other flatten order
        (
            "conv_nhwc",
            lambda t: [
                dataclasses.replace(
                    t.groups[0],
                    outputs=(
                        Slice(
                            "fc/kernel", 0, view=(C, H * W, 3), bias="fc/bias"
                        ),
                    ),
                )
            ],
        ),
        (
            "conv_nchw",
            lambda t: [
                dataclasses.replace(
                    t.groups[0],
                    outputs=(
                        Slice(
                            "fc/kernel", 1, view=(H * W, C, 3), bias="fc/bias"
                        ),
                    ),
                )
            ],
        ),
        # a head left out of the outputs
        (
            "two_heads",
            lambda t: [
                dataclasses.replace(
                    t.groups[0], outputs=t.groups[0].outputs[:1]
                )
            ],
        ),
        # a summed kernel left out of the inputs
        (
            "sum_inputs",
            lambda t: [
                dataclasses.replace(t.groups[0], inputs=t.groups[0].inputs[:1])
            ],
        ),
        # the input bias left out
        (
            "chain",
            lambda t: [
                t.groups[0],
                dataclasses.replace(t.groups[1], biases=()),
            ],
        ),
    ],
)
def test_rescaling_detects_a_wrong_description(name, wrong):
  """Negative control: the invariance check above can fail."""
  t = TOPOLOGIES[name]()
  spec = t.spec(wrong(t))
  scaled, _ = _rescaled(t, spec, seed=6)
  assert rel(t.out(scaled), t.out(t.params)) > 1e-2


# ------------------------------------------------------------------ compact
def _killed(t):
  """Group 0: unit 0 gets v = 0, unit 1 w = 0 with bias +0.8 (a constant
  to fold), unit 2 w = 0 with bias -0.5 (relu gives 0: nothing to fold).
  Later groups: unit 0 gets v = 0."""
  flat = reference.flat(t.params)
  g0 = t.groups[0]
  scale_unit(flat, g0.outputs, 0, 0.0)
  for i, b in ((1, 0.8), (2, -0.5)):
    scale_unit(flat, g0.inputs, i, 0.0)
    for s in g0.biases:
      reference.unit_slice(view_of(flat, s), i, s.axis)[...] = b
  for g in t.groups[1:]:
    scale_unit(flat, g.outputs, 0, 0.0)
  return jax.tree.map(lambda a: a.astype(np.float32), reference.unflat(flat))


def _expected_bias_shift(flat, s, i, value):
  """value * (the sum of unit i's output weights over the non-output axes)."""
  v = view_of(flat, s)
  piece = np.take(v, i, axis=s.axis % v.ndim)  # the other axes, out last
  return value * piece.reshape(-1, piece.shape[-1]).sum(0)


@pytest.mark.parametrize("name", NAMES)
def test_compact_keeps_outputs_and_shapes(name):
  t = TOPOLOGIES[name]()
  spec = t.spec()
  params = _killed(t)
  small, small_spec = ppx.compact(params, spec)
  before, after = t.forward(reference.copy64(params), t.x), t.forward(
      reference.copy64(small), t.x
  )
  assert rel(after, before) <= 1e-6, rel(after, before)
  # Removed: units 0, 1, 2 of group 0 and unit 0 of the others.
  removed = [[0, 1, 2]] + [[0]] * (len(t.groups) - 1)
  assert small_spec.num_units == tuple(
      n - len(r) for n, r in zip(spec.num_units, removed)
  )
  # Every slice is the original with those units deleted along its unit axis.
  f0, f1 = reference.flat(params), reference.flat(small)
  for g, sg, rm in zip(t.groups, small_spec.groups, removed):
    for s, ss in zip(
        g.inputs + g.biases + g.outputs, sg.inputs + sg.biases + sg.outputs
    ):
      assert ss.path == s.path
      v = view_of(f0, s)
      want = np.delete(v, rm, axis=s.axis % v.ndim)
      assert ss.view == want.shape
      assert f1[s.path].shape == ss.shape
      np.testing.assert_array_equal(f1[s.path].reshape(ss.view), want)
  # The constant of unit 1 (relu(0.8) = 0.8) went into each output bias.
  for s in t.groups[0].outputs:
    shift = _expected_bias_shift(f0, s, 1, 0.8)
    assert np.abs(shift).max() > 1e-3
    np.testing.assert_allclose(
        f1[s.bias], f0[s.bias] + shift, rtol=1e-6, atol=1e-6
    )
  # Shapes of the leaves as a network would hold them.
  if name.startswith("conv"):
    n = small_spec.num_units[0]
    assert f1["conv/kernel"].shape == (3, 3, 2, n)
    assert f1["fc/kernel"].shape == (H * W * n, 3)
  # The compact spec describes the compact params: PathProx runs on them.
  tx = ppx.pathprox(0.1, 1e-3, small_spec)
  u, _ = jax.jit(tx.update)(
      jax.tree.map(jnp.zeros_like, small), tx.init(small), small
  )
  assert jax.tree.structure(u) == jax.tree.structure(small)


@pytest.mark.parametrize("order", ["nhwc", "nchw"])
def test_compact_conv_flatten_with_default_conv_flag_is_exact(order):
  """With the Slice exactly as ``from_pairs``'s hint writes it (no
  ``conv=False``) the view's spatial axis counts as convolution taps, so the
  w = 0, relu(b) > 0 unit may be kept rather than folded; either way the
  outputs must not change and the v = 0 and relu(b) = 0 units go."""
  t = conv_flatten(order, conv_flag=None)
  spec = t.spec()
  params = _killed(t)
  small, small_spec = ppx.compact(params, spec)
  assert (
      rel(
          t.forward(reference.copy64(small), t.x),
          t.forward(reference.copy64(params), t.x),
      )
      <= 1e-6
  )
  assert small_spec.num_units[0] in (C - 3, C - 2)
  # folding is exact here, so fold_conv_constants=True must remove it
  small2, spec2 = ppx.compact(params, spec, fold_conv_constants=True)
  assert spec2.num_units == (C - 3,)
  assert (
      rel(
          t.forward(reference.copy64(small2), t.x),
          t.forward(reference.copy64(params), t.x),
      )
      <= 1e-6
  )


# ---------------------------------------------------------------- errors
def test_from_pairs_on_conv_flatten_dense_suggests_the_view():
  t = conv_flatten("nhwc")
  with pytest.raises(ValueError) as e:
    ppx.UnitSpec.from_pairs(t.params, [("conv", "fc")])
  msg = str(e.value)
  assert "Unit-count mismatch" in msg and "flatten" in msg
  out = t.params["fc"]["kernel"].shape[-1]
  assert (
      f"Slice('fc/kernel', axis=1, view=({H * W}, {C}, {out}), "
      "out_axes=(2,), conv=False, bias='fc/bias')"
  ) in msg
  assert (
      f"Slice('fc/kernel', axis=0, view=({C}, {H * W}, {out}), "
      "out_axes=(2,), conv=False, bias='fc/bias')"
  ) in msg
  # following the hint works
  assert ppx.UnitSpec.from_groups(t.params, t.groups).num_units == (C,)


def test_flatten_hint_follows_the_equinox_layout():
  # Equinox Linear.weight is (out, in): the hint must split axis 1, keep the
  # bias on axis 0, and its channel-major form must describe a CHW flatten.
  r = _rng(3)
  params = {
      "conv": {"weight": _normal(r, 5, 2, 3, 3), "bias": _normal(r, 5, 1, 1)},
      "fc": {"weight": _normal(r, 3, 80), "bias": _normal(r, 3)},
  }
  with pytest.raises(ValueError) as e:
    ppx.UnitSpec.from_pairs(params, [("conv", "fc")])
  hint = (
      "Slice('fc/weight', axis=1, view=(3, 5, 16), out_axes=(0,), "
      "conv=False, bias='fc/bias')"
  )
  assert hint in str(e.value)
  spec = ppx.UnitSpec.from_groups(
      params,
      [
          UnitGroup(
              inputs=[Slice("conv/weight", 0)],
              biases=[Slice("conv/bias", 0)],
              outputs=[
                  Slice(
                      "fc/weight",
                      1,
                      view=(3, 5, 16),
                      out_axes=(0,),
                      conv=False,
                      bias="fc/bias",
                  )
              ],
          )
      ],
  )
  # A CHW feature map flattened: rescaling channel c must be undone by the
  # hinted slice, i.e. the unit's rows are fc[:, c*16:(c+1)*16].
  x = r.standard_normal((5, 16))
  a = r.uniform(0.3, 3.0, size=5)
  fc = np.asarray(params["fc"]["weight"], np.float64)
  (v,) = spec.split({
      "conv": {"weight": jnp.zeros((5, 2, 3, 3)), "bias": jnp.zeros((5, 1, 1))},
      "fc": {"weight": jnp.asarray(fc), "bias": jnp.zeros(3)},
  })[0][0].v
  scaled = np.asarray(v) / a[None, :, None]
  np.testing.assert_allclose(
      scaled.reshape(3, 80) @ (x * a[:, None]).reshape(80),
      fc @ x.reshape(80),
      rtol=1e-5,
  )


def _merged_view_params():
  """A (in, heads, head_dim) kernel whose units are the heads*head_dim
  features, described by a view that merges the two leaf axes."""
  r = _rng(7)
  params = {
      "qkv": {"kernel": _normal(r, 4, 2, 3)},
      "o": {"kernel": _normal(r, 6, 3), "bias": _normal(r, 3)},
  }
  group = UnitGroup(
      inputs=[Slice("qkv/kernel", 1, view=(4, 6))],
      outputs=[Slice("o/kernel", 0, bias="o/bias")],
  )
  return params, ppx.UnitSpec.from_groups(params, [group])


def test_merged_view_cannot_be_resized():
  params, spec = _merged_view_params()
  s = spec.groups[0].inputs[0]
  assert s.view == (4, 6) and s.shape == (4, 2, 3)
  assert s.leaf_axis is None
  assert s.resized(6) is s  # same size: nothing to cut
  with pytest.raises(ValueError, match=r"'qkv/kernel'.*spans several axes"):
    s.resized(5)
  # compact refuses with the same clear error once a unit is dead ...
  params["o"]["kernel"][2] = 0.0
  with pytest.raises(ValueError, match=r"'qkv/kernel'.*spans several axes"):
    ppx.compact(params, spec)
  # ... and the other slices of the group are fine to resize
  assert spec.groups[0].outputs[0].resized(5).shape == (5, 3)


def test_resized_views_of_flattened_dense():
  """Cutting channels of a flatten view cuts the leaf's row axis."""
  for order in ("nhwc", "nchw"):
    t = conv_flatten(order)
    s = t.spec().groups[0].outputs[0]
    assert s.leaf_axis == 0
    small = s.resized(2)
    assert small.shape == (H * W * 2, 3)
    assert small.view == ((H * W, 2, 3) if order == "nhwc" else (2, H * W, 3))


def _dense_params(dtype=np.float32):
  r = _rng(8)
  return {
      "fc1": {"kernel": _normal(r, 5, 6).astype(dtype), "bias": _normal(r, 6)},
      "out": {"kernel": _normal(r, 6, 3), "bias": _normal(r, 3)},
      "bad": {"kernel": _normal(r, 7, 3)},
      "o2": {"kernel": _normal(r, 6, 2)},
      "o3": {"kernel": _normal(r, 3, 4)},
  }


def _group(
    inputs=(("fc1/kernel", 1),),
    outputs=(Slice("out/kernel", 0),),
    biases=("fc1/bias",),
):
  return UnitGroup(
      inputs=list(inputs), outputs=list(outputs), biases=list(biases)
  )


def test_from_groups_error_messages():
  p = _dense_params()
  from_groups = ppx.UnitSpec.from_groups
  # unit-count mismatch: every slice named with its view and axis
  with pytest.raises(ValueError) as e:
    from_groups(p, [_group(outputs=[Slice("bad/kernel", 0)])])
  msg = str(e.value)
  assert "Unit-count mismatch in group 0" in msg
  assert "'fc1/kernel' (view (5, 6), axis 1): 6" in msg
  assert "'bad/kernel' (view (7, 3), axis 0): 7" in msg
  # ... also through a view
  t = conv_flatten("nhwc")
  with pytest.raises(ValueError) as e:
    from_groups(
        t.params,
        [
            UnitGroup(
                inputs=[("conv/kernel", -1)],
                outputs=[Slice("fc/kernel", 1, view=(H * W * C // 4, 4, 3))],
            )
        ],
    )
  msg = str(e.value)
  assert f"'fc/kernel' (view ({H * W * C // 4}, 4, 3), axis 1): 4" in msg
  assert f"'conv/kernel' (view (3, 3, 2, {C}), axis 3): {C}" in msg
  # a leaf in two groups, or twice in one
  with pytest.raises(
      ValueError, match=r"'fc1/kernel' is used in groups 0 and " r"1.*disjoint"
  ):
    from_groups(
        p, [_group(), _group(outputs=[Slice("o2/kernel", 0)], biases=())]
    )
  with pytest.raises(
      ValueError, match=r"'fc1/kernel' is used twice in group 0"
  ):
    from_groups(p, [_group(inputs=[("fc1/kernel", 1), ("fc1/kernel", 1)])])
  with pytest.raises(ValueError, match=r"'out/bias' is used in groups 0 and 1"):
    from_groups(
        p,
        [
            _group(outputs=[Slice("out/kernel", 0, bias="out/bias")]),
            UnitGroup(
                inputs=[("bad/kernel", 1)],
                outputs=[Slice("o3/kernel", 0)],
                biases=["out/bias"],
            ),
        ],
    )
  # axis out of range (leaf shape, or view)
  with pytest.raises(
      ValueError,
      match=r"'fc1/kernel': unit axis 2 is out of " r"range for shape \(5, 6\)",
  ):
    from_groups(p, [_group(inputs=[("fc1/kernel", 2)])])
  with pytest.raises(
      ValueError,
      match=r"'fc/kernel': unit axis -4 is out of "
      r"range for shape \(16, 5, 3\)",
  ):
    from_groups(
        t.params,
        [
            UnitGroup(
                inputs=[("conv/kernel", -1)],
                outputs=[Slice("fc/kernel", -4, view=(H * W, C, 3))],
            )
        ],
    )
  # a view of the wrong size
  with pytest.raises(
      ValueError,
      match=r"'fc/kernel': view \(16, 4, 3\) has "
      r"192 entries but the leaf has shape \(80, 3\)",
  ):
    from_groups(
        t.params,
        [
            UnitGroup(
                inputs=[("conv/kernel", -1)],
                outputs=[Slice("fc/kernel", 1, view=(H * W, 4, 3))],
            )
        ],
    )
  # non-floating dtype (kernel, input bias)
  with pytest.raises(
      ValueError, match=r"'fc1/kernel' has dtype int32.*" "floating-point"
  ):
    from_groups(_dense_params(np.int32), [_group()])
  p_int_bias = _dense_params()
  p_int_bias["fc1"]["bias"] = np.arange(6, dtype=np.int32)
  with pytest.raises(ValueError, match=r"'fc1/bias' has dtype int32"):
    from_groups(p_int_bias, [_group()])
  # an output bias of the wrong size
  with pytest.raises(
      ValueError,
      match=r"Bias 'fc1/bias' has shape \(6,\).*" r"'out/kernel'.*3 outputs",
  ):
    from_groups(
        p,
        [_group(outputs=[Slice("out/kernel", 0, bias="fc1/bias")], biases=())],
    )
  # output-only fields on an input slice
  with pytest.raises(ValueError, match="output slices only"):
    from_groups(p, [_group(inputs=[Slice("fc1/kernel", 1, bias="fc1/bias")])])
  # a missing leaf names what is there
  with pytest.raises(
      ValueError,
      match=r"'fc1/kernl' is not in the params.*" r"'fc1/bias', 'fc1/kernel'",
  ):
    from_groups(p, [_group(inputs=[("fc1/kernl", 1)])])
