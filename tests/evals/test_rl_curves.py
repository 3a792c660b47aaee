"""The RL-init study table: seeds averaged, bootstrap intervals over problems, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np

from dkd_jax.evals import rl_curves

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _eval(correct, k=4, per=True):
  c = np.asarray(correct)
  m = {
    "k": k,
    "num_problems": len(c),
    "avg_at_k": float(np.mean(c) / k),
    "pass_at_k": {"1": 0.0, str(k): float(np.mean(c > 0))},
    "mean_response_len": 10.0,
    "mean_entropy": 0.5,
  }
  if per:
    m["per_problem"] = {
      "correct": (c / k).tolist(),
      "length": [10.0] * len(c),
      "entropy": [0.5] * len(c),
    }
  return {"arithmetic": m}


def _write(root, arm, seed, curve, per=True):
  d = os.path.join(root, arm, f"seed{seed}")
  os.makedirs(d)
  with open(os.path.join(d, "rl_evals.jsonl"), "w") as f:
    for step, correct in curve.items():
      f.write(json.dumps({"step": step, "eval": _eval(correct, per=per)}) + "\n")


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_problems():
  rng = np.random.default_rng(0)
  small = rng.integers(0, 2, (3, 20)).astype(float)
  big = rng.integers(0, 2, (3, 2000)).astype(float)
  for v in (small, big):
    mean, lo, hi = rl_curves.bootstrap(v)
    assert lo <= mean <= hi and mean == v.mean()
  assert np.diff(rl_curves.bootstrap(big)[1:]) < 0.3 * np.diff(rl_curves.bootstrap(small)[1:])
  assert rl_curves.bootstrap(np.ones((3, 5)))[1:] == (1.0, 1.0)


def test_study_table_and_cli(tmp_path):
  root = str(tmp_path / "rl")
  for seed in range(3):
    _write(root, "rev_student", seed, {0: [0, 1, 4, 2], 10: [1, 2, 4, 4]})
    _write(root, "undistilled", seed, {0: [0, 0, 0, 0], 10: [0, 1, 0, 0]}, per=seed != 2)
  study = rl_curves.load_study(root)
  row = study["rev_student"][10]
  assert row["seeds"] == 3 and row["avg_at_k"][0] == np.mean([1, 2, 4, 4]) / 4
  assert row["pass_at_k"][0] == 1.0
  assert study["undistilled"][10]["avg_at_k"][1] is None  # a seed without per-problem data
  table = rl_curves.markdown(study)
  assert "| rev_student | 10 | 3 | 0.688 [" in table and "[n/a]" in table
  out = str(tmp_path / "out")
  done = subprocess.run(
    [sys.executable, "-m", "dkd_jax.rl_report", root, f"--out={out}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.path.exists(os.path.join(out, "rl_curves.png"))
  assert "rev_student" in open(os.path.join(out, "rl_results.md")).read()


def test_gains_are_paired_end_minus_start_and_differences_get_verdicts(tmp_path):
  root = str(tmp_path / "rl")
  for seed in range(3):
    # every problem improves by one of 4 samples in 'rev_student'; nothing moves in 'flat'
    _write(
      root, "rev_student", seed, {0: [0, 1, 2, 3] * 10, 5: [0, 1, 2, 3] * 10, 10: [1, 2, 3, 4] * 10}
    )
    _write(root, "flat", seed, {0: [0, 1, 2, 3] * 10, 10: [0, 1, 2, 3] * 10})
  g = rl_curves.gains(rl_curves.load_curves(root))
  mean, lo, hi = g["arms"]["rev_student"]["gain"]
  assert mean == 0.25 and lo == hi == 0.25  # the same +1/4 on every problem
  assert g["arms"]["flat"]["gain"] == (0.0, 0.0, 0.0)
  assert g["arms"]["rev_student"]["start"] == np.mean([0, 1, 2, 3]) / 4
  assert g["pairs"][("flat", "rev_student")] == (-0.25, -0.25, -0.25)
  table = rl_curves.gains_markdown(rl_curves.load_curves(root))
  assert "| flat - rev_student | -0.250 [-0.250, -0.250] | b gains more |" in table
  assert "| rev_student | 3 | 0.375 | 0.500 | 0.250 [0.250, 0.250] |" in table
