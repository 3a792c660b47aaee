"""A run's faults end it cleanly (issue 23): NaN/inf from the teacher or a NaN student loss
mid-run stop naming the step and metric with the last good checkpoint still the latest; a
checkpoint write failing with ENOSPC stops with one line and a rerun resumes from the
previous step; too little disk space is refused before anything compiles."""

import errno
import importlib.util
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from dkd_jax.core import checkpointing
from dkd_jax.core import metrics_log
from dkd_jax.core import paths
from dkd_jax.runs import distill_loop as run_lib
from dkd_jax.train import step as train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SMALL = {
  "teacher.bootstrap_steps": 30,
  "eval.num_problems": 1,
  "eval.k": 1,
  "eval.teacher": False,
  "data.arithmetic.num_train": 256,
}


def config(**overrides):
  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(ROOT, "configs", "rev_student.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("tiny")
  for key, value in {**SMALL, **overrides}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  work = str(tmp_path_factory.mktemp("teacher"))
  run_lib.run(config(**{"train.steps": 1}), work)
  return os.path.join(work, "teacher")


def _work(tmp_path, teacher):
  work = str(tmp_path / "run")
  shutil.copytree(teacher, os.path.join(work, "teacher"))
  return work


def _steps(work):
  return [r["step"] for r in metrics_log_rows(work)]


def metrics_log_rows(work):
  import json

  return [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]


@pytest.mark.parametrize("fault", ["teacher_nan", "teacher_inf", "student_nan"])
def test_bad_numbers_mid_run_stop_and_keep_the_last_good_checkpoint(
  fault, tmp_path, teacher, monkeypatch
):
  real = train.jit_train_step

  def patched(*a, **k):
    fn, calls = real(*a, **k), [0]

    def step(state, batch, teacher_params):
      calls[0] += 1
      if calls[0] == 3:  # step 3: after checkpoint 2 was written
        if fault == "student_nan":
          state = dict(state, params=jax.tree.map(lambda x: x * jnp.nan, state["params"]))
        else:
          bad = jnp.nan if fault == "teacher_nan" else jnp.inf
          teacher_params = jax.tree.map(lambda x: x * bad, teacher_params)
      return fn(state, batch, teacher_params)

    return step

  monkeypatch.setattr(train, "jit_train_step", patched)
  work = _work(tmp_path, teacher)
  with pytest.raises(metrics_log.NonFiniteMetric, match=r"step 3: metric '\w+'"):
    run_lib.run(config(**{"train.steps": 5, "train.ckpt_every": 2}), work)
  ck = checkpointing.RunCheckpointer(os.path.join(work, "checkpoints"), every=1, read_only=True)
  assert ck.all_steps() == [2] and ck.latest_step() == 2  # the last good one, intact
  ck.close()
  assert _steps(work) == [1, 2]
  log = open(os.path.join(work, "log.txt")).read()
  assert log.count("step 3: metric") == 1


def test_enospc_mid_run_stops_in_one_line_and_a_rerun_resumes(tmp_path, teacher, monkeypatch):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

  real, calls = jh.JsonCheckpointHandler._save_fn, [0]

  async def fails_second(self, x, directory):
    calls[0] += 1
    if calls[0] == 2:
      raise OSError(errno.ENOSPC, "No space left on device")
    return await real(self, x, directory)

  monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", fails_second)
  work = _work(tmp_path, teacher)
  c = config(**{"train.steps": 4, "train.ckpt_every": 1})
  with pytest.raises(checkpointing.CheckpointWriteError) as e:
    run_lib.run(c, work)
  msg = str(e.value)
  assert "\n" not in msg and "step 2" in msg and "No space left" in msg and "step 1" in msg
  assert getattr(e.value, "logged", False)
  assert open(os.path.join(work, "log.txt")).read().count("No space left") == 1
  assert sorted(n for n in os.listdir(os.path.join(work, "checkpoints")) if n.isdigit()) == ["1"]
  monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", real)
  run_lib.run(c, work)  # the disk has room again: resume from the intact step 1
  assert "resumed from step 1" in open(os.path.join(work, "log.txt")).read()
  assert _steps(work) == [1, 2, 3, 4]


def test_too_little_space_is_refused_before_anything_compiles(tmp_path, monkeypatch):
  monkeypatch.setattr(paths, "free_bytes", lambda p: 1000)
  monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before the check"))
  work = str(tmp_path / "run")
  with pytest.raises(paths.WorkdirError) as e:
    run_lib.run(config(), work)
  msg = str(e.value)
  assert "\n" not in msg and work in msg and "1000 B free" in msg and "bytes)" in msg
  assert not os.path.exists(os.path.join(work, "log.txt"))
