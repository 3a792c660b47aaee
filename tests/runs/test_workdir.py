"""runs/workdir.py is the one module that reads a run directory, on etils.epath: a GRPO
run resolves its config from a `gs://` run directory (served by the epath mock), and
adopts its teacher and converted checkpoints from there."""

import json

import pytest

from configs import grpo
from configs import rev_student
from dkd_jax.runs import rl_loop
from dkd_jax.runs import workdir as run_dir


def _fake_run(root, **eval_overrides) -> dict:
  """A run directory without training: the saved config, checkpoints/, a teacher/ cache
  and a converted teacher_hf/ (what resolve_config and adopt_artifacts read)."""
  c = rev_student.get_config("tiny")
  c.data.task, c.eval.datasets = "chain", ("chain",)
  for k, v in eval_overrides.items():
    c.eval[k] = v
  (root / "checkpoints" / "2").mkdir(parents=True)
  (root / "config.json").write_text(json.dumps(c.to_dict()))
  (root / "teacher" / "params").mkdir(parents=True)
  (root / "teacher" / "teacher_meta.json").write_text("{}")
  (root / "teacher" / "params" / "shard").write_bytes(b"\x00\x01")
  (root / "student_warm_start").mkdir()
  (root / "student_warm_start" / "meta.json").write_text('{"steps": 1600}')
  (root / "teacher_hf").mkdir()
  (root / "teacher_hf" / "config.json").write_text("{}")
  (root / "teacher_hf" / "model.safetensors").write_bytes(b"w")
  return c.to_dict()


def test_kinds_of_directories(tmp_path, mock_gcs):
  bucket, root = mock_gcs
  _fake_run(root / "run")
  assert run_dir.is_run_dir(f"{bucket}/run")
  assert not run_dir.is_run_dir(f"{bucket}/run/teacher_hf")
  assert run_dir.is_hf_dir(f"{bucket}/run/teacher_hf") and run_dir.has_config(f"{bucket}/run")
  assert not run_dir.is_run_dir(f"{bucket}/nothing") and run_dir.latest_step(tmp_path) is None
  assert run_dir.load_config(f"{bucket}/run").eval.datasets == ("chain",)  # JSON list -> tuple
  with pytest.raises(FileNotFoundError, match="is missing: is .* a run directory"):
    run_dir.load_config(f"{bucket}/nothing")


def test_grpo_resolves_its_config_from_a_remote_run_directory(mock_gcs):
  bucket, root = mock_gcs
  _fake_run(root / "run", k=8, num_problems=1000)
  c = grpo.get_config("tiny")
  c.init.checkpoint = f"{bucket}/run"
  resolved = rl_loop.resolve_config(c)
  assert resolved.data.task == "chain" and tuple(resolved.eval.datasets) == ("chain",)
  assert (resolved.eval.k, resolved.eval.num_problems) == (8, 1000)
  assert resolved.rl.to_dict() == c.rl.to_dict()  # the RL block stays the GRPO file's
  c.init.checkpoint = f"{bucket}/missing"
  with pytest.raises(FileNotFoundError, match="neither a run directory"):
    rl_loop.resolve_config(c)


def test_adopt_artifacts_copies_from_a_remote_run(tmp_path, mock_gcs):
  bucket, root = mock_gcs
  _fake_run(root / "run")
  work = tmp_path / "grpo"
  work.mkdir()
  run_dir.adopt_artifacts(f"{bucket}/run", work)
  assert (work / "teacher" / "params" / "shard").read_bytes() == b"\x00\x01"
  # the warm-start cache too: without it the GRPO run redid the student's SFT
  assert (work / "student_warm_start" / "meta.json").read_text() == '{"steps": 1600}'
  # remote source: the converted checkpoint is copied (a symlink cannot point into gs://)
  assert not (work / "teacher_hf").is_symlink()
  assert (work / "teacher_hf" / "model.safetensors").read_bytes() == b"w"
  assert not (work / "student_hf").exists()


def test_adopt_artifacts_links_local_converted_checkpoints(tmp_path):
  _fake_run(tmp_path / "run")
  work = tmp_path / "grpo"
  work.mkdir()
  run_dir.adopt_artifacts(tmp_path / "run", work)
  assert (work / "teacher_hf").is_symlink() and (work / "teacher" / "teacher_meta.json").exists()
  run_dir.adopt_artifacts(tmp_path / "run", work)  # again: nothing to do, nothing raised
