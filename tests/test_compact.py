"""pathprox_jax.compact: exact removal of dead units, bias folding, shapes, specs, models.

(Compaction of the general unit topologies, views and several slices, is
covered in ``test_unit_topologies.py``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pathprox_jax import (
    MLP,
    VGG19,
    FactorizedMLP,
    UnitSpec,
    compact,
    compaction_error,
    kept_units,
    pathprox,
    rebuild,
    select_units,
)

HI = jax.lax.Precision.HIGHEST
DENSE = {"l0": (6, 8), "l1": (8, 7), "l2": (7, 9), "l3": (9, 5), "head": (5, 3)}
DENSE_PAIRS = [("l0", "l1"), ("l2", "l3")]
CONV = {
    "c0": (3, 3, 2, 6),
    "c1": (3, 3, 6, 5),
    "c2": (3, 3, 5, 4),
    "c3": (3, 3, 4, 7),
    "head": (7, 3),
}
CONV_PAIRS = [("c0", "c1"), ("c2", "c3")]


def make(sizes, seed=0, bias=True):
  r = np.random.default_rng(seed)
  p = {}
  for k, s in sizes.items():
    p[k] = {"kernel": r.normal(size=s).astype(np.float32)}
    if bias:
      p[k]["bias"] = r.normal(size=s[-1]).astype(np.float32)
  return p


def kill(p, a, b, i, how, bias=None):
  """Makes unit i of pair (a, b) dead: 'w' (w = 0), 'v' (v = 0) or 'wv'."""
  if "w" in how:
    p[a]["kernel"][..., i] = 0.0
  if "v" in how:
    p[b]["kernel"][..., i, :] = 0.0
  if bias is not None:
    p[a]["bias"][i] = bias


def dense_forward(p, x, upto=None):
  """NumPy float64: ReLU after l0, l2 (inside the pairs) and after l1, l3."""
  h = np.asarray(x, np.float64)
  for name in ("l0", "l1", "l2", "l3", "head"):
    h = h @ np.asarray(p[name]["kernel"], np.float64)
    if "bias" in p[name]:
      h = h + np.asarray(p[name]["bias"], np.float64)
    if name == upto:
      return h
    if name != "head":
      h = np.maximum(h, 0.0)
  return h


def conv_forward(p, x, padding="SAME", upto=None):
  h = jnp.asarray(x)
  for name in ("c0", "c1", "c2", "c3"):
    h = jax.lax.conv_general_dilated(
        h,
        jnp.asarray(p[name]["kernel"]),
        (1, 1),
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=HI,
    )
    if "bias" in p[name]:
      h = h + p[name]["bias"]
    if name == upto:
      return np.asarray(h)
    h = jax.nn.relu(h)
  h = jnp.mean(h, axis=(1, 2))
  return np.asarray(
      jnp.dot(h, p["head"]["kernel"], precision=HI) + p["head"]["bias"]
  )


def shapes(t):
  return jax.tree.map(np.shape, t)


# ------------------------------------------------------------- dense
def test_dense_mixed_dead_patterns_exact():
  p = make(DENSE)
  kill(p, "l0", "l1", 1, "w", bias=2.0)  # constant relu(2) v: folded
  kill(p, "l0", "l1", 2, "w", bias=-1.0)  # relu(-1) = 0: nothing to fold
  kill(p, "l0", "l1", 3, "v")
  kill(p, "l0", "l1", 5, "wv", bias=3.0)
  spec = UnitSpec.from_pairs(p, DENSE_PAIRS)  # group 1 (l2, l3): nothing dead
  assert [k.tolist() for k in kept_units(p, spec)] == [
      [0, 4, 6, 7],
      list(range(9)),
  ]
  small, small_spec = compact(p, spec)
  assert small_spec.num_units == (4, 9)
  assert shapes(small)["l0"] == {"kernel": (6, 4), "bias": (4,)}
  assert shapes(small)["l1"] == {"kernel": (4, 7), "bias": (7,)}
  assert shapes(small)["l2"] == shapes(p)["l2"]
  np.testing.assert_allclose(
      small["l1"]["bias"],
      p["l1"]["bias"] + 2.0 * p["l1"]["kernel"][1],
      rtol=1e-6,
  )
  x = np.random.default_rng(1).normal(size=(64, 6))
  np.testing.assert_allclose(
      dense_forward(small, x), dense_forward(p, x), rtol=1e-5, atol=1e-5
  )
  assert jax.tree.structure(small) == jax.tree.structure(
      jax.tree.map(jnp.asarray, p)
  )


def test_all_dead_group_keeps_one_unit_or_none():
  p = make(DENSE, 2)
  for i in range(9):
    kill(p, "l2", "l3", i, "v" if i % 2 else "wv", bias=-0.5)
  spec = UnitSpec.from_pairs(p, DENSE_PAIRS)
  x = np.random.default_rng(3).normal(size=(16, 6))
  small, small_spec = compact(p, spec)
  assert small_spec.num_units == (8, 1)  # default min_width=1
  np.testing.assert_allclose(
      dense_forward(small, x), dense_forward(p, x), atol=1e-5
  )
  empty, empty_spec = compact(p, spec, min_width=0)
  assert empty_spec.num_units == (8, 0)
  assert shapes(empty)["l3"]["kernel"] == (0, 5)
  np.testing.assert_allclose(
      dense_forward(empty, x), dense_forward(p, x), atol=1e-5
  )
  # PathProx runs on a zero-width group and keeps everything finite.
  tx = pathprox(0.1, 1e-3, empty_spec)
  grads = jax.tree.map(jnp.ones_like, empty)
  upd, _ = jax.jit(tx.update)(grads, tx.init(empty), empty)
  new = optax.apply_updates(empty, upd)
  assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree.leaves(new))


def test_constant_unit_kept_when_output_has_no_bias():
  p = make({"a": (4, 5), "b": (5, 3)})
  del p["b"]["bias"]
  kill(p, "a", "b", 2, "w", bias=1.5)  # nowhere to fold: must stay
  kill(p, "a", "b", 3, "w", bias=-1.0)  # relu = 0: removable
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  small, small_spec = compact(p, spec)
  assert small_spec.num_units == (4,)
  f = (
      lambda q, x: np.maximum(x @ q["a"]["kernel"] + q["a"]["bias"], 0)
      @ q["b"]["kernel"]
  )
  x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
  np.testing.assert_allclose(f(small, x), f(p, x), rtol=1e-5, atol=1e-6)


def test_custom_activation_used_for_folding():
  p = make({"a": (4, 5), "b": (5, 3)})
  kill(p, "a", "b", 0, "w", bias=-2.0)
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  leaky = lambda z: jax.nn.leaky_relu(z, 0.1)
  small, _ = compact(p, spec, activation=leaky)
  f = (
      lambda q, x: leaky(x @ q["a"]["kernel"] + q["a"]["bias"])
      @ q["b"]["kernel"]
      + q["b"]["bias"]
  )
  x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
  np.testing.assert_allclose(f(small, x), f(p, x), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------- conv
def conv_params():
  p = make(CONV, 4)
  kill(p, "c0", "c1", 0, "v")
  kill(p, "c0", "c1", 2, "wv", bias=1.0)
  kill(p, "c0", "c1", 4, "w", bias=-1.0)
  kill(p, "c0", "c1", 5, "w", bias=0.7)  # constant channel into a Conv
  for i in range(4):  # group 1 entirely dead
    kill(p, "c2", "c3", i, "v")
  return p


def test_conv_mixed_dead_patterns_exact():
  p = conv_params()
  spec = UnitSpec.from_pairs(p, CONV_PAIRS)
  small, small_spec = compact(p, spec)
  # unit 5 (constant into a SAME conv) is kept: folding it would not be exact
  assert [k.tolist() for k in kept_units(p, spec)] == [[1, 3, 5], [0]]
  assert small_spec.num_units == (3, 1)
  assert shapes(small)["c0"]["kernel"] == (3, 3, 2, 3)
  assert shapes(small)["c1"]["kernel"] == (3, 3, 3, 5)
  assert shapes(small)["c3"]["kernel"] == (3, 3, 1, 7)
  x = np.random.default_rng(5).normal(size=(2, 8, 8, 2)).astype(np.float32)
  np.testing.assert_allclose(
      conv_forward(small, x), conv_forward(p, x), rtol=1e-5, atol=1e-5
  )


def test_conv_constant_folding_exact_for_valid_only_at_border_for_same():
  p = conv_params()
  spec = UnitSpec.from_pairs(p, CONV_PAIRS)
  folded, folded_spec = compact(p, spec, fold_conv_constants=True)
  assert folded_spec.num_units == (2, 1)
  x = np.random.default_rng(6).normal(size=(2, 10, 10, 2)).astype(np.float32)
  # VALID padding: a constant channel gives a constant output, folding is exact.
  np.testing.assert_allclose(
      conv_forward(folded, x, "VALID"),
      conv_forward(p, x, "VALID"),
      rtol=1e-5,
      atol=1e-5,
  )
  # SAME padding: c1's output is exact in the interior, wrong on the border.
  got = conv_forward(folded, x, "SAME", upto="c1")
  exp = conv_forward(p, x, "SAME", upto="c1")
  np.testing.assert_allclose(
      got[:, 1:-1, 1:-1], exp[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5
  )
  assert np.max(np.abs(got[:, 0] - exp[:, 0])) > 1e-2


# ------------------------------------------------------- threshold > 0
def test_threshold_positive_reports_error_within_bound():
  p = make({"a": (6, 10), "b": (10, 4)}, 7)
  p["b"]["kernel"][[1, 4, 7]] *= 1e-3
  p["a"]["kernel"][:, 8] *= 1e-3
  spec = UnitSpec.from_pairs(p, [("a", "b")])
  pn = np.linalg.norm(p["a"]["kernel"], axis=0) * np.linalg.norm(
      p["b"]["kernel"], axis=1
  )
  thr = 0.05
  removed = pn <= thr
  assert removed.sum() == 4
  small, small_spec = compact(p, spec, threshold=thr)
  assert small_spec.num_units == (6,)
  f = lambda q: lambda x: (
      jax.nn.relu(x @ q["a"]["kernel"] + q["a"]["bias"]) @ q["b"]["kernel"]
      + q["b"]["bias"]
  )
  x = np.random.default_rng(8).normal(size=(32, 6)).astype(np.float32)
  err = compaction_error(f(p), f(small), x)
  before, after = np.asarray(f(p)(x), np.float64), np.asarray(
      f(small)(x), np.float64
  )
  assert err.relative == pytest.approx(
      np.linalg.norm(after - before) / np.linalg.norm(before)
  )
  assert err.max_abs == pytest.approx(np.abs(after - before).max())
  assert 0 < err.relative < 1e-2
  bound = np.linalg.norm(x, axis=1) * pn[removed].sum()
  assert np.all(
      np.linalg.norm(after - before, axis=1) <= bound * (1 + 1e-5) + 1e-6
  )
  assert compaction_error(f(p), f(p), x).relative == 0.0


# ------------------------------------------------- spec, PathProx, slicing
def test_returned_spec_validates_and_pathprox_steps():
  p = conv_params()
  small, small_spec = compact(p, UnitSpec.from_pairs(p, CONV_PAIRS))
  small_spec.check(small)
  tx = pathprox(0.1, 1e-3, small_spec)
  grads = jax.tree.map(lambda a: 0.1 * jnp.ones_like(a), small)
  upd, _ = jax.jit(tx.update)(grads, tx.init(small), small)
  new = optax.apply_updates(small, upd)
  assert shapes(new) == shapes(small)
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(new["c0"]["kernel"]).reshape(-1, 3), axis=0),
      1.0,
      rtol=1e-5,
  )


def test_select_units_slices_like_compact():
  p = make(DENSE, 9)
  kill(p, "l0", "l1", 6, "v")
  spec = UnitSpec.from_pairs(p, DENSE_PAIRS)
  kept = kept_units(p, spec)
  momentum = jax.tree.map(lambda a: 2 * a, p)
  sliced = select_units(momentum, spec, kept)
  small, _ = compact(p, spec)
  for k in p:
    for n in p[k]:
      np.testing.assert_array_equal(sliced[k][n], 2 * np.asarray(small[k][n]))
  with pytest.raises(ValueError, match="strictly increasing"):
    select_units(p, spec, [[3, 1], list(range(9))])
  with pytest.raises(ValueError, match="2 groups"):
    select_units(p, spec, [[0]])


# ----------------------------------------------------------- errors
def test_errors():
  p = make(DENSE)
  spec = UnitSpec.from_pairs(p, DENSE_PAIRS)
  other = UnitSpec.from_pairs(
      make({**DENSE, "l0": (6, 4), "l1": (4, 7)}), DENSE_PAIRS
  )
  with pytest.raises(ValueError, match=r"l0/kernel.*\(6, 8\).*\(6, 4\)"):
    compact(p, other)
  with pytest.raises(TypeError, match="UnitSpec"):
    compact(p, DENSE_PAIRS)
  for bad in (-1e-3, float("nan"), np.ones(2)):
    with pytest.raises(ValueError, match="threshold"):
      compact(p, spec, threshold=bad)
  with pytest.raises(ValueError, match="min_width"):
    compact(p, spec, min_width=-1)
  q = make(DENSE)
  q["l1"]["kernel"][2, 0] = np.inf
  with pytest.raises(ValueError, match=r"Group 0 .*not finite.*unit 2"):
    compact(q, spec)
  with pytest.raises(ValueError, match="host-side"):
    jax.jit(lambda t: compact(t, spec)[0])(p)


# ----------------------------------------------------------- models
def fast_model(make_model, seed=0):
  """The model with NumPy-drawn weights (skips the slow eager per-shape init)."""
  model = nnx.eval_shape(make_model)
  r = np.random.default_rng(seed)
  state = jax.tree.map(
      lambda s: jnp.asarray(
          r.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))
          if len(s.shape) > 1
          else 0.1 * r.normal(size=s.shape),
          s.dtype,
      ),
      nnx.state(model, nnx.Param),
  )
  nnx.update(model, state)
  return model


def kill_state(state, pairs, dead):
  """dead: {pair index: (unit indices, how)} on an nnx.State (in place)."""
  for g, (idx, how) in dead.items():
    a, b = (s.split("/") for s in pairs[g])
    ka = state[a[0]][int(a[1])]["kernel"]
    kb = state[b[0]][int(b[1])]["kernel"]
    idx = np.asarray(idx)
    if "w" in how:
      ka[...] = ka[...].at[..., idx].set(0.0)
    if "v" in how:
      kb[...] = kb[...].at[..., idx, :].set(0.0)


@pytest.mark.parametrize(
    "make_model, x_shape, dead, widths",
    [
        (
            lambda: FactorizedMLP(
                3, 12, in_features=20, num_classes=4, rngs=nnx.Rngs(0)
            ),
            (5, 20),
            {0: ([0, 3, 7], "v"), 1: (list(range(12)), "v"), 2: ([5], "wv")},
            (9, 12, 1, 12, 11),
        ),
        (
            lambda: MLP(3, 10, in_features=20, num_classes=4, rngs=nnx.Rngs(1)),
            (5, 20),
            {0: ([1, 2], "v")},
            (8, 10),
        ),
        (
            lambda: VGG19(width_multiplier=1 / 16, rngs=nnx.Rngs(2)),
            (2, 32, 32, 3),
            {0: ([0, 1], "v"), 3: ([2], "wv"), 7: (list(range(32)), "v")},
            (2, 4, 8, 8, 16, 16, 15, 16, 32, 32, 32, 32, 32, 32, 1, 32),
        ),
    ],
)
def test_models_rebuilt_from_compact_params(make_model, x_shape, dead, widths):
  model = fast_model(make_model)
  state = nnx.state(model, nnx.Param)
  kill_state(state, model.unit_pairs(), dead)
  nnx.update(model, state)
  small, small_spec = compact(state, model.unit_spec())
  assert isinstance(small, nnx.State)
  assert all(
      isinstance(v, nnx.Param)
      for v in jax.tree.leaves(
          small, is_leaf=lambda v: isinstance(v, nnx.Variable)
      )
  )
  rebuilt = rebuild(model, small)
  got = getattr(rebuilt, "channels", None) or rebuilt.widths
  assert got == widths
  assert rebuilt.unit_spec() == small_spec
  x = jax.random.normal(jax.random.key(0), x_shape)
  fwd = nnx.jit(lambda m, x: m(x))
  err = compaction_error(lambda x: fwd(model, x), lambda x: fwd(rebuilt, x), x)
  assert err.relative < 1e-5, err
  # the template is untouched, and an abstract template works too
  assert (getattr(model, "channels", None) or model.widths) != widths
  abstract = nnx.eval_shape(make_model)
  np.testing.assert_allclose(
      fwd(rebuild(abstract, small), x), fwd(rebuilt, x), atol=1e-6
  )


def test_rebuild_from_restored_dict_and_errors():
  model = fast_model(
      lambda: FactorizedMLP(
          1, 6, in_features=3, num_classes=2, rngs=nnx.Rngs(0)
      )
  )
  state = nnx.state(model, nnx.Param)
  kill_state(state, model.unit_pairs(), {0: ([1], "v")})
  small, _ = compact(state, model.unit_spec())
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(small))
  pure = {
      "layers": {str(k): v for k, v in pure["layers"].items()}
  }  # orbax-style keys
  m = rebuild(model, pure)
  assert m.widths == (5,)
  with pytest.raises(ValueError, match="missing.*layers/1/bias"):
    rebuild(
        model,
        {
            "layers": {
                "0": pure["layers"]["0"],
                "1": {"kernel": pure["layers"]["1"]["kernel"]},
            }
        },
    )
  with pytest.raises(ValueError, match="to_pure_dict"):
    rebuild(model, jax.tree.map(lambda a: {"value": a}, pure))
