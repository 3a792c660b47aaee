"""Workdir paths as `etils.epath.Path`, so a run directory may be local or `gs://...`.

A path is never made absolute by string (`os.path.abspath('gs://b/run')` would give
`<cwd>/gs:/b/run`): local relative paths are resolved by the path object, remote ones
are left as they are.
"""

from __future__ import annotations

import os

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
  """An absolute epath.Path: `gs://` (any URL scheme) kept, local paths resolved."""
  p = epath.Path(path)
  if "://" in os.fspath(path):
    return p
  return p.absolute()


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary sibling and a rename, so a reader sees
  the old file or the new one, never half of it."""
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)
