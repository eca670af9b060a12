"""Real text on every machine: the Python standard library's own source files, as bytes.

A fixed list of modules (present in CPython 3.10 to 3.13), split into
training and validation *by file*, read as raw bytes for byte-level language
models. Nothing is downloaded. The exact bytes depend on the installed
Python's version: :func:`load_stdlib_text` reports which files it read and
their sizes, so runs can be compared.
"""

from __future__ import annotations

import os
import sysconfig
from typing import NamedTuple

import numpy as np

__all__ = [
    "STDLIB_TRAIN",
    "STDLIB_VAL",
    "TextSplit",
    "load_stdlib_text",
    "byte_windows",
]

#: Training modules (2.9 MB of source on CPython 3.11; validation 0.3 MB).
STDLIB_TRAIN = (
    "argparse.py",
    "ast.py",
    "base64.py",
    "bdb.py",
    "calendar.py",
    "cmd.py",
    "code.py",
    "codecs.py",
    "configparser.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "dis.py",
    "enum.py",
    "filecmp.py",
    "fractions.py",
    "ftplib.py",
    "functools.py",
    "getopt.py",
    "gettext.py",
    "glob.py",
    "gzip.py",
    "heapq.py",
    "hmac.py",
    "imaplib.py",
    "inspect.py",
    "ipaddress.py",
    "locale.py",
    "logging/__init__.py",
    "mailbox.py",
    "netrc.py",
    "numbers.py",
    "operator.py",
    "optparse.py",
    "pathlib.py",
    "pdb.py",
    "pickle.py",
    "platform.py",
    "plistlib.py",
    "poplib.py",
    "pprint.py",
    "pydoc.py",
    "queue.py",
    "random.py",
    "re/__init__.py",
    "sched.py",
    "selectors.py",
    "shlex.py",
    "shutil.py",
    "smtplib.py",
    "socket.py",
    "statistics.py",
    "string.py",
    "subprocess.py",
    "tarfile.py",
    "tempfile.py",
    "textwrap.py",
    "threading.py",
    "timeit.py",
    "tokenize.py",
    "traceback.py",
    "typing.py",
    "uuid.py",
    "warnings.py",
    "weakref.py",
    "zipfile.py",
)
#: Validation modules (different files from the training ones).
STDLIB_VAL = (
    "collections/__init__.py",
    "decimal.py",
    "fnmatch.py",
    "graphlib.py",
    "hashlib.py",
    "json/decoder.py",
    "json/encoder.py",
    "linecache.py",
    "mimetypes.py",
    "os.py",
    "posixpath.py",
    "quopri.py",
    "secrets.py",
    "stat.py",
    "struct.py",
    "symtable.py",
    "token.py",
    "trace.py",
    "types.py",
    "zipimport.py",
)


class TextSplit(NamedTuple):
  """Training and validation bytes (``uint8`` arrays) and the files read."""

  train: np.ndarray
  val: np.ndarray
  train_files: tuple[str, ...]
  val_files: tuple[str, ...]


def _read(root: str, names) -> tuple[np.ndarray, tuple[str, ...]]:
  chunks, found = [], []
  for name in names:
    path = os.path.join(root, name)
    if os.path.isfile(path):
      with open(path, "rb") as fh:
        chunks.append(np.frombuffer(fh.read(), np.uint8))
      found.append(name)
  if not chunks:
    raise FileNotFoundError(f"none of {list(names)[:3]}... is in {root}")
  return np.concatenate(chunks), tuple(found)


def load_stdlib_text(
    train_files=STDLIB_TRAIN, val_files=STDLIB_VAL, *, root: str | None = None
) -> TextSplit:
  """Reads the standard library modules as bytes, split by file.

  Args:
    train_files: module paths relative to the stdlib directory.
    val_files: the validation modules (must not overlap the training ones).
    root: the stdlib directory (default ``sysconfig.get_paths()["stdlib"]``).

  Returns:
    A :class:`TextSplit`; files missing from this Python are skipped and not
    listed.

  Raises:
    ValueError: if the two lists overlap.
    FileNotFoundError: if no listed file exists.

  Examples:
    >>> split = load_stdlib_text()
    >>> split.train.dtype, len(split.train) > 10**6, len(split.val) > 10**5
    (dtype('uint8'), True, True)
  """
  overlap = set(train_files) & set(val_files)
  if overlap:
    raise ValueError(f"train and validation files overlap: {sorted(overlap)}")
  root = root or sysconfig.get_paths()["stdlib"]
  train, tf = _read(root, train_files)
  val, vf = _read(root, val_files)
  return TextSplit(train, val, tf, vf)


def byte_windows(
    data: np.ndarray, length: int, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """``(inputs, targets)``: windows ``data[s:s+length]`` and the next bytes.

  Examples:
    >>> x, y = byte_windows(np.arange(10, dtype=np.uint8), 3, np.array([0, 5]))
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
  """
  idx = starts[:, None] + np.arange(length + 1)[None, :]
  windows = data[idx].astype(np.int32)
  return windows[:, :-1], windows[:, 1:]
