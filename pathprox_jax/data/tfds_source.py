"""TFDS datasets read offline through ``tfds.data_source`` (no TensorFlow).

``tfds.data_source`` reads ArrayRecord files that must already be prepared in
``data_dir``; nothing here ever downloads. A dataset that is not prepared
raises :class:`DatasetNotPreparedError` at once, with the commands to prepare
it on a machine with internet access. ``tensorflow_datasets`` (and Pillow, to
decode the stored PNGs) come with ``pip install "pathprox-jax[data]"``.

Paper splits (validation = the *last* ``val_size`` examples of TFDS
``'train'``; test = TFDS ``'test'``):

==============  =====  =====  =====
dataset         train  val    test
==============  =====  =====  =====
mnist           55000  5000   10000
cifar10         45000  5000   10000
svhn_cropped    67257  6000   26032
==============  =====  =====  =====

Images are NHWC ``float32`` normalised with the per-dataset constants of
:data:`pathprox_jax.data.NORMALIZATION`; labels are ``int32``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pathprox_jax.data.common import Split, normalize_images

__all__ = [
    "CIFAR10_CORRUPTIONS",
    "DatasetNotPreparedError",
    "MNIST_CORRUPTIONS",
    "PAPER_VAL_SIZES",
    "default_data_dir",
    "load_cifar10_corrupted",
    "load_mnist_corrupted",
    "load_tfds",
    "load_tfds_split",
]

PAPER_VAL_SIZES = {"mnist": 5000, "cifar10": 5000, "svhn_cropped": 6000}

MNIST_CORRUPTIONS = (
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear",
    "scale", "rotate", "brightness", "translate", "stripe", "fog", "spatter",
    "dotted_line", "zigzag", "canny_edges",
)  # fmt: skip
"""The 15 corruptions of ``mnist_corrupted`` (its ``identity`` config, clean
MNIST, is also accepted by :func:`load_mnist_corrupted`)."""

CIFAR10_CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost",
    "frosted_glass_blur", "gaussian_blur", "gaussian_noise", "impulse_noise",
    "jpeg_compression", "motion_blur", "pixelate", "saturate", "shot_noise",
    "snow", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip
"""The 19 corruptions of ``cifar10_corrupted``, each with severities 1-5."""

_CHUNK = 2048
_INSTALL_HINT = 'install the data extra: pip install "pathprox-jax[data]"'


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not prepared (as ArrayRecord) in the given data_dir."""


def _tfds() -> Any:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"TFDS loaders need tensorflow-datasets; {_INSTALL_HINT}"
    ) from e
  return tfds


def default_data_dir() -> str:
  """Returns ``$TFDS_DATA_DIR`` if set, else ``~/tensorflow_datasets``.

  Example:
      >>> isinstance(default_data_dir(), str)
      True
  """
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets"
  )


def _prepare_hint(name: str, data_dir: str) -> str:
  return (
      "Nothing is downloaded here. On a machine with internet access run\n   "
      f" pip install tensorflow tensorflow-datasets\n    tfds build {name}"
      ' --data_dir DIR --file_format array_record\nor\n    python -c "import'
      f" tensorflow_datasets as tfds; tfds.builder('{name}',"
      " data_dir='DIR').download_and_prepare(file_format='array_record')\"\nthen"
      f" copy DIR/{name.split('/')[0]} into {data_dir} on this machine (or"
      " point data_dir / $TFDS_DATA_DIR at the copy)."
  )


def _open_sources(
    name: str, splits: Sequence[str], data_dir: str | None
) -> list:
  """Checks that ``name`` is prepared, then returns one data source per split."""
  tfds = _tfds()
  root = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  builder = tfds.builder(name, data_dir=root, try_gcs=False)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f"TFDS dataset {name!r} is not prepared in data_dir {root!r} "
        f"(looked for {builder.data_dir}).\n"
        + _prepare_hint(name, root)
    )
  try:
    return tfds.data_source(
        name, split=list(splits), data_dir=root, download=False, try_gcs=False
    )
  except NotImplementedError as e:  # prepared, but without ArrayRecord files
    raise DatasetNotPreparedError(
        f"TFDS dataset {name!r} in {root!r} has no ArrayRecord files, which "
        f"tfds.data_source needs ({e}).\n"
        + _prepare_hint(name, root)
    ) from e


def _to_numpy(source: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole data source into ``(uint8 NHWC images, int32 labels)``."""
  n = len(source)
  images: np.ndarray | None = None
  labels = np.empty((n,), np.int32)
  for start in range(0, n, _CHUNK):
    stop = min(start + _CHUNK, n)
    for i, example in enumerate(
        source.__getitems__(list(range(start, stop))), start
    ):
      image = np.asarray(example["image"])
      if images is None:
        images = np.empty((n, *image.shape), image.dtype)
      images[i] = image
      labels[i] = example["label"]
  if images is None:
    raise ValueError(f"empty data source {source!r}")
  return images, labels


def _finish(images: np.ndarray, normalize: bool, stats: str) -> np.ndarray:
  if normalize:
    return normalize_images(images, stats)
  return images.astype(np.float32) / np.float32(255.0)


def _stats_key(name: str) -> str:
  base = name.split("/")[0].split(":")[0]
  return base[: -len("_corrupted")] if base.endswith("_corrupted") else base


def load_tfds_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads one TFDS split into memory as numpy arrays.

  Args:
      name: TFDS name, with config if any (``"mnist"``,
          ``"mnist_corrupted/fog"``, ``"cifar10_corrupted/snow_3"``, ...).
      split: TFDS split string, e.g. ``"test"`` or ``"train[:-5000]"``.
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      normalize: If true, standardise with the constants of the (clean)
          dataset; otherwise only scale to ``[0, 1]``.

  Returns:
      ``(images, labels)``: NHWC ``float32`` and ``int32`` arrays.

  Raises:
      DatasetNotPreparedError: If the dataset is not prepared in ``data_dir``.
      ImportError: If ``tensorflow_datasets`` is not installed.

  Example:
      >>> x, y = load_tfds_split("mnist", "test[:100]")  # doctest: +SKIP
      >>> x.shape, y.dtype  # doctest: +SKIP
      ((100, 28, 28, 1), dtype('int32'))
  """
  (source,) = _open_sources(name, [split], data_dir)
  images, labels = _to_numpy(source)
  return _finish(images, normalize, _stats_key(name)), labels


def load_tfds(
    name: str,
    *,
    data_dir: str | None = None,
    val_size: int | None = None,
    normalize: bool = True,
) -> Split:
  """Loads the paper's train/val/test split of ``mnist``, ``cifar10`` or ``svhn_cropped``.

  Validation is the last ``val_size`` examples of TFDS ``'train'``
  (``train[-val_size:]``), training the rest (``train[:-val_size]``), test is
  TFDS ``'test'``.

  Args:
      name: ``"mnist"``, ``"cifar10"`` or ``"svhn_cropped"`` (any TFDS image
          classification dataset with known constants also works).
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      val_size: Validation size; defaults to :data:`PAPER_VAL_SIZES`
          (5000, 5000, 6000). ``0`` means no validation split
          (``x_val``/``y_val`` are ``None``).
      normalize: If true, standardise per channel; else scale to ``[0, 1]``.

  Returns:
      A :class:`~pathprox_jax.data.Split` of NHWC ``float32`` images and
      ``int32`` labels.

  Raises:
      DatasetNotPreparedError: If the dataset is not prepared in ``data_dir``.
      ImportError: If ``tensorflow_datasets`` is not installed.

  Example:
      >>> s = load_tfds("cifar10", data_dir="/data/tfds")  # doctest: +SKIP
      >>> s.x_train.shape, s.x_val.shape, s.x_test.shape  # doctest: +SKIP
      ((45000, 32, 32, 3), (5000, 32, 32, 3), (10000, 32, 32, 3))
  """
  if val_size is None:
    if name not in PAPER_VAL_SIZES:
      raise ValueError(f"no default val_size for {name!r}; pass val_size=")
    val_size = PAPER_VAL_SIZES[name]
  if val_size < 0:
    raise ValueError(f"val_size must be >= 0, got {val_size}")
  if val_size == 0:
    splits = ["train", "test"]
  else:
    splits = [f"train[:-{val_size}]", "test", f"train[-{val_size}:]"]
  stats = _stats_key(name)
  loaded = []  # (x_train, y_train), (x_test, y_test)[, (x_val, y_val)]
  for source in _open_sources(name, splits, data_dir):
    images, labels = _to_numpy(source)
    loaded.append((_finish(images, normalize, stats), labels))
  (x_train, y_train), (x_test, y_test), *val = loaded
  x_val, y_val = val[0] if val else (None, None)
  return Split(x_train, y_train, x_test, y_test, x_val, y_val)


def load_mnist_corrupted(
    corruption: str,
    *,
    split: str = "test",
    data_dir: str | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of ``mnist_corrupted/<corruption>`` (MNIST-C).

  Args:
      corruption: One of :data:`MNIST_CORRUPTIONS` (or ``"identity"``).
      split: TFDS split string (``"test"``, ``"train"``, ...).
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      normalize: If true, standardise with the clean MNIST constants.

  Returns:
      ``(images (N, 28, 28, 1) float32, labels int32)``.

  Example:
      >>> x, y = load_mnist_corrupted("fog")  # doctest: +SKIP
      >>> x.shape  # doctest: +SKIP
      (10000, 28, 28, 1)
  """
  if corruption not in MNIST_CORRUPTIONS + ("identity",):
    raise ValueError(
        f"unknown MNIST corruption {corruption!r}; choose from"
        f" {MNIST_CORRUPTIONS}"
    )
  return load_tfds_split(
      f"mnist_corrupted/{corruption}",
      split,
      data_dir=data_dir,
      normalize=normalize,
  )


def load_cifar10_corrupted(
    corruption: str, severity: int, **options
) -> tuple[np.ndarray, np.ndarray]:
  """Loads ``cifar10_corrupted/<corruption>_<severity>`` (CIFAR-10-C, 'test' only).

  Args:
      corruption: One of :data:`CIFAR10_CORRUPTIONS`.
      severity: Integer severity in ``1..5``.
      **options: ``data_dir`` and ``normalize`` of :func:`load_tfds_split`
          (normalisation uses the constants of clean CIFAR-10).

  Returns:
      ``(images (10000, 32, 32, 3) float32, labels int32)``.

  Example:
      >>> x, y = load_cifar10_corrupted("gaussian_noise", 5)  # doctest: +SKIP
      >>> x.shape  # doctest: +SKIP
      (10000, 32, 32, 3)
  """
  if corruption not in CIFAR10_CORRUPTIONS:
    raise ValueError(
        f"unknown CIFAR-10 corruption {corruption!r}; choose from"
        f" {CIFAR10_CORRUPTIONS}"
    )
  if severity not in (1, 2, 3, 4, 5):
    raise ValueError(f"severity must be in 1..5, got {severity}")
  return load_tfds_split(
      f"cifar10_corrupted/{corruption}_{severity}", "test", **options
  )
