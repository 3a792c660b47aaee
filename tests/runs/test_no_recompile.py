"""A run compiles each function once: nothing after its first step (but the train step at
a length bucket it has not met: once per bucket), nothing in a second evaluation.
Compiles are counted by jax's backend-compile event (`core.compiles`), which fires once
per executable XLA builds, whatever made the function (a fresh jit per call, a changed
shape, a changed static argument)."""

import importlib.util
import os
import shutil

import pytest

from dkd_jax.core import compiles
from dkd_jax.runs import distill_loop as run_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STEPS = 6
OVERRIDES = {
  "train.steps": STEPS,
  "train.ckpt_every": 100,
  "teacher.bootstrap_steps": 20,
  "eval.num_problems": 4,
  "eval.kl_problems": 4,
  "eval.k": 2,
}


def config(name, **overrides):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("chain,tiny")  # teacher prefixes are then teacher rollouts (cached)
  for key, value in {**OVERRIDES, **overrides}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def run_counting(c, workdir, monkeypatch):
  """Runs `c`; returns (compiles per step, each step's batch width (its length bucket),
  compiles per evaluation call, the compiles of evaluating the run's student once more,
  as the run evaluated it)."""
  per_step, per_eval, calls, widths = [], [], [], []
  log = compiles.CompileLog()
  step, evaluate = run_lib.Loop.step, run_lib.harness.evaluate_run

  def counted_step(self, i):
    mark = log.mark()
    out = step(self, i)
    per_step.append(log.since(mark))
    widths.append(out["seq_len"])
    return out

  def counted_eval(*args, **kwargs):
    mark = log.mark()
    out = evaluate(*args, **kwargs)
    per_eval.append(log.since(mark))
    calls.append((args, kwargs))
    return out

  monkeypatch.setattr(run_lib.Loop, "step", counted_step)
  monkeypatch.setattr(run_lib.harness, "evaluate_run", counted_eval)
  with log:
    run_lib.run(c, workdir)
    mark = log.mark()
    args, kwargs = calls[0]
    evaluate(*args[:5], lambda *_: None, *args[6:], **kwargs)  # the run's log is closed
    again = log.since(mark)
  return per_step, widths, per_eval, again


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """The chain,tiny teacher, bootstrapped once (by the student-prefix test's run if it
  ran first); later runs copy it into their workdir."""
  return str(tmp_path_factory.mktemp("chain_teacher"))


def _workdir(tmp_path, teacher_dir):
  work = str(tmp_path / "run")
  if os.listdir(teacher_dir):
    shutil.copytree(teacher_dir, os.path.join(work, "teacher"))
  return work


def _keep_teacher(work, teacher_dir):
  if not os.listdir(teacher_dir):
    shutil.copytree(os.path.join(work, "teacher"), teacher_dir, dirs_exist_ok=True)


@pytest.mark.parametrize(
  "name,overrides",
  [
    ("rev_student.py", {}),  # student prefixes: student rollouts every step
    ("fwd_teacher.py", {}),  # teacher prefixes: teacher rollouts (rollout_cached)
    ("kl_mix.py", {"objective.prefix": "mixed"}),  # both, alpha on a schedule
  ],
  ids=["student_prefix", "teacher_prefix", "mixed_prefix"],
)
def test_nothing_compiles_after_the_first_step(name, overrides, tmp_path, teacher_dir, monkeypatch):
  work = _workdir(tmp_path, teacher_dir)
  per_step, widths, per_eval, again = run_counting(config(name, **overrides), work, monkeypatch)
  _keep_teacher(work, teacher_dir)
  assert len(per_step) == STEPS
  # (An earlier test in this process may have compiled the shared engine functions.)
  assert per_step[0], "the first step compiled nothing: the compile counter is broken"
  # A step whose batch falls in a length bucket not met before compiles the train step
  # once more, and nothing else.
  new_width = [w not in widths[:i] for i, w in enumerate(widths)]
  later = {
    i + 1: names
    for i, names in enumerate(per_step)
    if i and (names if not new_width[i] else [n for n in names if n != "train_step"])
  }
  assert not later, f"compiled after the first step (step: functions): {later}"
  bucket_compiles = [len(names) for i, names in enumerate(per_step) if i and new_width[i]]
  assert all(n <= 1 for n in bucket_compiles), per_step
  assert per_eval, "the run evaluated nothing"
  assert not again, f"a second evaluation of the same student compiled {again}"
