"""Minimal numpy mini-batch iterators (one epoch, or an endless stream)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["batch_stream", "iterate_batches"]

RngLike = int | np.random.Generator | None


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    rng: RngLike = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields ``(x_batch, y_batch)`` numpy pairs covering one epoch.

  Args:
      x: Inputs, indexed along the first axis.
      y: Targets with ``len(y) == len(x)``.
      batch_size: Examples per batch.
      rng: Seed or ``np.random.Generator`` for the shuffle. Passing the same
          generator to successive calls gives a new order every epoch.
      shuffle: If false, batches follow the stored order.
      drop_remainder: If true, a last incomplete batch is dropped, so every
          batch has exactly ``batch_size`` examples (one jit shape).

  Yields:
      ``(x[idx], y[idx])`` for consecutive index blocks ``idx``.

  Example:
      >>> import numpy as np
      >>> x, y = np.arange(10.0)[:, None], np.arange(10)
      >>> [len(b) for b, _ in iterate_batches(x, y, 4)]
      [4, 4]
      >>> [len(b) for b, _ in iterate_batches(x, y, 4, drop_remainder=False)]
      [4, 4, 2]
  """
  n = len(x)
  if len(y) != n:
    raise ValueError(f"x and y differ in length: {n} != {len(y)}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
  stop = n - n % batch_size if drop_remainder else n
  for start in range(0, stop, batch_size):
    idx = order[start : start + batch_size]
    yield x[idx], y[idx]


def batch_stream(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int = 0, **options
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless batches for step-based loops, reshuffled at every epoch.

  Args:
      x, y, batch_size: as in :func:`iterate_batches`.
      seed: Seed of the sequence of epoch shuffles.
      **options: ``shuffle`` and ``drop_remainder`` of
          :func:`iterate_batches`, applied per epoch.

  Yields:
      ``(x_batch, y_batch)`` forever.

  Example:
      >>> import itertools, numpy as np
      >>> stream = batch_stream(np.zeros((10, 3)), np.zeros(10), 4, seed=1)
      >>> [xb.shape for xb, _ in itertools.islice(stream, 3)]
      [(4, 3), (4, 3), (4, 3)]
  """
  if options.get("drop_remainder", True) and len(x) < batch_size:
    raise ValueError(
        f"batch_size {batch_size} > dataset size {len(x)} with drop_remainder"
    )
  if len(x) == 0:
    raise ValueError("cannot stream an empty dataset")
  rng = np.random.default_rng(seed)
  while True:
    yield from iterate_batches(x, y, batch_size, rng=rng, **options)
