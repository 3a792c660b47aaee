"""The declared plan: docs/results/PREREGISTRATION.md, evals/preregistration.py and
launch/study.sh say the same thing, and the study script resumes (skips finished runs)."""

import os
import re
import subprocess

from dkd_jax.evals import preregistration as plan

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = open(os.path.join(ROOT, "docs", "results", "PREREGISTRATION.md")).read()
SCRIPT = open(os.path.join(ROOT, "launch", "study.sh")).read()


def test_every_declared_claim_is_in_the_document_with_its_direction():
  rows = {
    m[0]: m
    for m in re.findall(
      r"^\| (\w\d) \| ([^|]+) \| (\w+) \| [^|]+ \| ([^|]+) \| (\w+) \| ([+−-]) \|$", DOC, re.M
    )
  }
  for c in plan.CLAIMS:
    assert c.id in rows, c.id
    _, group, family, comparison, metric, sign = rows[c.id]
    assert (group.strip(), family, metric) == (c.group, c.family, c.metric), c.id
    assert comparison.strip() == f"{c.a} − {c.b}", c.id
    assert sign.replace("−", "-") == c.expected, c.id
  assert set(rows) == {c.id for c in plan.CLAIMS}
  for c in plan.RL_CLAIMS:
    assert f"| {c.id} | {c.text} | {c.kind}: {c.a} − {c.b} | {c.metric} |" in DOC, c.id
  for g in plan.GROUPS:  # the paper's six abstract claims
    assert any(c.group == g and c.family == "primary" for c in plan.CLAIMS), g


def test_the_document_states_the_plans_numbers():
  assert f"{', '.join(map(str, plan.SEEDS[:-1]))}, {plan.SEEDS[-1]}" in DOC
  assert f"{plan.STEPS} steps" in DOC and len(plan.SEEDS) >= 4
  steps = plan.eval_steps()
  assert steps == (0, 100, 200, 300)
  assert "steps 0, 100, 200 on the first 250" in DOC and "step 300 on all 1,000" in DOC
  assert "Avg@8 ≥ 0.5, Pass@8 ≥\n0.8, truncation ≤ 1%" in DOC
  assert (plan.TEACHER_MIN_AVG, plan.TEACHER_MIN_PASS, plan.TEACHER_MAX_TRUNCATION) == (
    0.5,
    0.8,
    0.01,
  )
  assert (plan.WARM_MIN_AVG_FACTOR, plan.WARM_MIN_AVG_FLOOR, plan.WARM_MAX_BELOW_TEACHER) == (
    5.0,
    0.10,
    0.15,
  )
  assert plan.BUDGET_FACTOR == 2.0 and "2 × teacher p95" in DOC
  assert plan.LEVEL == 0.05 and plan.CORRECTION == "holm" and "Holm's correction" in DOC
  for a in plan.ARMS:
    assert f"| {a.name} |" in DOC, a.name


def test_the_script_runs_exactly_the_plans_arms():
  ran = set(re.findall(r'run "\$OUT/(\w+)_s\$seed"', SCRIPT))
  assert ran == {a.name for a in plan.ARMS}
  assert 'warm_start "$OUT/warm_start_s$seed"' in SCRIPT


def _dry(out, **env):
  done = subprocess.run(
    ["bash", "launch/study.sh", str(out)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env=dict(os.environ, DRY="1", **env),
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


def test_the_script_lists_every_run_and_skips_finished_ones(tmp_path):
  out = tmp_path / "study"
  text = _dry(out)
  runs = set(re.findall(r"--workdir=\S+/(\w+_s\d)\b", text))
  for line in text.splitlines():  # absl keeps a repeated flag's FIRST value: none may repeat
    keys = re.findall(r"(--config\.[\w.]+)=", line)
    assert len(keys) == len(set(keys)), line
  want = {f"{a.name}_s{s}" for a in plan.ARMS for s in plan.SEEDS}
  assert want | {f"warm_start_s{s}" for s in plan.SEEDS} <= runs
  # finished runs (summary.json) are skipped on a rerun: the study resumes
  for name in ("rev_student_s1", "curriculum_s3"):
    (out / name).mkdir(parents=True)
    (out / name / "summary.json").write_text("{}")
  text = _dry(out)
  assert f"done already: {out}/rev_student_s1" in text
  assert f"--workdir={out}/rev_student_s1 " not in text
  assert f"--workdir={out}/rev_student_s0 " in text


def test_stop_after_runs_the_first_stages_and_no_student_arm(tmp_path):
  text = _dry(tmp_path / "study", STOP_AFTER="gates")
  runs = set(re.findall(r"--workdir=\S+/(\w+_s\d)\b", text))
  assert runs == {f"warm_start_s{s}" for s in plan.SEEDS}
  assert "stopped after the competence gates" in text
  text = _dry(tmp_path / "study", STOP_AFTER="teacher")
  assert "reference" in text and not re.findall(r"--workdir=\S+/(\w+_s\d)\b", text)
  bad = subprocess.run(
    ["bash", "launch/study.sh", str(tmp_path / "x")],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, DRY="1", STOP_AFTER="arms"),
  )
  assert bad.returncode == 2 and "STOP_AFTER" in bad.stderr
