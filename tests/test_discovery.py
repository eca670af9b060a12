"""ppx.discover on real models: the groups found, the reasons given, and
numerical proof that every group found is homogeneous and that balancing is
allowed only where it preserves the function."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pathprox_jax as ppx
from pathprox_jax import Slice, UnitGroup, UnitSpec


def _key(i):
  return jax.random.key(i)


def _randomise(params, seed=0):
  """Random params with very different scales per leaf, so that a wrong spec
  or an inexact balancing shows up in the outputs."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(_key(seed), len(leaves))
  scales = np.exp(np.random.default_rng(seed).uniform(-1, 1, len(leaves)))
  return jax.tree.unflatten(
      treedef,
      [
          s * jax.random.normal(k, jnp.shape(x), jnp.float32)
          for x, k, s in zip(leaves, keys, scales)
      ],
  )


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def assert_homogeneous_and_balanceable(fn, params, spec, *inputs):
  """Every group's rescaling and balance_layers keep fn's outputs."""
  changes = ppx.verify_units(fn, params, spec, *inputs, rtol=1e-5)
  assert set(changes) == {f"group {g}" for g in range(len(spec.groups))} | {
      "balance_layers"
  }


def nnx_fn(model):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return (lambda p, *xs: nnx.merge(graphdef, p, rest, copy=True)(*xs)), params


# ------------------------------------------------------------ bundled models
BUNDLED = {
    "mlp3": (
        lambda: ppx.MLP(3, 8, in_features=5, num_classes=3, rngs=nnx.Rngs(0)),
        (1, 5),
    ),
    "mlp6": (
        lambda: ppx.MLP(6, 8, in_features=5, num_classes=3, rngs=nnx.Rngs(0)),
        (1, 5),
    ),
    "factorized": (
        lambda: ppx.FactorizedMLP(
            3, 8, in_features=5, num_classes=3, rngs=nnx.Rngs(0)
        ),
        (1, 5),
    ),
    "vgg19": (
        lambda: ppx.VGG19(width_multiplier=1 / 16, rngs=nnx.Rngs(0)),
        (1, 32, 32, 3),
    ),
    "resnet18": (
        lambda: ppx.ResNet(width_multiplier=1 / 16, rngs=nnx.Rngs(0)),
        (2, 32, 32, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_discover_their_own_spec(name):
  make, shape = BUNDLED[name]
  model = make()
  spec = ppx.discover_module(model, jnp.zeros(shape))
  assert spec == model.unit_spec()
  assert spec.links_checked and not model.unit_spec().links_checked
  fn, params = nnx_fn(model)
  x = jax.random.normal(_key(1), shape)
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)


def test_chains_are_linked_and_resnet_blocks_are_not():
  vgg = ppx.discover_module(BUNDLED["vgg19"][0](), jnp.zeros((1, 32, 32, 3)))
  assert vgg.links == (True,) * 7
  resnet = ppx.discover_module(
      BUNDLED["resnet18"][0](), jnp.zeros((1, 32, 32, 3))
  )
  assert resnet.links == (False,) * 7
  # The units of a basic block are bn1's channels: (scale, bias) -> conv2.
  g = resnet.groups[0]
  assert [s.path for s in g.inputs] == ["blocks/0/bn1/scale"]
  assert [s.path for s in g.biases] == ["blocks/0/bn1/bias"]
  assert [s.path for s in g.outputs] == ["blocks/0/conv2/kernel"]
  reasons = {f.path: f.reason for f in resnet.findings}
  assert "residual" in reasons["blocks/0/bn2/scale"]
  assert "normalisation" in reasons["blocks/0/conv1/kernel"]  # train-mode BN


def test_resnet_eval_mode_finds_the_same_units():
  model = BUNDLED["resnet18"][0]()
  model.eval()
  assert (
      ppx.discover_module(model, jnp.zeros((1, 32, 32, 3))) == model.unit_spec()
  )


def test_transformer_ffn_units_found_attention_and_norms_reported():
  model = ppx.Transformer(
      vocab=16, dim=8, depth=2, heads=2, ffn=12, max_len=6, rngs=nnx.Rngs(0)
  )
  tokens = jnp.zeros((1, 6), jnp.int32)
  spec = ppx.discover_module(model, tokens)
  assert spec == model.unit_spec()
  assert spec.links == (False,)
  reasons = {f.path: f.reason for f in spec.findings}
  assert "attention" in reasons["blocks/0/qkv/kernel"]
  assert "no activation" in reasons["blocks/0/ln2/scale"]
  assert "residual" in reasons["blocks/0/proj/kernel"]
  fn, params = nnx_fn(model)
  toks = jax.random.randint(_key(2), (2, 6), 0, 16)
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, toks)
  text = spec.report()
  assert "blocks/0/qkv/kernel" in text and "not exact" in text


# -------------------------------------------------------------- frameworks
def test_linen_cnn_with_flatten_dense():
  class CNN(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
      x = nn.relu(nn.Conv(6, (3, 3))(x))
      x = x.reshape(x.shape[0], -1)
      x = nn.relu(nn.Dense(16)(x))
      return nn.Dense(10)(x)

  model = CNN()
  params = model.init(_key(0), jnp.zeros((1, 8, 8, 1)))
  spec = ppx.discover(model.apply, params, jnp.zeros((1, 8, 8, 1)))
  assert spec == UnitSpec.from_pairs(
      params,
      [
          ("params/Conv_0", "params/Conv_1"),
          ("params/Dense_0", "params/Dense_1"),
      ],
  )
  x = jax.random.normal(_key(1), (3, 8, 8, 1))
  assert_homogeneous_and_balanceable(model.apply, _randomise(params), spec, x)


class FlattenCNN(nnx.Module):
  """conv -> relu -> flatten (channels last) -> dense: the dense kernel's
  rows c, C + c, ... belong to channel c."""

  def __init__(self, channels_first: bool = False, *, rngs):
    self.conv = nnx.Conv(2, 5, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(5 * 4 * 4, 3, rngs=rngs)
    self.channels_first = channels_first

  def __call__(self, x):
    h = nnx.relu(self.conv(x))
    if self.channels_first:
      h = jnp.transpose(h, (0, 3, 1, 2))
    return self.fc(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("channels_first", [False, True])
def test_nnx_cnn_dense_after_flatten_is_one_unit_per_channel(channels_first):
  model = FlattenCNN(channels_first, rngs=nnx.Rngs(0))
  spec = ppx.discover_module(model, jnp.zeros((1, 4, 4, 2)))
  (g,) = spec.groups
  assert g.num_units == 5
  (out,) = g.outputs
  assert out.path == "fc/kernel" and out.shape == (80, 3)
  assert (out.view, out.axis) == (
      ((5, 16, 3), 0) if channels_first else ((16, 5, 3), 1)
  )
  assert out.bias == "fc/bias" and out.conv is False
  fn, params = nnx_fn(model)
  x = jax.random.normal(_key(1), (3, 4, 4, 2))
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)
  # The flattened rows really are the channel's: compaction keeps outputs.
  params = _randomise(params)
  keep = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])  # the one group's units
  params = spec.map_groups(params, lambda x: ppx.units.scale_units(x, v=keep))
  small, small_spec = ppx.compact(params, spec)
  assert small_spec.num_units == (3,) and small["fc"]["kernel"].shape == (48, 3)
  model_small = ppx.rebuild(model, small)
  assert _rel(fn(params, x), model_small(x)) < 1e-6


def test_equinox_mlp_under_vmap():
  eqx = pytest.importorskip("equinox")
  model = eqx.nn.MLP(4, 3, 8, 3, key=_key(0))
  params, static = eqx.partition(model, eqx.is_array)

  def fn(p, x):
    return jax.vmap(eqx.combine(p, static))(x)

  spec = ppx.discover(fn, params, jnp.zeros((1, 4)))
  assert spec == UnitSpec.from_pairs(
      params,
      [("layers/0", "layers/1"), ("layers/2", "layers/3")],
      layout="equinox",
  )
  assert spec.links == (True,)
  x = jax.random.normal(_key(1), (5, 4))
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)


def test_haiku_mlp():
  hk = pytest.importorskip("haiku")
  net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([8, 8, 3])(x)))
  params = net.init(_key(0), jnp.zeros((1, 4)))
  spec = ppx.discover(net.apply, params, jnp.zeros((1, 4)))
  assert spec == UnitSpec.from_pairs(
      params, [("mlp/~/linear_0", "mlp/~/linear_1")]
  )
  x = jax.random.normal(_key(1), (5, 4))
  assert_homogeneous_and_balanceable(net.apply, _randomise(params), spec, x)


# ----------------------------------------------------------- hand-made fns
def test_gelu_is_rejected_with_its_reason():
  params = {"a": jnp.ones((3, 5)), "b": jnp.ones((5, 5)), "c": jnp.ones((5, 2))}

  def fn(p, x):
    return jax.nn.relu(jax.nn.gelu(x @ p["a"]) @ p["b"]) @ p["c"]

  spec = ppx.discover(fn, params, jnp.zeros((1, 3)))
  assert [g.describe() for g in spec.groups] == ["b -> c"]
  reasons = {f.path: f.reason for f in spec.findings}
  assert "GELU" in reasons["a"]


@pytest.mark.parametrize(
    "act, word",
    [
        (jnp.tanh, "tanh"),
        (jax.nn.sigmoid, "sigmoid"),
        (jax.nn.silu, "sigmoid"),
        (jax.nn.relu6, "ReLU6"),
    ],
)
def test_other_non_homogeneous_activations(act, word):
  params = {"a": jnp.ones((3, 5)), "c": jnp.ones((5, 2))}
  with pytest.raises(ValueError, match=word):
    ppx.discover(
        lambda p, x: act(x @ p["a"]) @ p["c"], params, jnp.zeros((1, 3))
    )


def test_leaky_relu_however_written_and_pooling():
  params = {
      "a": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
      "b": {"kernel": jnp.ones((4, 2))},
  }
  acts = [
      jax.nn.leaky_relu,
      lambda z: jnp.maximum(z, 0.1 * z),
      lambda z: jnp.where(z > 0, z, 0.2 * z),
      jax.nn.relu,
      lambda z: jnp.maximum(z, 0.0),
  ]
  for act in acts:

    def fn(p, x, act=act):
      h = act(x @ p["a"]["kernel"] + p["a"]["bias"])
      return h @ p["b"]["kernel"]

    spec = ppx.discover(fn, params, jnp.zeros((1, 3)))
    assert spec == UnitSpec.from_pairs(params, [("a", "b")])
    assert_homogeneous_and_balanceable(
        fn, _randomise(params), spec, jax.random.normal(_key(1), (4, 3))
    )


def residual_fn(p, x):
  for i in range(2):
    x = (
        x
        + jax.nn.relu(x @ p[f"up{i}"]["kernel"] + p[f"up{i}"]["bias"])
        @ p[f"down{i}"]["kernel"]
    )
  return x @ p["head"]


RESIDUAL_PARAMS = {
    **{
        f"up{i}": {"kernel": jnp.ones((4, 6)), "bias": jnp.ones(6)}
        for i in range(2)
    },
    **{f"down{i}": {"kernel": jnp.ones((6, 4))} for i in range(2)},
    "head": jnp.ones((4, 2)),
}


def test_residual_blocks_units_found_balancing_refused():
  spec = ppx.discover(residual_fn, RESIDUAL_PARAMS, jnp.zeros((1, 4)))
  assert [g.describe() for g in spec.groups] == ["up0 -> down0", "up1 -> down1"]
  assert spec.links == (False,)
  params = _randomise(RESIDUAL_PARAMS)
  x = jax.random.normal(_key(1), (5, 4))
  assert_homogeneous_and_balanceable(residual_fn, params, spec, x)
  # The same groups hand-built assume a chain, and balancing them is wrong:
  hand = UnitSpec.from_pairs(params, [("up0", "down0"), ("up1", "down1")])
  assert hand.links == (True,)
  with pytest.raises(ValueError, match="balance_layers changes the outputs"):
    ppx.verify_units(residual_fn, params, hand, x)
  # ... and one pathprox step at lambda = 0 with zero gradients, from
  # normalised units, keeps the function only with the discovered links.
  params = ppx.normalize_units(params, spec)
  for units, exact in ((spec, True), (hand, False)):
    tx = ppx.pathprox(0.1, 0.0, units)
    u, _ = tx.update(
        jax.tree.map(jnp.zeros_like, params), tx.init(params), params
    )
    change = _rel(
        residual_fn(params, x), residual_fn(jax.tree.map(jnp.add, params, u), x)
    )
    assert (change < 1e-5) == exact, change


def test_branching_hidden_layer_feeding_two_heads():
  params = {
      "trunk": {"kernel": jnp.ones((3, 5)), "bias": jnp.ones(5)},
      "a": {"kernel": jnp.ones((5, 2)), "bias": jnp.ones(2)},
      "b": {"kernel": jnp.ones((5, 3))},
  }

  def fn(p, x):
    h = jax.nn.relu(x @ p["trunk"]["kernel"] + p["trunk"]["bias"])
    return jnp.concatenate(
        [h @ p["a"]["kernel"] + p["a"]["bias"], h @ p["b"]["kernel"]], -1
    )

  spec = ppx.discover(fn, params, jnp.zeros((1, 3)))
  assert spec == UnitSpec.from_groups(
      params,
      [
          UnitGroup(
              inputs=[("trunk/kernel", 1)],
              biases=["trunk/bias"],
              outputs=[
                  Slice("a/kernel", 0, bias="a/bias"),
                  Slice("b/kernel", 0),
              ],
          )
      ],
  )
  assert_homogeneous_and_balanceable(
      fn, _randomise(params), spec, jax.random.normal(_key(1), (4, 3))
  )


def test_summed_pre_activation_and_skip_of_the_hidden_output():
  params = {
      "a1": jnp.ones((3, 5)),
      "a2": jnp.ones((4, 5)),
      "b": jnp.ones(5),
      "v": jnp.ones((5, 5)),
  }

  def summed(p, x1, x2):
    return jax.nn.relu(x1 @ p["a1"] + x2 @ p["a2"] + p["b"]) @ p["v"]

  x1, x2 = jnp.zeros((1, 3)), jnp.zeros((1, 4))
  spec = ppx.discover(summed, params, x1, x2)
  (g,) = spec.groups
  assert [s.path for s in g.inputs] == ["a1", "a2"]
  assert [s.path for s in g.biases] == ["b"]
  assert_homogeneous_and_balanceable(
      summed,
      _randomise(params),
      spec,
      jax.random.normal(_key(1), (4, 3)),
      jax.random.normal(_key(2), (4, 4)),
  )

  def skipped(p, x1, x2):  # the hidden output is also used directly
    h = jax.nn.relu(x1 @ p["a1"] + x2 @ p["a2"] + p["b"])
    return h @ p["v"] + h

  with pytest.raises(ValueError, match="skip"):
    ppx.discover(skipped, params, x1, x2)


def test_weight_sharing_is_reported():
  params = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 2))}

  def fn(p, x):  # the same kernel applied twice
    return jax.nn.relu(jax.nn.relu(x @ p["a"]) @ p["a"]) @ p["b"]

  with pytest.raises(ValueError, match="weight sharing"):
    ppx.discover(fn, params, jnp.zeros((1, 4)))


def test_batchnorm_cnn_units_are_the_norm_channels():
  class BNCNN(nnx.Module):

    def __init__(self, rngs):
      self.c1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
      self.bn1 = nnx.BatchNorm(4, rngs=rngs)
      self.c2 = nnx.Conv(4, 5, (3, 3), rngs=rngs)

    def __call__(self, x):
      return jnp.mean(self.c2(nnx.relu(self.bn1(self.c1(x)))), axis=(1, 2))

  model = BNCNN(nnx.Rngs(0))
  spec = ppx.discover_module(model, jnp.zeros((2, 6, 6, 3)))
  (g,) = spec.groups
  assert [s.path for s in g.inputs] == ["bn1/scale"]
  assert [s.path for s in g.biases] == ["bn1/bias"]
  assert [(s.path, s.bias) for s in g.outputs] == [("c2/kernel", "c2/bias")]
  assert "c1/kernel" in spec.ungrouped_kernels
  fn, params = nnx_fn(model)
  x = jax.random.normal(_key(1), (4, 6, 6, 3))
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)


def test_jit_and_custom_jvp_are_seen_through():
  @jax.custom_jvp
  def my_relu(z):
    return jnp.maximum(z, 0.0)

  my_relu.defjvp(lambda p, t: (my_relu(p[0]), t[0] * (p[0] > 0)))
  params = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
  fn = jax.jit(lambda p, x: my_relu(x @ p["a"]) @ p["b"])
  spec = ppx.discover(fn, params, jnp.zeros((1, 3)))
  assert spec == UnitSpec.from_groups(
      params, [UnitGroup(inputs=[("a", 1)], outputs=[("b", 0)])]
  )


# -------------------------------------------------------------------- errors
def test_no_homogeneous_unit_names_every_candidate():
  params = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
  with pytest.raises(ValueError, match=r"no homogeneous unit.*'a'.*tanh.*'b'"):
    ppx.discover(
        lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"], params, jnp.zeros((1, 3))
    )


def test_params_or_inputs_that_do_not_match_fn():
  params = {"a": jnp.ones((3, 4)), "b": jnp.ones((4, 2))}
  fn = lambda p, x: jax.nn.relu(x @ p["a"]) @ p["b"]
  with pytest.raises(ValueError, match=r"could not trace.*\(1, 5\)"):
    ppx.discover(fn, params, jnp.zeros((1, 5)))
  with pytest.raises(ValueError, match="could not trace"):
    ppx.discover(fn, {"a": jnp.ones((3, 4))}, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="needs example inputs"):
    ppx.discover(fn, params)


def test_discovery_is_shape_only():
  # Abstract inputs are enough: no arrays are computed with.
  params = {
      "a": jax.ShapeDtypeStruct((3, 4), jnp.float32),
      "b": jax.ShapeDtypeStruct((4, 2), jnp.float32),
  }
  fn = lambda p, x: jax.nn.relu(x @ p["a"]) @ p["b"]
  spec = ppx.discover(fn, params, jax.ShapeDtypeStruct((1, 3), jnp.float32))
  assert spec.num_units == (4,) and spec.links == ()


# ------------------------------------------- keys and non-array leaves (#20)
def test_nnx_dropout_in_train_mode_keys_are_opaque():
  class DropMLP(nnx.Module):

    def __init__(self, rngs):
      self.fc1 = nnx.Linear(4, 8, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
      self.fc2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
      return self.fc2(self.drop(nnx.relu(self.fc1(x))))

  model = DropMLP(nnx.Rngs(0))
  model.train()
  spec = ppx.discover_module(model, jnp.zeros((1, 4)))
  params = nnx.state(model, nnx.Param)
  assert spec == UnitSpec.from_pairs(params, [("fc1", "fc2")])
  fn, params = nnx_fn(model)
  x = jax.random.normal(_key(1), (16, 4))
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)


def test_closed_over_key_dropout_mask_is_a_constant():
  key = jax.random.key(0)  # a typed key constant of the jaxpr
  params = {"a": jnp.ones((3, 8)), "b": jnp.ones((8, 2))}

  def fn(p, x):
    mask = jax.random.bernoulli(key, 0.5, (x.shape[0], 8))
    return (jax.nn.relu(x @ p["a"]) * mask) @ p["b"]

  spec = ppx.discover(fn, params, jnp.zeros((16, 3)))
  group = UnitGroup(inputs=[("a", 1)], outputs=[("b", 0)])
  assert spec == UnitSpec.from_groups(params, [group])
  x = jax.random.normal(_key(1), (16, 3))
  assert_homogeneous_and_balanceable(fn, _randomise(params), spec, x)
  # A key passed as an input (or a key/integer leaf of params) is no unit.
  with_key = dict(params, key=key, step=jnp.array(3))
  spec = ppx.discover(
      lambda p, x, k: (
          jax.nn.relu(x @ p["a"]) * jax.random.bernoulli(k, 0.5, (16, 8))
      )
      @ p["b"],
      with_key,
      jnp.zeros((16, 3)),
      key,
  )
  assert spec.groups == UnitSpec.from_groups(params, [group]).groups


def test_equinox_module_as_params_non_array_leaves_are_closed_over():
  eqx = pytest.importorskip("equinox")
  mlp = eqx.nn.MLP(4, 2, 8, 2, key=_key(0))  # layers/0, layers/1, layers/2
  fn = lambda m, x: jax.vmap(m)(x)
  spec = ppx.discover(fn, mlp, jnp.zeros((1, 4)))
  # Groups are disjoint: layers/1 cannot also open the second group.
  assert spec == UnitSpec.from_pairs(mlp, [("layers/0", "layers/1")])
  assert "layers/2/weight" in spec.ungrouped_kernels
  weights, static = eqx.partition(mlp, eqx.is_inexact_array)
  arrays_only = ppx.discover(
      lambda w, x: jax.vmap(eqx.combine(w, static))(x),
      weights,
      jnp.zeros((1, 4)),
  )
  assert arrays_only.groups == spec.groups
  x = jax.random.normal(_key(1), (16, 4))
  # verify_units jits fn over params: it takes the array part.
  assert_homogeneous_and_balanceable(
      lambda w, x: jax.vmap(eqx.combine(w, static))(x), weights, spec, x
  )
