"""Evaluation plumbing: grading real benchmark files, the report's plots and table."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dkd_jax.data import sources
from dkd_jax.evals import harness
from dkd_jax.evals import math_eval
from dkd_jax.evals import plots

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.parametrize("name,min_frac", [("gsm8k_test", 1.0), ("math500", 0.95)])
def test_gold_solutions_grade_correct(shared_data, name, min_frac):
  """The verifier accepts each file's own worked solution against its gold answer."""
  records = sources.read_shared(name, shared_data)[:120]
  ok = [math_eval.grade(r["solution"], r["answer"]).correct for r in records]
  assert np.mean(ok) >= min_frac, [r["id"] for r, o in zip(records, ok) if not o][:10]


@pytest.mark.parametrize("name", ["aime24", "amc23"])
def test_competition_answers_self_consistent(shared_data, name):
  records = sources.read_shared(name, shared_data)
  assert all(
    math_eval.grade(f"The answer is \\boxed{{{r['answer']}}}", r["answer"]).correct for r in records
  )
  wrong = [math_eval.grade("\\boxed{1234567}", r["answer"]).correct for r in records]
  assert not any(wrong)


def _fake_run(root, name, prefix, kl, steps, acc, ent, length, cur=False, gen=1.0):
  d = os.path.join(root, name)
  os.makedirs(d)
  ev = {
    "arithmetic": {
      "k": 4,
      "num_problems": 8,
      "avg_at_k": acc,
      "pass_at_k": {"1": acc, "4": min(1.0, acc * 2)},
      "mean_response_len": length,
      "truncation_rate": 0.0,
      "mean_entropy": ent,
      "fkl": 0.1,
      "rkl": 0.2,
    }
  }
  summary = {
    "eval": ev,
    "steps": steps,
    "curriculum_enabled": cur,
    "objective": {"prefix": prefix, "kl": kl, "alpha": 0.2, "estimator": "full_vocab"},
    "generation_cost": {"seconds": {"student": gen, "teacher": 0.0}},
  }
  with open(os.path.join(d, "summary.json"), "w") as f:
    json.dump(summary, f)
  return d


def test_report_writes_plots_and_table(tmp_path):
  runs = [
    _fake_run(tmp_path, "a", "teacher", "forward", 100, 0.3, 0.9, 20),
    _fake_run(tmp_path, "b", "student", "reverse", 100, 0.4, 0.3, 18, gen=5.0),
    _fake_run(tmp_path, "c", "student", "mixed", 100, 0.35, 0.5, 15, cur=True),
    _fake_run(tmp_path, "d", "student", "mixed", 300, 0.45, 0.4, 14, cur=True),
    _fake_run(tmp_path, "e", "student", "mixed", 300, 0.40, 0.4, 30),
  ]
  out = str(tmp_path / "out")
  done = subprocess.run(
    [sys.executable, "-m", "dkd_jax.report", *runs, f"--out={out}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "student/reverse" in done.stdout
  for png in ("accuracy_vs_entropy.png", "accuracy_vs_compute.png", "horizon.png"):
    assert os.path.getsize(os.path.join(out, png)) > 1000
  table = open(os.path.join(out, "results.md")).read()
  assert table.count("\n") == 2 + len(runs) and "student/reverse" in table


def test_report_names_missing_summary(tmp_path):
  with pytest.raises(FileNotFoundError, match="summary.json"):
    plots.load_runs([str(tmp_path)])


def test_markdown_table():
  m = {
    "k": 2,
    "num_problems": 3,
    "avg_at_k": 0.5,
    "pass_at_k": {"1": 0.5, "2": 0.75},
    "mean_response_len": 10.0,
    "truncation_rate": 0.1,
    "mean_entropy": 0.2,
    "fkl": 0.3,
    "rkl": 0.4,
  }
  md = harness.markdown({"gsm8k": m})
  assert "| gsm8k | 3 | 2 | 0.500 | 0.500 | 0.750 |" in md


def test_arithmetic_grades_carry_reasons():
  from dkd_jax.runs import tasks

  ok = tasks._grade_arithmetic("2+3=5\n#### 5", "5")
  assert ok.correct and ok.reason == math_eval.CORRECT
  wrong = tasks._grade_arithmetic("2+3=6\n#### 6", "5")
  assert not wrong.correct and wrong.reason == math_eval.MISMATCH and wrong.extracted == "6"
  assert tasks._grade_arithmetic("", "5").reason == math_eval.NO_ANSWER


def test_one_entropy_estimator_for_point_and_interval():
  """Issue 22: the token-weighted entropy (0.3146) lay outside the interval of the
  per-problem means it was reported with. Point and interval now share one estimator."""
  from dkd_jax.evals import harness

  P, k, T = 50, 4, 12
  rng = np.random.default_rng(0)
  lens = rng.integers(1, T, P * k)
  mask = (np.arange(T)[None] < lens[:, None]).astype(np.float32)
  # long responses are confident (low entropy), short ones are not: token weighting
  # and response weighting then disagree, as in the study
  ent = np.where(lens[:, None] > T // 2, 0.1, 1.0) * mask
  res = {
    "loss_mask": mask,
    "entropies": ent,
    "response_len": lens,
    "truncated": np.zeros(P * k, bool),
  }
  per = harness._per_problem(res, np.zeros(P * k, bool), P, k)
  out = harness.point_and_intervals(per, np.zeros(P), k)
  lo, hi = out["ci95"]["mean_entropy"]
  assert lo <= out["mean_entropy"] <= hi
  per_response = (ent.sum(1) / mask.sum(1)).mean()
  assert out["mean_entropy"] == pytest.approx(per_response)
  token_weighted = ent.sum() / mask.sum()
  assert abs(token_weighted - per_response) > 0.1  # the two estimators differ here
  assert out["mean_response_len"] == pytest.approx(lens.mean())
