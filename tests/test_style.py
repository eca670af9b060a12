"""The formatter (pyink, Google style) and the linter (ruff) pass on the tree.

Configured in ``pyproject.toml``; run ``pyink . && ruff check --fix .`` to fix.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "--no-cache", "."],
        ["pyink", "--check", "--quiet", "."],
    ],
    ids=["ruff", "pyink"],
)
def test_tree_is_formatted_and_lint_free(command):
  if shutil.which(command[0]) is None:
    pytest.skip(f"{command[0]} is not installed (pip install -e '.[test]')")
  out = subprocess.run(
      [sys.executable, "-m", *command],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=False,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
