"""Workdirs are paths, not strings: `gs://` survives, no module makes a path absolute by
string (`os.path.abspath('gs://b/run')` is `<cwd>/gs:/b/run`), and os.path appears only
where files are local by nature (the ALLOWED table)."""

import ast
import os
import pathlib

import pytest

from dkd_jax.core import paths

PKG = pathlib.Path(__file__).resolve().parent.parent.parent / "dkd_jax"

# The only modules that use os.path, and why: each handles local files by nature (inputs
# given as local files, or files a local-only library reads or writes). A run directory
# (WORKDIR) is never among them: runs/workdir.py reads it, on epath. A stale entry fails too.
ALLOWED = {
  "data/sources.py": "a local data file (--config.data.path) and ../shared/data benchmark files",
  "data/tfds_math.py": "the local source file and its folder as TFDS's manual_dir (an input)",
  "models/hf.py": "HF directories: safetensors reads and writes local files",
  "models/gguf.py": "GGUF files: the gguf package reads and writes local files",
  "models/tokenizer.py": "tokenizer.json / tokenizer_config.json of a local HF directory",
  "models/handoff.py": "export's --out directory (local, for transformers/vLLM/llama.cpp)",
  "models/hub_shapes.py": "the name of a local checkpoint directory (a public shape lookup)",
  "core/paths.py": "free space: statvfs of the nearest existing local ancestor",
  "core/platforms.py": "/sys and /dev probes for local TPU chips and NVIDIA devices",
  "runs/tpu_compile.py": "a local HF directory or GGUF file read for its shapes only",
}


def _os_path_uses(tree) -> list[int]:
  """Lines using os.path (os.path.x, `from os import path`, `import os.path`)."""
  out = []
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and node.attr == "path"
      and isinstance(node.value, ast.Name)
      and node.value.id == "os"
    ):
      out.append(node.lineno)
    elif isinstance(node, ast.ImportFrom) and node.module == "os":
      out += [node.lineno for a in node.names if a.name == "path"]
    elif isinstance(node, ast.Import):
      out += [node.lineno for a in node.names if a.name == "os.path"]
  return out


def _modules():
  return {str(p.relative_to(PKG)): ast.parse(p.read_text()) for p in sorted(PKG.rglob("*.py"))}


def test_os_path_only_where_files_are_local_by_nature():
  uses = {name: lines for name, tree in _modules().items() if (lines := _os_path_uses(tree))}
  unlisted = {f"dkd_jax/{n}": lines for n, lines in uses.items() if n not in ALLOWED}
  assert not unlisted, (
    f"os.path in {unlisted}: a run directory goes through dkd_jax.runs.workdir / "
    "dkd_jax.core.paths.as_path (etils.epath); a truly local file goes in ALLOWED with why"
  )
  stale = sorted(set(ALLOWED) - set(uses))
  assert not stale, f"ALLOWED lists {stale}, which no longer use os.path: drop them"


def test_remote_paths_are_kept_and_local_ones_resolved(tmp_path, monkeypatch):
  assert str(paths.as_path("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path("run")) == str(tmp_path / "run")


def test_atomic_write(tmp_path):
  target = paths.as_path(tmp_path) / "summary.json"
  paths.write_text_atomic(target, "{}")
  paths.write_text_atomic(target, '{"a": 1}')
  assert target.read_text() == '{"a": 1}' and os.listdir(tmp_path) == ["summary.json"]


def _abspath_calls(tree):
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and node.func.attr == "abspath"
    ):
      yield node.lineno


def test_no_path_is_made_absolute_by_string():
  found = [
    f"dkd_jax/{name}:{line}"
    for name, tree in _modules().items()
    if name not in ALLOWED
    for line in _abspath_calls(tree)
  ]
  assert not found, f"use dkd_jax.core.paths.as_path (etils.epath) instead: {found}"


def test_workdir_under_a_file_is_refused_in_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(paths.WorkdirError) as e:
    paths.check_workdir(str(tmp_path / "file" / "run"))
  assert "\n" not in str(e.value) and str(tmp_path / "file" / "run") in str(e.value)


def test_unwritable_workdir_is_refused(tmp_path, monkeypatch):
  def denied(self, *a, **k):
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(type(paths.as_path(tmp_path)), "write_text", denied)
  with pytest.raises(paths.WorkdirError, match="not writable.*Permission denied"):
    paths.check_workdir(str(tmp_path / "run"))


def test_too_little_space_names_the_path_and_the_bytes(tmp_path, monkeypatch):
  import shutil

  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**6))
  with pytest.raises(paths.WorkdirError) as e:
    paths.check_workdir(str(tmp_path / "run"), 5 * 10**6)
  msg = str(e.value)
  assert "\n" not in msg and str(tmp_path / "run") in msg and "5000000 bytes" in msg
  paths.check_workdir(str(tmp_path / "run"), 10**5)  # fits
