"""The study report on synthetic run directories: seed-level intervals, the declared
claims (paired t-test over seeds, Holm, not tested), study.json, the CLI steps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dkd_jax.evals import preregistration as plan
from dkd_jax.evals import stats
from dkd_jax.evals import study

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
P = 200


def _ev(correct_P, length_P, entropy_P):
  per = {
    "correct": list(map(float, correct_P)),
    "length": list(map(float, length_P)),
    "entropy": list(map(float, entropy_P)),
    "truncated": [0.0] * len(correct_P),
    "pass_at_8": list(np.minimum(1.0, 4 * np.asarray(correct_P))),
  }
  return {
    "chain": {"k": 8, "num_problems": len(correct_P), "per_problem": per, "fkl": 0.1, "rkl": 0.2}
  }


def _run(
  root, arm, seed, acc=0.3, length=50.0, entropy=0.5, steps=30, decisions=(), alpha=0.0, curve=True
):
  """A finished run: per-problem values around the given means (the same problems for
  every run), a metrics log, evaluations along the trajectory."""
  d = os.path.join(root, f"{arm}_s{seed}")
  os.makedirs(d)
  wiggle = np.random.default_rng(1000 + seed).normal(0, 0.01, P)  # problem x seed noise
  base = np.linspace(0.0, 0.6, P)
  mk = lambda a, n, h: _ev(np.clip(base + a - 0.3 + wiggle, 0, 1), np.full(P, n), np.full(P, h))
  summary = {
    "eval": mk(acc, length, entropy),
    "steps": steps,
    "seed": seed,
    "objective": {"alpha": 0.0},
    "compute": {"generated_tokens": 1e5, "train_flops": 1e12},
    "curriculum": list(decisions),
  }
  json.dump(summary, open(os.path.join(d, "summary.json"), "w"))
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for s in range(1, steps + 1):
      f.write(
        json.dumps(
          {"step": s, "response_len": length, "ent_s": entropy, "alpha": alpha * s / steps}
        )
        + "\n"
      )
  if curve:
    with open(os.path.join(d, "evals.jsonl"), "w") as f:
      for s in (0, steps // 2):
        ev = mk(acc * s / steps + 0.05, length, entropy + 0.2)
        f.write(json.dumps({"step": s, "eval": ev}) + "\n")
  return d


ADVANCE = [{"step": 10, "action": "advance"}, {"step": 20, "action": "hold"}]


def _study(root, seeds=plan.SEEDS, curriculum_advances=True, adaptive_moves=False):
  """rev_student beats fwd_student in Avg@k on every seed (+0.05) at lower entropy;
  mix_a50 lifts entropy by a seed-dependent amount; the curriculum arm's seeds advance
  (or not); mix_adaptive is rev_student bit for bit (its α never moved)."""
  dirs = []
  for s in seeds:
    dirs.append(_run(root, "warm_start", s, acc=0.15, entropy=1.0, steps=1, curve=False))
    dirs.append(_run(root, "fwd_student", s, acc=0.30, entropy=1.2))
    dirs.append(_run(root, "rev_student", s, acc=0.35, entropy=0.6, length=70))
    dirs.append(_run(root, "rev_teacher", s, acc=0.35 + 0.03 * (s % 2 - 0.5), entropy=0.6))
    dirs.append(_run(root, "mix_a50", s, acc=0.35, entropy=0.6 + 0.1 * (s + 1), length=60))
    dirs.append(
      _run(
        root,
        "curriculum",
        s,
        acc=0.36,
        length=40,
        decisions=ADVANCE if curriculum_advances or s else (),
      )
    )
    dirs.append(
      _run(
        root,
        "mix_adaptive",
        s,
        acc=0.35,
        entropy=0.6,
        length=70,
        alpha=0.3 if adaptive_moves else 0.0,
      )
    )
  return dirs


def test_claims_get_seed_level_verdicts(tmp_path):
  arms = study.load_arms(_study(str(tmp_path)))
  res = {r["id"]: r for r in study.judge(arms)}
  d1 = res["D1"]
  assert d1["per_seed"] == pytest.approx([0.05] * 4, abs=2e-4) and d1["seeds"] == [0, 1, 2, 3]
  assert d1["verdict"] == "appeared" and d1["test"]["df"] == 3
  assert res["D2"]["verdict"] == "appeared"  # entropy down, expected '-'
  # every seed up, t = 3.87 on 3 df (p = 0.03): significant alone, not after Holm
  assert min(res["M1"]["per_seed"]) > 0 and res["M1"]["p"] < 0.05 <= res["M1"]["p_holm"]
  assert res["M1"]["verdict"] == "inconclusive"
  # prefix: rev_student - rev_teacher alternates in sign across seeds: inconclusive
  assert res["P1"]["verdict"] == "inconclusive"
  # not run -> not tested, and Holm treats it as p = 1
  assert res["H1"]["verdict"] == "not tested (arm rev_student_short was not run)"
  assert res["H1"]["p"] == 1.0
  # the adaptive arm identical to rev_student on every seed, α never moved
  assert res["A1"]["verdict"].startswith("not tested (mix_adaptive: the adaptive alpha never")
  # Holm within each family
  for fam, claims in plan.families().items():
    ps = [res[c.id]["p"] for c in claims]
    assert [res[c.id]["p_holm"] for c in claims] == pytest.approx(stats.holm(ps)), fam
  groups = {g["group"]: g["verdict"] for g in study.group_verdicts(list(res.values()))}
  assert groups["direction"] == "appeared" and groups["horizon"] == "not tested"
  assert groups["prefix"] == "inconclusive"


def test_a_curriculum_that_never_advanced_on_a_seed_is_not_tested(tmp_path):
  arms = study.load_arms(_study(str(tmp_path), curriculum_advances=False))
  res = {r["id"]: r for r in study.judge(arms)}
  assert (
    res["C1"]["verdict"] == "not tested (curriculum: the curriculum never engaged on seed(s) [0])"
  )
  arms = study.load_arms(_study(str(tmp_path / "b"), adaptive_moves=True))
  res = {r["id"]: r for r in study.judge(arms)}
  assert res["C1"]["verdict"] in ("appeared", "inconclusive")
  # α moved, but the (synthetic) evaluations are identical: still not tested
  assert res["A1"]["verdict"] == "not tested (the arms are identical on every seed)"


def test_the_table_interval_includes_seed_variance(tmp_path):
  dirs = [
    _run(str(tmp_path), "rev_teacher", s, acc=a)
    for s, a in enumerate((0.0002, 0.0011, 0.0231, 0.01))
  ]
  s = study.arm_stats(study.load_arms(dirs)["rev_teacher"])
  mean, lo, hi = s["avg_at_k"]
  per_seed = [study.seed_value(r, "avg_at_k") for r in study.load_arms(dirs)["rev_teacher"]]
  assert (mean, lo, hi) == pytest.approx(stats.t_interval(per_seed))
  assert "rev_teacher | 4 | 30 |" in study.table(study.load_arms(dirs))


CONTEXT = {
  "prereg_commit": "abc1234",
  "teacher_eval": {
    "chain": {
      "k": 8,
      "avg_at_k": 0.62,
      "pass_at_k": {"8": 0.9},
      "truncation_rate": 0.004,
      "mean_entropy": 0.4,
    }
  },
  "teacher_reference": {"lengths": list(range(20, 80))},
  "budget": 160,
  "constant_answer_baseline": 0.02,
  "derived": {"short_horizon": 50},
}


def test_study_json_has_the_fields_the_issue_lists(tmp_path):
  dirs = _study(str(tmp_path))
  rec = study.study_record(dirs, CONTEXT)
  assert rec["prereg_commit"] == "abc1234"
  assert set(rec["teacher"]) >= {"avg_at_k", "pass_at_k", "truncation", "len_p50", "len_p95"}
  assert rec["teacher"]["len_p95"] == pytest.approx(np.percentile(range(20, 80), 95))
  assert rec["budget"] == 160 and rec["constant_answer_baseline"] == 0.02
  arm = rec["arms"]["rev_student"]
  assert arm["seeds"] == [0, 1, 2, 3] and len(arm["start_avg_at_k"]) == 4
  warm = study.load_arms(dirs)["warm_start"]
  assert arm["start_avg_at_k"] == [study.seed_value(w, "avg_at_k") for w in warm]
  assert set(arm["final"]) == set(plan.FIELDS) and len(arm["final"]["avg_at_k"]) == 4
  assert sorted(arm["curve"], key=int) == ["0", "15", "30"]
  assert rec["arms"]["curriculum"]["advances"] == [1, 1, 1, 1]
  assert "advances" not in arm and "warm_start" not in rec["arms"]
  names = {c["group"] for c in rec["claims"]}
  assert set(plan.GROUPS) <= names
  for c in rec["claims"]:
    assert {"name", "expected", "verdict", "p_holm", "per_seed"} <= set(c)
  assert [g["group"] for g in rec["paper_claims"]] == list(plan.GROUPS)
  g = rec["gates"]
  assert g["teacher"] and g["budget"]  # 160 >= 2 x p95 (76.05)
  json.dumps(rec, allow_nan=False)  # strict JSON
  d1 = next(c for c in rec["claims"] if c["id"] == "D2")
  assert d1["test"]["t"] is None or np.isfinite(d1["test"]["t"])


def test_gates(tmp_path):
  teacher = {
    "avg_at_k": 0.6,
    "pass_at_k": 0.85,
    "truncation": 0.005,
    "entropy": 0.4,
    "len_p50": 40,
    "len_p95": 70,
  }
  warm = {"seeds": [0, 1], "avg_at_k": [0.2, 0.5], "entropy": [0.9, 0.9]}
  g = study.gates(teacher, warm, 140, 0.03, {})
  assert g["teacher"] and g["budget"] and g["warm_start_floor"] == pytest.approx(0.15)
  assert g["warm_start"] == [True, False]  # 0.5 > 0.6 - 0.15
  assert not study.gates({**teacher, "truncation": 0.02}, warm, 139, 0.03, {})["teacher"]
  assert not study.gates(teacher, warm, 139, 0.03, {})["budget"]


def test_report_cli_writes_the_study(tmp_path):
  dirs = _study(str(tmp_path / "runs"))
  ctx = tmp_path / "context.json"
  ctx.write_text(json.dumps(CONTEXT))
  out = tmp_path / "out"
  done = subprocess.run(
    [sys.executable, "-m", "dkd_jax.report", "--study", f"--out={out}", f"--context={ctx}", *dirs],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  rec = json.load(open(out / "study.json"))
  assert rec["prereg_commit"] == "abc1234"
  claims = (out / "claims.md").read_text()
  assert "| D1 | direction: reverse KL gains Avg@k (primary)" in claims
  assert "- **direction**: appeared" in claims
  for png in ("tradeoffs.png", "trajectories.png", "training_curves.png"):
    assert os.path.getsize(out / png) > 1000
  gates = subprocess.run(
    [sys.executable, "-m", "dkd_jax.report", f"--gates={ctx}", *dirs],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  # warm starts at 0.15 Avg@k: above max(5 x 0.02, 0.10), below 0.62 - 0.15; entropy 1.0
  assert gates.returncode == 0, gates.stdout[-2000:] + gates.stderr[-2000:]


def test_derive_and_context_steps_of_the_cli(tmp_path):
  """`report --derive` (the remedies from a teacher reference) and `report
  --make_context` (teacher figures, budget, constant-answer baseline on every held-out
  problem) as launch/study.sh calls them."""
  import collections

  from configs import common
  from dkd_jax.data import chain
  from dkd_jax.objectives import remedies

  rng = np.random.default_rng(0)
  lens = np.clip(rng.gamma(6.0, 7.0, 256).astype(int) + 5, 8, 200)
  ents = tuple(rng.uniform(0.0, 0.6, n) for n in lens)
  ref = remedies.Reference(lens, lens >= 200, ents, 200)
  (tmp_path / "ref.json").write_text(json.dumps(ref.to_json()))
  run = lambda *a: subprocess.run(
    [sys.executable, "-m", "dkd_jax.report", *a],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  done = run(f"--derive={tmp_path / 'ref.json'}", "--steps=300", "--batch=16")
  assert done.returncode == 0, done.stderr[-2000:]
  derived = json.loads(done.stdout)
  assert derived["budget"] >= 2 * np.percentile(lens, 95)
  (tmp_path / "derived.json").write_text(done.stdout)
  bad = run(f"--derive={tmp_path / 'ref.json'}", "--steps=300", "--warm_entropy=0.01")
  assert bad.returncode == 1 and "warm start" in bad.stderr
  teacher = tmp_path / "teacher"
  teacher.mkdir()
  c = common.base("tiny,chain")
  c.eval.num_problems = 8  # the bootstrap run evaluates a few; the baseline uses all
  (teacher / "config.json").write_text(json.dumps(c.to_dict()))
  (teacher / "eval_teacher.json").write_text(json.dumps(CONTEXT["teacher_eval"]))
  ctx = tmp_path / "context.json"
  done = run(
    f"--make_context={ctx}",
    f"--teacher_run={teacher}",
    f"--reference={tmp_path / 'ref.json'}",
    f"--derived={tmp_path / 'derived.json'}",
    "--prereg_commit=abc",
  )
  assert done.returncode == 0, done.stderr[-2000:]
  got = json.loads(ctx.read_text())
  _, held = chain.make_splits(
    c.data.chain.num_train, c.data.chain.num_eval, chain.ChainConfig(), data_seed=0
  )
  answer, n = collections.Counter(r["answer"] for r in held).most_common(1)[0]
  assert got["constant_answer_baseline"] == pytest.approx(n / len(held)) and len(held) == 64
  assert got["budget"] == derived["budget"] and got["prereg_commit"] == "abc"
