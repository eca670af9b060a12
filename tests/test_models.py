"""pathprox_jax.models: MLP, FactorizedMLP, VGG19, Transformer: architecture, unit pairing, initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pathprox_jax import MLP, VGG19, FactorizedMLP
from tests import reference


def numpy_params(model):
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {
      f"layers/{i}": {k: np.asarray(v, np.float64) for k, v in d.items()}
      for i, d in pure["layers"].items()
  }


def test_mlp_structure_and_pairs():
  m = MLP(depth=5, width=7, in_features=4, num_classes=3, rngs=nnx.Rngs(0))
  spec = m.unit_spec()
  assert m.unit_pairs() == [("layers/0", "layers/1"), ("layers/2", "layers/3")]
  assert [g.inputs[0].path for g in spec.groups] == [
      "layers/0/kernel",
      "layers/2/kernel",
  ]
  assert [g.outputs[0].bias for g in spec.groups] == [
      "layers/1/bias",
      "layers/3/bias",
  ]
  assert spec.ungrouped_kernels == ("layers/4/kernel",)
  assert spec.num_units == (7, 7)
  x = np.random.default_rng(0).normal(size=(6, 4))
  exp = reference.forward(
      numpy_params(m),
      [f"layers/{i}" for i in range(5)],
      x,
      relu_after={0, 1, 2, 3},
  )
  np.testing.assert_allclose(
      m(jnp.asarray(x, jnp.float32)), exp, rtol=1e-5, atol=1e-6
  )


def test_factorized_mlp_task1_shape_and_relu_placement():
  m = FactorizedMLP(depth=3, width=400, rngs=nnx.Rngs(0))
  shapes = [l.kernel.shape for l in m.layers]
  assert shapes == [
      (784, 400),
      (400, 400),
      (400, 400),
      (400, 400),
      (400, 400),
      (400, 10),
  ]
  assert m.unit_spec().num_units == (400, 400, 400)
  small = FactorizedMLP(
      depth=2, width=[5, 4, 6], in_features=3, num_classes=2, rngs=nnx.Rngs(1)
  )
  x = np.random.default_rng(1).normal(size=(4, 3))
  exp = reference.forward(
      numpy_params(small),
      [f"layers/{i}" for i in range(4)],
      x,
      relu_after={0, 2},
  )
  np.testing.assert_allclose(
      small(jnp.asarray(x, jnp.float32)), exp, rtol=1e-5, atol=1e-6
  )
  assert small.unit_spec().num_units == (5, 6)


def test_pytorch_init_bounds():
  m = MLP(depth=2, width=300, in_features=100, num_classes=10, rngs=nnx.Rngs(0))
  for layer, fan_in in ((m.layers[0], 100), (m.layers[1], 300)):
    k, b = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
    assert np.abs(b).max() <= bound and np.abs(b).std() > 0
    np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.05)
  f = MLP(depth=2, width=8, in_features=4, init="flax", rngs=nnx.Rngs(0))
  assert np.all(np.asarray(f.layers[0].bias[...]) == 0)
  with pytest.raises(ValueError, match="Unknown init"):
    MLP(depth=2, width=8, init="xavier", rngs=nnx.Rngs(0))


def test_vgg19_smoke_and_units():
  m = VGG19(width_multiplier=1 / 16, rngs=nnx.Rngs(0))
  assert len(m.convs) == 16
  assert m.channels == (
      4,
      4,
      8,
      8,
      16,
      16,
      16,
      16,
      32,
      32,
      32,
      32,
      32,
      32,
      32,
      32,
  )
  spec = m.unit_spec()
  assert len(spec.groups) == 8
  assert spec.num_units == (4, 8, 16, 16, 32, 32, 32, 32)
  assert spec.role(("classifier", "kernel")) == "ungrouped_kernel"
  out = jax.jit(lambda x: m(x))(jnp.ones((2, 32, 32, 3)))
  assert out.shape == (2, 10) and np.all(np.isfinite(out))
  conv0 = np.asarray(m.convs[0].kernel[...])
  np.testing.assert_allclose(conv0.std(), np.sqrt(2 / (9 * 4)), rtol=0.3)
  c = VGG19(channels=[3] * 16, num_classes=5, rngs=nnx.Rngs(0))
  assert c(jnp.ones((1, 32, 32, 3))).shape == (1, 5)


def test_transformer_ffn_groups_are_never_linked():
  """A transformer's FFN groups are separated by residual adds: layer-wise
  balancing must not pass a scale between them."""
  from pathprox_jax import Transformer  # noqa: PLC0415

  model = Transformer(64, 16, 3, 4, 32, 16, rngs=nnx.Rngs(0))
  spec = model.unit_spec()
  assert spec.num_units == (32, 32, 32)
  assert spec.links == (False, False)
  # the attention and head kernels are in no group (ordinary weight decay)
  assert set(spec.ungrouped_kernels) == {
      f"blocks/{b}/{k}/kernel" for b in range(3) for k in ("qkv", "proj")
  } | {"head/kernel"}
