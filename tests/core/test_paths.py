"""Workdirs are paths, not strings: `gs://` survives, and no module makes a path absolute
by string (`os.path.abspath('gs://b/run')` is `<cwd>/gs:/b/run`)."""

import ast
import os
import pathlib

import pytest

from dkd_jax.core import paths

PKG = pathlib.Path(__file__).resolve().parent.parent.parent / "dkd_jax"

# Where os.path.abspath is still right: paths that are always local by construction.
ALLOWED = {
  "data/tfds_math.py": "the local source file's folder as TFDS's manual_dir (an input)",
  "models/hf.py": "write_hf: safetensors writes local files (export / GGUF conversion)",
  "models/gguf.py": "write_gguf: the gguf package writes a local file",
  "runs/pair.py": "a .gguf checkpoint is a local input file",
  "runs/rl_loop.py": "symlinks a source run's converted HF dirs (local)",
}


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
    f"dkd_jax/{p.relative_to(PKG)}:{line}"
    for p in sorted(PKG.rglob("*.py"))
    if str(p.relative_to(PKG)) not in ALLOWED
    for line in _abspath_calls(ast.parse(p.read_text()))
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
