"""The study report: seeds aggregated per arm, paired claims with verdicts, plots."""

import json
import os

import numpy as np

from dkd_jax.evals import study


def _run(root, arm, seed, correct_P, length_P, entropy_P, steps=100):
  d = os.path.join(root, f"{arm}_s{seed}")
  os.makedirs(d)
  k = 8
  per = {
    "correct": list(correct_P),
    "length": list(length_P),
    "entropy": list(entropy_P),
    "truncated": [0.0] * len(correct_P),
    "pass_at_8": list(np.minimum(1, 4 * correct_P)),
  }
  ev = {"k": k, "num_problems": len(correct_P), "per_problem": per, "fkl": 0.1 + seed, "rkl": 0.2}
  json.dump(
    {
      "eval": {"chain": ev},
      "steps": steps,
      "compute": {"generated_tokens": 1e5, "train_flops": 1e12},
    },
    open(os.path.join(d, "summary.json"), "w"),
  )
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for s in range(1, steps + 1):
      f.write(json.dumps({"step": s, "response_len": 50.0 + s, "ent_s": 1.0 - s / 200}) + "\n")
  return d


def test_study_report_aggregates_seeds_and_judges_claims(tmp_path):
  rng = np.random.default_rng(0)
  P = 300
  base = rng.random(P) * 0.5
  dirs = []
  for seed in range(3):
    noise = rng.normal(0, 0.01, P)
    dirs.append(
      _run(tmp_path, "rev_student", seed, base + 0.1 + noise, np.full(P, 40.0), np.full(P, 0.3))
    )
    dirs.append(
      _run(tmp_path, "fwd_student", seed, base + noise, np.full(P, 60.0), np.full(P, 0.8))
    )
  arms = study.load_arms(dirs)
  assert sorted(arms) == ["fwd_student", "rev_student"] and len(arms["rev_student"]) == 3
  s = study.arm_stats(arms["rev_student"])
  mean, lo, hi = s["avg_at_k"]
  assert lo < mean < hi and abs(mean - (base.mean() + 0.1)) < 0.01
  assert s["fkl"] == (1.1, 0.1, 2.1)  # seed mean, min, max
  text = study.write_study_report(dirs, str(tmp_path / "out"))
  claims = open(tmp_path / "out" / "claims.md").read()
  row = [
    r
    for r in claims.splitlines()
    if r.startswith("| direction: reverse KL gains accuracy (student")
  ][0]
  assert row.endswith("| appeared |"), row
  row = [r for r in claims.splitlines() if "lower entropy (student" in r][0]
  assert row.endswith("| appeared |"), row
  assert "| not run |" in claims  # arms that were not run are named as such
  assert "rev_student | 3 | 100 |" in text
  for png in ("tradeoffs.png", "training_curves.png", "horizon.png"):
    assert os.path.getsize(tmp_path / "out" / png) > 1000


def test_verdicts():
  assert study.verdict({"verdict": "a>b"}, "+") == "appeared"
  assert study.verdict({"verdict": "a>b"}, "-") == "did not"
  assert study.verdict({"verdict": "inconclusive"}, "+") == "inconclusive"
  assert study.verdict(None, "+") == "not run"


def test_a_verdict_needs_every_seed_on_its_side(tmp_path):
  assert study.verdict({"verdict": "a>b"}, "+", [0.01, 0.02, 0.005]) == "appeared"
  assert (
    study.verdict({"verdict": "a>b"}, "+", [0.01, -0.02, 0.005]) == "inconclusive (seeds disagree)"
  )
  P = 400
  rng = np.random.default_rng(1)
  base = rng.random(P) * 0.5
  dirs = []
  # seeds 0 and 1: a ahead by 0.05; seed 2: a behind by 0.01 -> the pooled interval
  # excludes 0, the seeds do not agree
  for seed, shift in ((0, 0.05), (1, 0.05), (2, -0.01)):
    dirs.append(
      _run(tmp_path, "rev_student", seed, base + shift, np.full(P, 40.0), np.full(P, 0.3))
    )
    dirs.append(_run(tmp_path, "fwd_student", seed, base, np.full(P, 60.0), np.full(P, 0.8)))
  arms = study.load_arms(dirs)
  assert np.allclose(
    study.seed_diffs(arms, "rev_student", "fwd_student", "correct"), [0.05, 0.05, -0.01]
  )
  claims = study.claims_table(arms, [("c", "rev_student", "fwd_student", "correct", "+")])
  assert "| +0.0500, +0.0500, -0.0100 | inconclusive (seeds disagree) |" in claims
