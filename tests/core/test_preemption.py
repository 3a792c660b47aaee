"""Preemption: SIGTERM stops the run at an agreed step with a checkpoint and exit 0, and
rerunning the same command finishes the uninterrupted run exactly (benchmarks/faults.py
scenarios at test size); the guard itself in-process."""

import os
import signal

import pytest

from dkd_jax.core import preemption

STEPS = 12


def test_guard_records_signals_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Guard() as guard:
    assert not guard.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # a second one only adds to the record
    assert guard.should_stop(2) and guard.should_stop(3)
    assert guard.received == ["SIGTERM", "SIGTERM"] and "SIGTERM on process 0" in guard.reason
  assert signal.getsignal(signal.SIGTERM) == before


def test_guard_saves_and_names_the_step(tmp_path):
  class Ckpt:
    directory = tmp_path
    saved, waited = [], 0

    def maybe_save(self, step, state, host, force=False):
      self.saved.append((step, force))

    def wait(self):
      self.waited += 1

  ck, lines = Ckpt(), []
  with preemption.Guard() as guard:
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.should_stop(7)
    guard.save_and_log(ck, 7, {}, {}, lines.append)
  assert ck.saved == [(7, True)] and ck.waited == 1
  assert len(lines) == 1 and "after step 7" in lines[0] and "resume" in lines[0]


def test_cross_layout_tolerance_reaches_inside_lists(fault_bench):
  """A 2-process eval's confidence intervals differ from the 1-process one in the 7th
  digit; the tolerance must cover list entries, and exact mode must still see them."""
  one = {"ci95": {"mean_entropy": [3.0946266651, 3.1123712062]}, "k": 1}
  two = {"ci95": {"mean_entropy": [3.0946266651, 3.1123707294]}, "k": 1}
  assert fault_bench._same(one, two, 1e-5)
  assert not fault_bench._same(one, two, 0.0)
  assert not fault_bench._same(one, {"ci95": {"mean_entropy": [3.09]}, "k": 1}, 1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fault_bench):
  root = str(tmp_path_factory.mktemp("preempt"))
  teacher = fault_bench.teacher_cache(root)
  return root, teacher, fault_bench.baseline(root, teacher, STEPS)


def test_sigterm_checkpoints_exits_0_and_resumes_exactly(runs, fault_bench):
  root, teacher, base = runs
  row = fault_bench.sigterm(root, teacher, base, steps=STEPS)
  assert row["data_lost"] == "none" and row["rows_duplicated"] == 0 and row["steps_lost"] == 0


def test_sigterm_to_process_1_of_2_stops_both_at_one_step(runs, fault_bench):
  """Only process 1 gets the signal; both stop at the same step (the checkpoint holds
  both processes' shards), exit 0, and the resumed 2-process run matches the
  uninterrupted 1-process one (to the cross-layout tolerance of test_multihost)."""
  root, teacher, base = runs
  row = fault_bench.sigterm(root, teacher, base, steps=STEPS, nproc=2, rtol=1e-5)
  assert "process 1 of 2 only" in row["fault"]
  assert row["data_lost"] == "none" and row["rows_duplicated"] == 0 and row["steps_lost"] == 0
  step = int(row["did"].split("checkpoint step ")[1].split(";")[0])
  state_dir = os.path.join(root, "sigterm_2p", "checkpoints", str(step), "state")
  assert os.path.isdir(state_dir)


def test_kill9_during_async_saves_resumes_from_a_complete_step(runs, fault_bench):
  """kill -9 while a checkpoint write is in flight, twice: each rerun resumes from the
  newest committed step; the finished run equals the uninterrupted one, rows once."""
  root, teacher, base = runs
  row = fault_bench.kill9_during_saves(root, teacher, base, steps=STEPS, kills=2, seed=0)
  assert row["data_lost"] == "none" and row["rows_duplicated"] == 0, row
  ok, checked = row["did"].split(" reruns resumed")[0].split("; ")[-1].split("/")
  assert ok == checked and int(checked) >= 1, row
