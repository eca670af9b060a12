"""A pre-LayerNorm decoder-only transformer with ReLU feed-forward blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pathprox_jax.units import UnitSpec


class TransformerBlock(nnx.Module):
  """``x + attn(ln1(x))``, then ``x + down(relu(up(ln2(x))))``; causal."""

  def __init__(self, dim: int, heads: int, ffn: int, *, rngs: nnx.Rngs):
    if dim % heads:
      raise ValueError(f"dim {dim} is not a multiple of heads {heads}.")
    self.heads = heads
    self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.proj = nnx.Linear(dim, dim, rngs=rngs)
    self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
    self.up = nnx.Linear(dim, ffn, rngs=rngs)
    self.down = nnx.Linear(ffn, dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
    split = lambda a: a.reshape(b, t, self.heads, d // self.heads)
    scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k)) / jnp.sqrt(
        d // self.heads
    )
    mask = jnp.tril(jnp.ones((t, t), bool))
    weights = jax.nn.softmax(jnp.where(mask, scores, -1e9), axis=-1)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, split(v)).reshape(b, t, d)
    x = x + self.proj(attended)
    return x + self.down(nnx.relu(self.up(self.ln2(x))))


class Transformer(nnx.Module):
  """Decoder-only language model: token and position embeddings, pre-LN
  blocks, final LayerNorm, linear head.

  Units are the hidden neurons of every feed-forward block (``up`` ->
  ReLU -> ``down``). Attention is not homogeneous in its query/key
  projections (softmax of their product) and its fused ``qkv`` kernel is
  shared with them, so it holds no unit; LayerNorm scales feed linear maps
  directly (no activation) and are not units; every block output reaches a
  residual add, so balancing never passes a scale between blocks.

  Args:
    vocab: vocabulary size (256 for bytes).
    dim: model width.
    depth: number of blocks.
    heads: attention heads.
    ffn: feed-forward hidden width.
    max_len: longest sequence (learned positions).
    rngs: ``nnx.Rngs``.

  Examples:
    >>> from flax import nnx
    >>> m = Transformer(vocab=16, dim=8, depth=2, heads=2, ffn=12, max_len=5,
    ...                 rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((1, 5), jnp.int32)).shape
    (1, 5, 16)
    >>> m.unit_spec()
    UnitSpec[(blocks/0/up -> blocks/0/down: 12 units), (blocks/1/up -> blocks/1/down: 12 units)]
  """

  def __init__(
      self,
      vocab: int = 256,
      dim: int = 128,
      depth: int = 4,
      heads: int = 4,
      ffn: int = 512,
      max_len: int = 256,
      *,
      rngs: nnx.Rngs,
  ):
    self.embed = nnx.Embed(vocab, dim, rngs=rngs)
    self.position = nnx.Embed(max_len, dim, rngs=rngs)
    self.blocks = nnx.List(
        [TransformerBlock(dim, heads, ffn, rngs=rngs) for _ in range(depth)]
    )
    self.ln = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, vocab, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = self.embed(tokens) + self.position(jnp.arange(tokens.shape[1]))[None]
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln(x))

  def unit_pairs(self) -> list[tuple[str, str]]:
    return [
        (f"blocks/{i}/up", f"blocks/{i}/down") for i in range(len(self.blocks))
    ]

  def unit_spec(self) -> UnitSpec:
    """The :class:`~pathprox_jax.UnitSpec` of this model's current params."""
    pairs = self.unit_pairs()
    return UnitSpec.from_pairs(
        nnx.state(self, nnx.Param), pairs, links=(False,) * (len(pairs) - 1)
    )
