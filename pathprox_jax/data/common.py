"""Shared pieces of the data layer: the split container and normalisation.

All loaders in :mod:`pathprox_jax.data` return images as ``float32`` and
labels as ``int32`` numpy arrays. Normalisation is per channel,
``(x / 255 - mean) / std``, with the constants in :data:`NORMALIZATION`:

* ``mnist``: mean ``0.1307``, std ``0.3081`` (the usual MNIST train-set
  statistics).
* ``cifar10``: mean ``(0.4914, 0.4822, 0.4465)``, std
  ``(0.2470, 0.2435, 0.2616)`` (per-channel statistics of the CIFAR-10
  train set).
* ``svhn_cropped``: mean ``(0.4377, 0.4438, 0.4728)``, std
  ``(0.1980, 0.2010, 0.1970)`` (per-channel statistics of the SVHN train
  set).

Corrupted variants (``mnist_corrupted``, ``cifar10_corrupted``) use the
constants of their clean dataset, so that a model trained on clean data sees
corrupted inputs through the same preprocessing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["NORMALIZATION", "Split", "normalize_images"]

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


class Split(NamedTuple):
  """Train/test (and optionally validation) arrays of one dataset.

  Images are ``float32``, labels ``int32``. ``x_val``/``y_val`` are ``None``
  when the loader makes no validation split.

  Example:
      >>> import numpy as np
      >>> s = Split(np.zeros((2, 4), np.float32), np.zeros(2, np.int32),
      ...           np.zeros((1, 4), np.float32), np.zeros(1, np.int32))
      >>> s.x_train.shape, s.x_val is None
      ((2, 4), True)
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None


def normalize_images(images: np.ndarray, dataset: str) -> np.ndarray:
  """Scales ``uint8`` images to ``[0, 1]`` and standardises each channel.

  Args:
      images: Array of raw pixel values in ``[0, 255]`` with channels last
          (``(..., C)``), or flat MNIST rows (``(N, 784)``; single channel).
      dataset: Key of :data:`NORMALIZATION` (``"mnist"``, ``"cifar10"`` or
          ``"svhn_cropped"``).

  Returns:
      ``float32`` array of the same shape, ``(x / 255 - mean) / std``.

  Example:
      >>> import numpy as np
      >>> x = np.full((1, 28, 28, 1), 255, np.uint8)
      >>> float(normalize_images(x, "mnist")[0, 0, 0, 0])  # (1 - .1307) / .3081
      2.821...
  """
  try:
    mean, std = NORMALIZATION[dataset]
  except KeyError:
    raise ValueError(
        f"no normalisation constants for {dataset!r}; known: "
        f"{sorted(NORMALIZATION)} (or load with normalize=False)"
    ) from None
  images = np.asarray(images)
  if len(mean) > 1 and images.shape[-1] != len(mean):
    raise ValueError(
        f"expected {len(mean)} channels last, got shape {images.shape}"
    )
  mean_a, std_a = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  # (x / 255 - mean) / std, as one scale and one shift on a float32 copy.
  x = images.astype(np.float32)
  x *= (1.0 / (255.0 * std_a)).astype(np.float32)
  x -= (mean_a / std_a).astype(np.float32)
  return x
