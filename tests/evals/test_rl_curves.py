"""The RL-init study's report: seed means with t-intervals over seeds, per-seed gains,
the declared RL claims (paired over seeds, Holm), informative groups, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dkd_jax.evals import preregistration as plan
from dkd_jax.evals import rl_curves

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _eval(correct, k=4, per=True, length=10.0):
  c = np.asarray(correct, float)
  m = {
    "k": k,
    "num_problems": len(c),
    "avg_at_k": float(np.mean(c) / k),
    "pass_at_k": {"1": 0.0, str(k): float(np.mean(c > 0))},
    "mean_response_len": float(length),
    "mean_entropy": 0.5,
  }
  if per:
    m["per_problem"] = {
      "correct": (c / k).tolist(),
      "length": [float(length)] * len(c),
      "entropy": [0.5] * len(c),
    }
  return {"chain": m}


def _write(root, arm, seed, curve, per=True, tied=None, P=8):
  d = os.path.join(root, arm, f"seed{seed}")
  os.makedirs(d)
  with open(os.path.join(d, "rl_evals.jsonl"), "w") as f:
    for step, v in curve.items():
      correct, length = v if isinstance(v, tuple) else (v, 10.0)
      f.write(json.dumps({"step": step, "eval": _eval(correct, per=per, length=length)}) + "\n")
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump({"rl": {"prompts_per_batch": P}}, f)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for step, t in enumerate(tied or [], 1):
      f.write(json.dumps({"step": step, "tied_groups": t}) + "\n")


def test_intervals_are_over_seeds_not_problems(tmp_path):
  """Issue 22: fwd_teacher's RL length change read -16.6 [-17.3, -15.9] over problems
  while its seeds were -29.1, -37.4 and +16.5. Over seeds the interval spans 0."""
  root = str(tmp_path / "rl")
  for seed, delta in enumerate((-29.1, -37.4, 16.5)):
    _write(root, "fwd_teacher", seed, {0: ([1, 2] * 50, 60.0), 40: ([1, 2] * 50, 60.0 + delta)})
  curves = rl_curves.load_curves(root)
  g = rl_curves.gains(curves, "length")["fwd_teacher"]
  assert g["per_seed"] == pytest.approx([-29.1, -37.4, 16.5])
  mean, lo, hi = g["gain"]
  assert mean == pytest.approx(-16.667, abs=1e-3) and lo < 0 < hi
  row = rl_curves.load_study(root)["fwd_teacher"][40]
  assert row["seeds"] == 3 and row["length"][1] < row["length"][0] < row["length"][2]


def test_study_table_and_cli(tmp_path):
  root = str(tmp_path / "rl")
  for seed in range(3):
    _write(root, "rev_student", seed, {0: [0, 1, 4, 2], 10: [1, 2, 4, 4 - seed]}, tied=[0.5] * 8)
    _write(
      root, "warm_start", seed, {0: [0, 0, 0, 0], 10: [0, 1, 0, 0]}, per=seed != 2, tied=[1.0] * 8
    )
  study = rl_curves.load_study(root)
  row = study["rev_student"][10]
  assert row["avg_at_k"][0] == pytest.approx(np.mean([(11 - s) / 16 for s in range(3)]))
  assert row["pass_at_k"][0] == 1.0
  # a seed without per-problem data contributes its summary figure
  assert study["warm_start"][10]["avg_at_k"][0] == pytest.approx(1 / 16)
  table = rl_curves.markdown(study)
  assert "| rev_student | 10 | 3 | 0.625 [" in table
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
  text = open(os.path.join(out, "rl_results.md")).read()
  assert "Declared RL claims" in text and "Informative GRPO groups" in text
  assert "| rev_student | 3 | 4.00, 4.00, 4.00 |" in text
  claims = json.load(open(os.path.join(out, "rl_claims.json")))
  r3 = next(c for c in claims if c["id"] == "R3")
  # the warm start's groups were all tied at its start: GRPO had nothing to learn from
  assert r3["seeds"] == [0, 1, 2]
  assert r3["verdict"] == "not tested (warm_start: more than 50% of groups tied at start)"
  r1 = next(c for c in claims if c["id"] == "R1")
  assert r1["verdict"] == "not tested (arm fwd_student was not run)"


def test_rl_claims_paired_over_seeds_with_holm(tmp_path):
  root = str(tmp_path / "rl")
  rng = np.random.default_rng(0)
  for seed in range(4):
    base = [1, 2] * 50
    up = [2, 3] * 50  # +0.25 Avg@k on every problem
    jitter = [int(x) for x in rng.integers(0, 2, 100)]
    _write(root, "fwd_student", seed, {0: base, 20: up})
    _write(root, "rev_student", seed, {0: base, 20: [b + j * 0 for b, j in zip(base, jitter)]})
    _write(root, "mix_a50", seed, {0: base, 20: base})  # identical to rev_student
    _write(root, "warm_start", seed, {0: [0] * 100, 20: [0] * 100})
  res = {r["id"]: r for r in rl_curves.judge(rl_curves.load_curves(root))}
  assert res["R1"]["per_seed"] == pytest.approx([0.25] * 4) and res["R1"]["verdict"] == "appeared"
  assert res["R2"]["verdict"] == "not tested (the arms are identical on every seed)"
  assert res["R2"]["p"] == 1.0
  # R3/R4: final values above the warm start's (0): certain on every seed
  assert res["R4"]["verdict"] == "appeared"
  ps = [res[c.id]["p"] for c in plan.RL_CLAIMS]
  from dkd_jax.evals import stats

  assert [res[c.id]["p_holm"] for c in plan.RL_CLAIMS] == pytest.approx(stats.holm(ps))


def test_informative_groups_per_step_and_the_start_cap(tmp_path):
  root = str(tmp_path / "rl")
  _write(root, "rev_student", 0, {0: [1]}, tied=[1.0, 0.875, 0.75, 1.0, 1.0, 0.5], P=8)
  _write(root, "fwd_student", 0, {0: [1]}, tied=[0.25] * 6, P=8)
  info = rl_curves.informative(root)
  r = info["rev_student"]
  assert r["per_step"][0] == pytest.approx(np.mean([0, 1, 2, 0, 0, 4]))
  assert r["tied_at_start"][0] == pytest.approx(0.925) and not r["start_ok"]
  assert info["fwd_student"]["start_ok"]
  assert "| rev_student | 1 | 1.17 | 0.93 | no |" in rl_curves.informative_markdown(info)
