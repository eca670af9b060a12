"""Deprecation helpers: renamed arguments keep working for one release."""

from __future__ import annotations

import warnings
from typing import Any


def warn(message: str, stacklevel: int = 3) -> None:
  warnings.warn(message + " (removed in 0.3; see CHANGELOG.md)",
                DeprecationWarning, stacklevel=stacklevel)


def renamed_kwargs(fn: str, given: dict[str, Any], **renames) -> Any:
  """Resolves old keyword names passed in ``**given``.

  ``renames`` maps ``old_name=(new_name, new_value)``; returns the new
  values in that order, taking an old name's value (with a
  ``DeprecationWarning``) when it was passed. Unknown names raise
  ``TypeError`` as Python would.
  """
  given = dict(given)
  nested = given.pop("deprecated", None)
  if isinstance(nested, dict):
    # optax.inject_hyperparams binds the factory's signature and passes the
    # empty ``**deprecated`` bucket back as a keyword named ``deprecated``.
    given.update(nested)
  elif nested is not None:
    given["deprecated"] = nested
  unknown = set(given) - set(renames)
  if unknown:
    raise TypeError(f"{fn}() got unexpected keyword arguments {sorted(unknown)}.")
  out = []
  for old, (new, value) in renames.items():
    if old in given:
      warn(f"{fn}(..., {old}=...) is now {fn}(..., {new}=...)", stacklevel=4)
      value = given[old]
    out.append(value)
  return out[0] if len(out) == 1 else tuple(out)
