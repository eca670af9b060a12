"""One network, three frameworks: Flax NNX, Equinox and Haiku give the same PathProx run.

The network is a factorized MLP 12-16-16-16-16-16-4 with ReLU after layers
0, 2 and 4 (three unit groups, so layer-wise balancing moves scales between
groups). It is built as an ``nnx.Module`` (``ppx.FactorizedMLP``), as an
Equinox module of ``eqx.nn.Linear`` layers (kernels ``(out, in)``) and as a
``hk.transform``-ed function of ``hk.Linear`` layers (module names with
``/~/``), with the same weights. Each framework trains with its own forward
pass, ``jax.grad`` and a jitted step, and a spec from
``UnitSpec.from_pairs(..., layout="auto")``; the parameters, mapped back to
the Flax layout, must agree with the Flax run at every step. The Flax run is
itself checked step by step against an independent NumPy float64 reference
(``tests/reference.py`` plus NumPy backpropagation).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pathprox_jax as ppx
from tests import reference as ref

eqx = pytest.importorskip("equinox")
hk = pytest.importorskip("haiku")

IN, WIDTH, OUT, DEPTH = 12, 16, 4, 3
NUM_LAYERS = 2 * DEPTH
RELU_AFTER = (0, 2, 4)
LR, LAM, STEPS, MOMENTUM = 0.3, 4e-2, 20, 0.5
HK_NAME = "factorized_mlp"

# Tolerance of the cross-framework comparisons, derived from float32
# rounding rather than read off one machine. The frameworks compute the same
# float32 step with different operation orders (Equinox's (out, in) kernels
# transpose every matmul; each framework's graph fuses differently; XLA's CPU
# kernels choose reduction orders by CPU features), so one step may differ
# by a few ulps (relative, in norm), and the differences carry over to later
# steps. Model of that: a random 1-ulp relative perturbation of every
# parameter after every step moves these 20-step trajectories by at most 11
# ulps in all (0.55 ulp per step, each of the four optimizers, 5 seeds); the
# largest cross-framework difference seen on any machine is 1.02e-6 = 8.5
# ulps (equinox/adaptive on an AMD EPYC CPU: 0.43 ulp per step). The budget
# is ULPS_PER_STEP = 4 ulps per step, growing linearly with the steps:
# ~7x the model's worst case, and still ~100x below the 1e-3 by which the
# negative control (balancing on vs off) differs.
EPS_F32 = float(np.finfo(np.float32).eps)
ULPS_PER_STEP = 4


def float32_tolerance(steps):
  """Relative tolerance after ``steps`` float32 steps: ``4 * steps * eps``."""
  return ULPS_PER_STEP * max(steps, 1) * EPS_F32


# ------------------------------------------------------------------ data
def data():
  r = np.random.default_rng(0)
  x = r.normal(size=(64, IN)).astype(np.float32)
  y = r.normal(size=(64, OUT)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def mse(out, y):
  return jnp.mean(jnp.square(out - y))


def flax_model():
  return ppx.FactorizedMLP(
      DEPTH, WIDTH, in_features=IN, num_classes=OUT, rngs=nnx.Rngs(0)
  )


def to_numpy_layers(pure):
  """``[(kernel (in, out), bias (out,)), ...]`` as float64 NumPy."""
  return [
      (
          np.asarray(pure[i]["kernel"], np.float64),
          np.asarray(pure[i]["bias"], np.float64),
      )
      for i in range(NUM_LAYERS)
  ]


# ------------------------------------------------------------ the three nets
# Each class builds its framework's model once (``__init__``); ``load`` puts
# Flax-layout weights ``[(kernel (in, out), bias), ...]`` into that
# framework's params, ``layers`` maps its params back to that layout.
class Flax:
  name = "flax"

  def __init__(self):
    self.graphdef, self.state = nnx.split(flax_model(), nnx.Param)
    self.pairs = [
        (f"layers/{i}", f"layers/{i + 1}") for i in range(0, NUM_LAYERS, 2)
    ]

  def load(self, layers):
    state = jax.tree.map(lambda a: a, self.state)  # a fresh State
    pure = nnx.to_pure_dict(state)
    for i, (k, b) in enumerate(layers):
      pure["layers"][i] = {
          "kernel": jnp.asarray(k, jnp.float32),
          "bias": jnp.asarray(b, jnp.float32),
      }
    nnx.replace_by_pure_dict(state, pure)
    return state

  def apply(self, params, x):
    return nnx.merge(self.graphdef, params)(x)

  @staticmethod
  def layers(params):
    return to_numpy_layers(nnx.to_pure_dict(params)["layers"])


class EqxFactorizedMLP(eqx.Module):
  layers: list
  activation: object  # a function leaf: removed by eqx.partition

  def __init__(self, sizes, key):
    keys = jax.random.split(key, len(sizes) - 1)
    self.layers = [
        eqx.nn.Linear(a, b, key=k)
        for a, b, k in zip(sizes[:-1], sizes[1:], keys)
    ]
    self.activation = jax.nn.relu

  def __call__(self, x):
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i in RELU_AFTER:
        x = self.activation(x)
    return x


class Equinox:
  name = "equinox"

  def __init__(self):
    sizes = [IN] + [WIDTH] * (NUM_LAYERS - 1) + [OUT]
    model = EqxFactorizedMLP(sizes, jax.random.key(1))
    self.template, self.static = eqx.partition(model, eqx.is_array)
    self.pairs = [
        (f"layers/{i}", f"layers/{i + 1}") for i in range(0, NUM_LAYERS, 2)
    ]

  def load(self, layers):
    """Params (``eqx.partition``-ed module) with weights ``(out, in)``."""
    return eqx.tree_at(
        lambda m: [l.weight for l in m.layers] + [l.bias for l in m.layers],
        self.template,
        [jnp.asarray(k.T, jnp.float32) for k, _ in layers]
        + [jnp.asarray(b, jnp.float32) for _, b in layers],
    )

  def apply(self, params, x):
    return jax.vmap(eqx.combine(params, self.static))(x)

  @staticmethod
  def layers(params):
    return [
        (np.asarray(l.weight, np.float64).T, np.asarray(l.bias, np.float64))
        for l in params.layers
    ]


def haiku_fn(widths):
  """A ``hk.transform`` of ``hk.Linear`` layers; ``widths`` the hidden sizes."""

  class HkFactorizedMLP(hk.Module):

    def __init__(self, name=None):
      super().__init__(name=name)
      # Submodules made in __init__ are named "factorized_mlp/~/linear_i".
      self.layers = [
          hk.Linear(n, name=f"linear_{i}")
          for i, n in enumerate(list(widths) + [OUT])
      ]

    def __call__(self, x):
      for i, layer in enumerate(self.layers):
        x = layer(x)
        if i in RELU_AFTER:
          x = jax.nn.relu(x)
      return x

  return hk.without_apply_rng(
      hk.transform(lambda x: HkFactorizedMLP(name=HK_NAME)(x))
  )


def hk_layer(i):
  return f"{HK_NAME}/~/linear_{i}"


class Haiku:
  name = "haiku"

  def __init__(self):
    self.fn = haiku_fn([WIDTH] * (NUM_LAYERS - 1))
    shapes = jax.eval_shape(self.fn.init, jax.random.key(2), jnp.zeros((1, IN)))
    assert sorted(shapes) == sorted(hk_layer(i) for i in range(NUM_LAYERS))
    self.pairs = [
        (hk_layer(i), hk_layer(i + 1)) for i in range(0, NUM_LAYERS, 2)
    ]

  def load(self, layers):
    params = {
        hk_layer(i): {
            "w": jnp.asarray(k, jnp.float32),
            "b": jnp.asarray(b, jnp.float32),
        }
        for i, (k, b) in enumerate(layers)
    }
    return params

  def apply(self, params, x):
    return self.fn.apply(params, x)

  @staticmethod
  def layers(params):
    return [
        (
            np.asarray(params[hk_layer(i)]["w"], np.float64),
            np.asarray(params[hk_layer(i)]["b"], np.float64),
        )
        for i in range(NUM_LAYERS)
    ]


FRAMEWORKS = (Flax, Equinox, Haiku)


_INITIAL = []


def initial_layers():
  """The Flax model's initial weights (built once)."""
  if not _INITIAL:
    _INITIAL.append(Flax.layers(nnx.split(flax_model(), nnx.Param)[1]))
  return [(k.copy(), b.copy()) for k, b in _INITIAL[0]]


_BUILT = {}


def build(cls):
  """The network (same initial weights in every framework) and its spec."""
  if cls not in _BUILT:
    _BUILT[cls] = _build(cls)
  return _BUILT[cls]


def _build(cls):
  net = cls()
  net.params = net.load(initial_layers())
  spec = ppx.UnitSpec.from_pairs(net.params, net.pairs, layout="auto")
  # Same weights: the three forward passes agree before training.
  x, _ = data()
  want = ref.forward(
      as_ref_dict(initial_layers()),
      [f"l{i}" for i in range(NUM_LAYERS)],
      x,
      RELU_AFTER,
  )
  np.testing.assert_allclose(
      net.apply(net.params, x), want, rtol=1e-5, atol=1e-6
  )
  return net, spec


# ------------------------------------------------------------------ training
def make_tx(kind, spec):
  if kind == "plain":
    return ppx.pathprox(LR, LAM, spec)
  if kind == "momentum":
    return ppx.pathprox(LR, LAM, spec, momentum=MOMENTUM)
  if kind == "no_balance":
    return ppx.pathprox(LR, LAM, spec, balance=False)
  if kind == "adaptive":
    return ppx.adaptive_pathprox(1e-2, 3e-3, spec)
  raise ValueError(kind)


def train(cls, kind):
  """Returns the network, its spec, the final params and the per-step params
  (Flax layout, NumPy float64; entry 0 is the normalised initial state)."""
  net, spec = build(cls)
  x, y = data()
  tx = make_tx(kind, spec)

  @jax.jit
  def run(params):
    params = ppx.normalize_units(params, spec)

    def step(carry, _):
      params, state = carry
      grads = jax.grad(lambda p: mse(net.apply(p, x), y))(params)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      return (params, state), params

    (last, _), stacked = jax.lax.scan(
        step, (params, tx.init(params)), None, length=STEPS
    )
    return params, last, stacked

  first, last, stacked = run(net.params)
  first, stacked = jax.device_get((first, stacked))
  traj = [net.layers(first)] + [
      net.layers(jax.tree.map(lambda a, t=t: a[t], stacked))
      for t in range(STEPS)
  ]
  return net, spec, last, traj


def rel(a, b):
  den = np.linalg.norm(b)
  return np.linalg.norm(a - b) / den if den > 0 else np.linalg.norm(a)


def max_rel(layers_a, layers_b):
  return max(
      max(rel(ka, kb), rel(ba, bb))
      for (ka, ba), (kb, bb) in zip(layers_a, layers_b)
  )


def alive(layers):
  """Live units per group: ``v_i != 0`` (row ``i`` of the group's output kernel)."""
  return tuple(
      int(np.sum(np.linalg.norm(layers[2 * g + 1][0], axis=1) > 0))
      for g in range(DEPTH)
  )


_CACHE = {}


def trajectory(cls, kind):
  key = (cls.name, kind)
  if key not in _CACHE:
    _CACHE[key] = train(cls, kind)
  return _CACHE[key]


# ------------------------------------------------------------ NumPy reference
def np_forward_grads(layers, x, y):
  """MSE loss gradients of the factorized MLP by hand (float64)."""
  h = [np.asarray(x, np.float64)]
  pre = []
  for i, (k, b) in enumerate(layers):
    z = h[-1] @ k + b
    pre.append(z)
    h.append(np.maximum(z, 0.0) if i in RELU_AFTER else z)
  out = h[-1]
  delta = 2.0 * (out - np.asarray(y, np.float64)) / out.size
  grads = [None] * len(layers)
  for i in reversed(range(len(layers))):
    if i in RELU_AFTER:
      delta = delta * (pre[i] > 0)
    grads[i] = (h[i].T @ delta, delta.sum(0))
    delta = delta @ layers[i][0].T
  return grads


def as_ref_dict(layers):
  return {f"l{i}": {"kernel": k, "bias": b} for i, (k, b) in enumerate(layers)}


def from_ref_dict(d):
  return [(d[f"l{i}"]["kernel"], d[f"l{i}"]["bias"]) for i in range(NUM_LAYERS)]


REF_PAIRS = [(f"l{i}", f"l{i + 1}") for i in range(0, NUM_LAYERS, 2)]


@pytest.mark.parametrize("kind", ["plain", "no_balance", "momentum"])
def test_flax_trajectory_matches_numpy_reference(kind):
  """Every step of the jitted Flax run equals one NumPy PathProx step
  (SGD or SGD with momentum, balancing walk, projection, soft threshold)
  taken from the same params."""
  _, _, _, traj = trajectory(Flax, kind)
  x, y = data()
  trace = None
  worst = 0.0
  for t in range(STEPS):
    grads = np_forward_grads(traj[t], x, y)
    if kind == "momentum":  # optax.trace: m <- g + mu m, update -lr m
      trace = (
          grads
          if trace is None
          else [
              (gk + MOMENTUM * mk, gb + MOMENTUM * mb)
              for (gk, gb), (mk, mb) in zip(grads, trace)
          ]
      )
      grads = trace
    new = ref.pathprox_step(
        as_ref_dict(traj[t]),
        as_ref_dict(grads),
        REF_PAIRS,
        LR,
        LAM,
        balance=kind != "no_balance",
    )
    worst = max(worst, max_rel(traj[t + 1], from_ref_dict(new)))
    # Same pruning decisions, exactly.
    assert alive(traj[t + 1]) == alive(from_ref_dict(new)), t
  assert worst <= 1e-5, worst


@pytest.mark.parametrize(
    "kind", ["plain", "momentum", "no_balance", "adaptive"]
)
@pytest.mark.parametrize("cls", [Equinox, Haiku], ids=lambda c: c.name)
def test_same_trajectory_as_flax(cls, kind):
  _, _, _, flax_traj = trajectory(Flax, kind)
  _, spec, _, traj = trajectory(cls, kind)
  assert spec.num_units == (WIDTH,) * DEPTH
  per_step = [max_rel(a, b) for a, b in zip(traj, flax_traj)]
  tol = float32_tolerance(STEPS)  # 80 ulps = 9.5e-6 for 20 steps
  assert max(per_step) <= tol, (kind, cls.name, tol, per_step)
  # The runs are not trivial: the parameters moved and units were pruned
  # (the last state has fewer live units than the first).
  assert max_rel(flax_traj[-1], flax_traj[0]) > 1e-2
  assert 0 < sum(alive(flax_traj[-1])) < DEPTH * WIDTH, alive(flax_traj[-1])
  assert [alive(l) for l in traj] == [alive(l) for l in flax_traj]


def test_trajectory_comparison_is_sensitive():
  """Negative control: the per-step comparison tells balancing on from off,
  so the float32_tolerance(STEPS) agreement above is not vacuous."""
  _, _, _, a = trajectory(Flax, "plain")
  _, _, _, b = trajectory(Equinox, "no_balance")
  assert max_rel(a[0], b[0]) <= float32_tolerance(1)  # same start
  assert max(max_rel(x, y) for x, y in zip(a, b)) > 1e-3
  assert 1e-3 > 100 * float32_tolerance(STEPS)


def test_normalize_units_matches_numpy():
  """Entry 0 of every trajectory is ``normalize_units`` of the initial
  weights: w_i, b_i divided by ||w_i||, v_i multiplied by it."""
  layers = initial_layers()
  for g in range(DEPTH):
    (k, b), (k2, _) = layers[2 * g], layers[2 * g + 1]
    for i in range(k.shape[1]):
      n = np.linalg.norm(k[:, i])
      k[:, i] /= n
      b[i] /= n
      k2[i, :] *= n
  for cls in FRAMEWORKS:
    first = trajectory(cls, "plain")[3][0]  # one float32 rescaling
    assert max_rel(first, layers) <= float32_tolerance(1), cls.name


def test_pruning_happens_and_groups_balance():
  """LAM is large enough that each group loses units within STEPS steps but
  keeps some; balancing makes the three group path norms equal."""
  _, spec, params, traj = trajectory(Flax, "plain")
  counts = alive(traj[-1])
  assert all(0 < c < WIDTH for c in counts), counts
  # Balancing equalises the group path norms before each shrink, so they
  # stay close; without it they drift apart (by 12x in this run).
  p = np.asarray(ppx.path_norms(params, spec))
  assert p.max() / p.min() < 1.1, p
  _, _, unbalanced, _ = trajectory(Flax, "no_balance")
  q = np.asarray(ppx.path_norms(unbalanced, spec))
  assert q.max() / q.min() > 2, q


# ------------------------------------------------------------- spec errors
def test_wrong_layout_name_raises():
  eq, _ = build(Equinox)
  hkn, _ = build(Haiku)
  fl, _ = build(Flax)
  with pytest.raises(ValueError, match=r"Unknown layout 'torch'.*'equinox'"):
    ppx.UnitSpec.from_pairs(fl.params, fl.pairs, layout="torch")
  with pytest.raises(ValueError, match=r"'layers/0' has no 'kernel' leaf"):
    ppx.UnitSpec.from_pairs(eq.params, eq.pairs, layout="flax")
  with pytest.raises(ValueError, match=r"has no 'weight' leaf"):
    ppx.UnitSpec.from_pairs(hkn.params, hkn.pairs, layout="equinox")
  with pytest.raises(ValueError, match=r"has no 'w' leaf"):
    ppx.UnitSpec.from_pairs(fl.params, fl.pairs, layout="haiku")
  # The right names work.
  assert (
      ppx.UnitSpec.from_pairs(eq.params, eq.pairs, layout="equinox").num_units
      == (WIDTH,) * 3
  )
  assert (
      ppx.UnitSpec.from_pairs(hkn.params, hkn.pairs, layout="haiku").num_units
      == (WIDTH,) * 3
  )


def test_mixed_layouts_under_auto_raise():
  layers = initial_layers()
  mixed = {
      "a": {"kernel": jnp.asarray(layers[0][0], jnp.float32)},
      "b": {"weight": jnp.asarray(layers[1][0].T, jnp.float32)},
  }
  with pytest.raises(ValueError, match="different layouts"):
    ppx.UnitSpec.from_pairs(mixed, [("a", "b")])
  # Mixed across pairs too (a Flax pair and a Haiku pair).
  mixed2 = {
      "a": {"kernel": jnp.ones((3, 4))},
      "b": {"kernel": jnp.ones((4, 2))},
      "c": {"w": jnp.ones((2, 4))},
      "d": {"w": jnp.ones((4, 2))},
  }
  with pytest.raises(ValueError, match="different layouts"):
    ppx.UnitSpec.from_pairs(mixed2, [("a", "b"), ("c", "d")])
  # A layer holding two kernel names is ambiguous.
  both = {
      "a": {"kernel": jnp.ones((3, 4)), "w": jnp.ones((3, 4))},
      "b": {"kernel": jnp.ones((4, 2))},
  }
  with pytest.raises(ValueError, match="several kernel leaf"):
    ppx.UnitSpec.from_pairs(both, [("a", "b")])


def test_equinox_spec_uses_out_in_axes():
  """Non-square layers: the Equinox spec puts units on axis 0 of the input
  weight (out, in) and axis 1 of the output weight."""
  net, spec = build(Equinox)
  g0 = spec.groups[0]
  assert (g0.inputs[0].path, g0.inputs[0].axis) == ("layers/0/weight", 0)
  assert (g0.outputs[0].path, g0.outputs[0].axis) == ("layers/1/weight", 1)
  assert g0.outputs[0].bias == "layers/1/bias"
  assert g0.biases[0].path == "layers/0/bias"
  hkn, hspec = build(Haiku)
  assert hspec.groups[2].outputs[0].path == f"{HK_NAME}/~/linear_5/w"
  assert hspec.groups[2].outputs[0].bias == f"{HK_NAME}/~/linear_5/b"
  # unit norms agree across layouts (first layer 12 -> 16 is not square)
  fl, fspec = build(Flax)
  for a, b, c in zip(
      spec.split(net.params)[0],
      fspec.split(fl.params)[0],
      hspec.split(hkn.params)[0],
  ):
    na, nb, nc = (jax.jit(ppx.prox.unit_norms)(g) for g in (a, b, c))
    np.testing.assert_allclose(na[0], nb[0], rtol=1e-6)
    np.testing.assert_allclose(na[1], nb[1], rtol=1e-6)
    np.testing.assert_allclose(nc[0], nb[0], rtol=1e-6)
    np.testing.assert_allclose(nc[1], nb[1], rtol=1e-6)


# ---------------------------------------------------------------- compact
def _kill_constant_unit(layers):
  """The first live unit of group 0 gets w = 0 and a positive bias: a
  constant relu(b) v that compaction must fold into layer 1's bias."""
  layers = [(k.copy(), b.copy()) for k, b in layers]
  i = int(np.flatnonzero(np.linalg.norm(layers[1][0], axis=1) > 0)[0])
  layers[0][0][:, i] = 0.0
  layers[0][1][i] = 0.7
  return layers


@pytest.mark.parametrize("cls", [Flax, Equinox, Haiku], ids=lambda c: c.name)
def test_compact_after_pruning_keeps_outputs(cls):
  net, spec, params, traj = trajectory(cls, "plain")
  # Add a constant unit (w = 0, relu(b) > 0) so that a bias gets folded.
  layers = _kill_constant_unit(traj[-1])
  params = net.load(layers)
  x, _ = data()
  names = [f"l{i}" for i in range(NUM_LAYERS)]
  before = np.asarray(net.apply(params, x), np.float64)
  before64 = ref.forward(as_ref_dict(cls.layers(params)), names, x, RELU_AFTER)
  small, small_spec = ppx.compact(params, spec)
  # v = 0 units go, and so does the constant unit (folded).
  want = tuple(c - (g == 0) for g, c in enumerate(alive(layers)))
  assert small_spec.num_units == want
  assert sum(want) < DEPTH * WIDTH
  if cls is Haiku:
    hidden = [n for g in want for n in (g, WIDTH)][:-1]
    after = haiku_fn(hidden).apply(small, x)
  else:
    after = net.apply(small, x)
  after = np.asarray(after, np.float64)
  assert after.shape == before.shape
  # the framework's own float32 forward pass of the compact params ...
  assert rel(after, before) <= 1e-5, rel(after, before)
  # ... and the float64 NumPy forward pass of both (compact folds in float64)
  small_layers = cls.layers(small)
  after64 = ref.forward(as_ref_dict(small_layers), names, x, RELU_AFTER)
  assert rel(after64, before64) <= 1e-6, rel(after64, before64)
  # Shapes: back in the Flax layout, layer 2g is (in, n_g), layer 2g+1 (n_g, out).
  for g, n in enumerate(want):
    assert small_layers[2 * g][0].shape[1] == n
    assert small_layers[2 * g][1].shape == (n,)
    assert small_layers[2 * g + 1][0].shape[0] == n
  # The constant was folded into the next layer's bias.
  assert rel(small_layers[1][1], layers[1][1]) > 0
  # The compact spec validates and PathProx can continue on it.
  tx = ppx.pathprox(LR, LAM, small_spec)
  u, _ = jax.jit(tx.update)(
      jax.tree.map(jnp.zeros_like, small), tx.init(small), small
  )
  assert jax.tree.structure(u) == jax.tree.structure(small)
