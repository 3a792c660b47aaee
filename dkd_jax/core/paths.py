"""Workdir paths as `etils.epath.Path`, so a run directory may be local or `gs://...`.

A path is never made absolute by string (`os.path.abspath('gs://b/run')` would give
`<cwd>/gs:/b/run`): local relative paths are resolved by the path object, remote ones
are left as they are.
"""

from __future__ import annotations

import os
import shutil
import uuid

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


class WorkdirError(OSError):
  """A workdir that cannot hold the run; the message is one line naming the path."""


def human_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if n < 1024 or unit == "TB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TB"


def free_bytes(path) -> int | None:
  """Free bytes for writing under `path` (its nearest existing ancestor); None for a
  remote path (gs://: no fixed capacity)."""
  if "://" in os.fspath(path):
    return None
  p = os.fspath(as_path(path))
  while not os.path.exists(p) and os.path.dirname(p) != p:
    p = os.path.dirname(p)
  try:
    return shutil.disk_usage(p).free
  except OSError:
    return None


def check_workdir(workdir, need_bytes: int = 0, what: str = "one checkpoint") -> epath.Path:
  """Creates the workdir if missing and proves it writable (a probe file written and
  removed), and that `need_bytes` fit on its disk: else one-line WorkdirError naming the
  path (and the space needed), raised before anything compiles."""
  path = as_path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{uuid.uuid4().hex}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    why = os.strerror(e.errno) if e.errno else str(e)
    raise WorkdirError(
      f"workdir {path} is not writable ({why}); choose another --workdir"
    ) from None
  free = free_bytes(path)
  if need_bytes and free is not None and free < need_bytes:
    raise WorkdirError(
      f"workdir {path} has {human_bytes(free)} free but {what} needs "
      f"{human_bytes(need_bytes)} ({need_bytes} bytes); free space or choose another --workdir",
    )
  return path
