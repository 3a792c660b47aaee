"""The study report: arms x seeds -> seed-level tables, the declared claims, study.json.

Run directories are named `<arm>_s<seed>` (launch/study.sh); `warm_start_s<seed>` holds
each seed's warm-started student, evaluated before any distillation. The seed is the
unit of replication (DESIGN §8):

- an arm's figure is the mean of its seeds' figures (each the mean over the held-out
  problems), with a 95% t-interval over the seed means (`stats.t_interval`);
- a claim of `evals.preregistration.CLAIMS` compares two arms on the same seeds: its
  per-seed differences go through a two-sided paired t-test, Holm-corrected within its
  family (claims that cannot be tested enter the family with p = 1), and its verdict is
  appeared / did not / inconclusive / not tested (`stats.claim_verdict`); a mechanism
  that never engaged on a seed (the curriculum never advanced, the adaptive α never
  moved) or arms identical on every seed read "not tested";
- `study_record` gathers everything into the dict written as docs/results/study.json.

Comparisons that are not declared claims (`post_hoc`) are labelled post hoc.
"""

from __future__ import annotations

import json
import re

import numpy as np

from dkd_jax.core import metrics_log
from dkd_jax.core import paths
from dkd_jax.evals import preregistration as plan
from dkd_jax.evals import stats

ARM_RE = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")
EVALS_FILE = "evals.jsonl"  # evaluations along the trajectory (distill_loop)


def load_arms(run_dirs) -> dict[str, list[dict]]:
  """{arm: [summary per seed, by seed]} from finished `<arm>_s<seed>` run directories."""
  arms: dict[str, list[dict]] = {}
  for d in sorted(run_dirs):
    m = ARM_RE.match(paths.as_path(d).name)
    path = paths.as_path(d) / "summary.json"
    if not m or not path.exists():
      continue
    s = json.loads(path.read_text())
    s["run_dir"], s["seed"] = d, int(m["seed"])
    arms.setdefault(m["arm"], []).append(s)
  return {a: sorted(runs, key=lambda s: s["seed"]) for a, runs in arms.items()}


def _eval(s) -> dict:
  return next(iter(s["eval"].values()))


def read_jsonl(path) -> list[dict]:
  path = paths.as_path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trajectory(run: dict) -> dict[int, dict]:
  """{step: the first eval set's metrics} along one run (evals.jsonl, then the final)."""
  out = {
    r["step"]: next(iter(r["eval"].values()))
    for r in read_jsonl(paths.as_path(run["run_dir"]) / EVALS_FILE)
  }
  out[run["steps"]] = _eval(run)
  return out


def problem_values(m: dict, metric: str, problems: int | None = None) -> np.ndarray:
  """The per-problem values of `metric` (a preregistration.FIELDS key) of one evaluation,
  optionally only its first `problems` (the fixed subset every curve point shares)."""
  field = plan.FIELDS.get(metric, metric)
  if field.startswith("pass_at_"):
    field = f"pass_at_{m['k']}"
  v = np.asarray(m["per_problem"][field], np.float64)
  return v if problems is None else v[:problems]


def seed_value(run: dict, metric: str) -> float:
  """One seed's final figure: the mean over the held-out problems."""
  return float(problem_values(_eval(run), metric).mean())


def arm_stats(runs) -> dict:
  """Seed means with 95% t-intervals over seeds, per metric; KL and compute seed means."""
  out = {
    "seeds": len(runs),
    "k": _eval(runs[0])["k"],
    "steps": runs[0]["steps"],
    "problems": _eval(runs[0])["num_problems"],
  }
  for metric in plan.FIELDS:
    out[metric] = stats.t_interval([seed_value(s, metric) for s in runs])
  for metric in ("fkl", "rkl"):
    # null in summary.json where a run has no token-level KL (two vocabularies)
    values = [_eval(s)[metric] for s in runs]
    out[metric] = stats.t_interval([float("nan") if v is None else v for v in values])
  out["generated_tokens"] = float(np.mean([s["compute"]["generated_tokens"] for s in runs]))
  out["train_flops"] = float(np.mean([s["compute"]["train_flops"] for s in runs]))
  return out


def _fmt(t, digits=3) -> str:
  if np.isnan(t[1]):
    return f"{t[0]:.{digits}f} [n/a]"
  return f"{t[0]:.{digits}f} [{t[1]:.{digits}f}, {t[2]:.{digits}f}]"


def table(arms: dict[str, list[dict]]) -> str:
  """Markdown: one row per arm, seed mean [95% t-interval over seeds]."""
  rows = [
    "| arm | seeds | steps | Avg@k | Pass@k | length | trunc | entropy | KL(p‖q) "
    "| gen. tokens | train FLOPs |",
    "|" + "---|" * 11,
  ]
  for arm, runs in arms.items():
    a = arm_stats(runs)
    rows.append(
      f"| {arm} | {a['seeds']} | {a['steps']} | {_fmt(a['avg_at_k'])} | "
      f"{_fmt(a['pass_at_k'])} | {_fmt(a['length'], 1)} | "
      f"{_fmt(a['truncation'], 2)} | {_fmt(a['entropy'])} | "
      f"{_fmt(a['fkl'])} | {a['generated_tokens']:.3g} | {a['train_flops']:.3g} |"
    )
  return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ engagement ---


def advances(run: dict) -> int:
  """How often the curriculum advanced a stage in this run."""
  return sum(d.get("action") == "advance" for d in run.get("curriculum") or [])


def alpha_range(run: dict) -> tuple[float, float]:
  """(min, max) of the α the loss used over training (metrics.jsonl)."""
  rows = read_jsonl(paths.as_path(run["run_dir"]) / "metrics.jsonl")
  alphas = [r["alpha"] for r in rows if "alpha" in r]
  base = float(run.get("objective", {}).get("alpha", 0.0))
  return (min(alphas), max(alphas)) if alphas else (base, base)


def engaged(arm: str, run: dict) -> bool:
  """Did the arm's mechanism fire on this seed (plan.Arm.engages)? True for plain arms."""
  try:
    what = plan.arm(arm).engages
  except KeyError:
    return True
  if what == "curriculum":
    return advances(run) > 0
  if what == "adaptive_alpha":
    lo, hi = alpha_range(run)
    base = float(run.get("objective", {}).get("alpha", 0.0))
    return max(abs(lo - base), abs(hi - base)) > 0.0
  return True


# ---------------------------------------------------------------------- claims ---


def paired_seeds(arms, a: str, b: str) -> list[int]:
  seeds = lambda name: {s["seed"] for s in arms.get(name, [])}
  return sorted(seeds(a) & seeds(b))


def _untested(arms, claim, seeds) -> str | None:
  for name in (claim.a, claim.b):
    if name not in arms:
      return f"arm {name} was not run"
  if len(seeds) < 2:
    return f"{len(seeds)} paired seed(s); the test needs >= 2"
  for name in (claim.a, claim.b):
    idle = [s["seed"] for s in arms[name] if s["seed"] in seeds and not engaged(name, s)]
    if idle:
      what = plan.arm(name).engages.replace("_", " ")
      return f"{name}: the {what} never engaged on seed(s) {idle}"
  return None


def judge(arms, claims=plan.CLAIMS, level: float = plan.LEVEL) -> list[dict]:
  """Every claim's per-seed differences, test, Holm-adjusted p (within its family,
  untested claims at p = 1) and verdict."""
  rows = []
  for c in claims:
    seeds = paired_seeds(arms, c.a, c.b)
    why = _untested(arms, c, seeds)
    by = {n: {s["seed"]: s for s in arms.get(n, [])} for n in (c.a, c.b)}
    diffs = [seed_value(by[c.a][s], c.metric) - seed_value(by[c.b][s], c.metric) for s in seeds]
    test = stats.paired_t_test(diffs) if len(diffs) >= 2 else None
    if test is not None and test["tie"] and why is None:
      why = "the arms are identical on every seed"
    rows.append(
      dict(
        id=c.id,
        name=f"{c.group}: {c.text}",
        group=c.group,
        family=c.family,
        a=c.a,
        b=c.b,
        metric=c.metric,
        expected=c.expected,
        seeds=seeds,
        per_seed=diffs,
        test=test,
        p=1.0 if why or test is None else test["p"],
        untested=why,
      )
    )
  for fam in {r["family"] for r in rows}:
    members = [r for r in rows if r["family"] == fam]
    for r, p_holm in zip(members, stats.holm([r["p"] for r in members])):
      r["p_holm"] = p_holm
  for r in rows:
    r["verdict"] = stats.claim_verdict(
      r["test"], r["expected"], r["p_holm"], level=level, untested=r["untested"]
    )
  return rows


def group_verdicts(results: list[dict], groups=plan.GROUPS) -> list[dict]:
  """The paper's claims: each the conjunction of its primary tests (appeared only if
  all appeared; did not if any did not; not tested if any was not tested)."""
  out = []
  for g in groups:
    rs = [r for r in results if r["group"] == g and r["family"] == "primary"]
    vs = [r["verdict"] for r in rs]
    if not rs:
      v = "not declared"
    elif any(v.startswith("not tested") for v in vs):
      v = "not tested"
    elif all(v == "appeared" for v in vs):
      v = "appeared"
    elif any(v == "did not" for v in vs):
      v = "did not"
    else:
      v = "inconclusive"
    p = max((r["p_holm"] for r in rs), default=1.0)
    out.append({"group": g, "verdict": v, "p_holm": p, "claims": [r["id"] for r in rs]})
  return out


def _cell(x: float) -> str:
  return "—" if x is None or np.isnan(x) else f"{x:+.4f}"


def claims_table(results: list[dict]) -> str:
  """Markdown: one row per declared claim."""
  rows = [
    "| id | claim | comparison | metric | mean diff [95% t-CI over seeds] | per seed | t (df) "
    "| p | p (Holm) | verdict |",
    "|" + "---|" * 10,
  ]
  for r in results:
    t = r["test"]
    diff = "—" if t is None else f"{_cell(t['mean'])} [{_cell(t['ci'][0])}, {_cell(t['ci'][1])}]"
    tdf = "—" if t is None else f"{t['t']:.2f} ({t['df']})"
    p = "—" if t is None else f"{t['p']:.4f}"
    per = ", ".join(f"{x:+.4f}" for x in r["per_seed"]) or "—"
    rows.append(
      f"| {r['id']} | {r['name']} ({r['family']}) | {r['a']} − {r['b']} (expected "
      f"{r['expected']}) | {r['metric']} | {diff} | {per} | {tdf} | {p} | "
      f"{r['p_holm']:.4f} | {r['verdict']} |"
    )
  return "\n".join(rows) + "\n"


def post_hoc(arms, a: str, b: str, metric: str) -> dict:
  """An undeclared comparison: the same seed-level test, no correction, labelled."""
  seeds = paired_seeds(arms, a, b)
  by = {n: {s["seed"]: s for s in arms[n]} for n in (a, b)}
  diffs = [seed_value(by[a][s], metric) - seed_value(by[b][s], metric) for s in seeds]
  return {
    "label": "post hoc",
    "a": a,
    "b": b,
    "metric": metric,
    "per_seed": diffs,
    "test": stats.paired_t_test(diffs) if len(diffs) >= 2 else None,
  }


# --------------------------------------------------------------- study.json ---


def teacher_figures(teacher_eval: dict, reference: dict) -> dict:
  """The teacher's gate figures: accuracy, truncation and entropy on the held-out set at
  the budget; response-length quantiles from its frozen reference rollouts."""
  m = next(iter(teacher_eval.values())) if "k" not in teacher_eval else teacher_eval
  lens = np.asarray(reference["lengths"], np.float64)
  return {
    "avg_at_k": float(m["avg_at_k"]),
    "pass_at_k": float(m["pass_at_k"][str(m["k"])]),
    "truncation": float(m["truncation_rate"]),
    "entropy": float(m["mean_entropy"]),
    "len_p50": float(np.percentile(lens, 50)),
    "len_p95": float(np.percentile(lens, 95)),
  }


def gates(teacher: dict, warm: dict, budget: int, constant: float, arms) -> dict:
  """The issue's competence and design checks (True = met)."""
  t_ok = (
    teacher["avg_at_k"] >= plan.TEACHER_MIN_AVG
    and teacher["pass_at_k"] >= plan.TEACHER_MIN_PASS
    and teacher["truncation"] <= plan.TEACHER_MAX_TRUNCATION
  )
  floor = max(plan.WARM_MIN_AVG_FACTOR * constant, plan.WARM_MIN_AVG_FLOOR)
  warm_ok = [
    floor <= a <= teacher["avg_at_k"] - plan.WARM_MAX_BELOW_TEACHER and h >= teacher["entropy"]
    for a, h in zip(warm.get("avg_at_k", []), warm.get("entropy", []))
  ]
  cur = [advances(s) for s in arms.get("curriculum", [])]
  return {
    "teacher": t_ok,
    "warm_start": warm_ok,
    "warm_start_floor": floor,
    "budget": budget >= plan.BUDGET_FACTOR * teacher["len_p95"],
    "seeds": {a: len(arms.get(a, [])) >= len(plan.SEEDS) for a in (x.name for x in plan.ARMS)},
    "curriculum_advanced_every_seed": bool(cur) and min(cur) > 0,
  }


def arm_record(name: str, runs: list[dict], warm: dict) -> dict:
  """One arm of study.json: per-seed starts, finals and trajectory points."""
  start = dict(zip(warm.get("seeds", []), warm.get("avg_at_k", [])))
  rec = {
    "seeds": [s["seed"] for s in runs],
    "start_avg_at_k": [start.get(s["seed"]) for s in runs],
    "final": {m: [seed_value(s, m) for s in runs] for m in plan.FIELDS},
    "interval": {m: list(stats.t_interval([seed_value(s, m) for s in runs])) for m in plan.FIELDS},
    "curve": curves(runs, plan.CURVE_PROBLEMS),
    "generated_tokens": [s["compute"]["generated_tokens"] for s in runs],
    "train_flops": [s["compute"]["train_flops"] for s in runs],
  }
  what = plan.arm(name).engages if name in {a.name for a in plan.ARMS} else ""
  if what == "curriculum":
    rec["advances"] = [advances(s) for s in runs]
  if what == "adaptive_alpha":
    rec["alpha_max"] = [alpha_range(s)[1] for s in runs]
  return rec


def curves(runs: list[dict], problems: int) -> dict[str, dict[str, list[float]]]:
  """{step: {metric: [per seed]}} on the first `problems` held-out problems, at the
  steps every seed evaluated."""
  trajs = [trajectory(s) for s in runs]
  steps = sorted(set.intersection(*(set(t) for t in trajs))) if trajs else []
  return {
    str(step): {
      m: [float(problem_values(t[step], m, problems).mean()) for t in trajs]
      for m in ("avg_at_k", "length", "entropy", "truncation")
    }
    for step in steps
  }


def warm_start_record(arms) -> dict:
  runs = arms.get(plan.WARM_START, [])
  return {
    "seeds": [s["seed"] for s in runs],
    "avg_at_k": [seed_value(s, "avg_at_k") for s in runs],
    "pass_at_k": [seed_value(s, "pass_at_k") for s in runs],
    "entropy": [seed_value(s, "entropy") for s in runs],
    "length": [seed_value(s, "length") for s in runs],
  }


def study_record(run_dirs, context: dict) -> dict:
  """docs/results/study.json: the plan's commit, the teacher and warm-start figures, the
  budget, the constant-answer baseline, every arm's per-seed figures and every declared
  claim's test and verdict. `context` (launch/study.sh writes it before any student
  run): prereg_commit, teacher_eval, teacher_reference, budget, constant_answer_baseline,
  derived (the remedies' settings), optional cpu_seconds."""
  arms = load_arms(run_dirs)
  teacher = teacher_figures(context["teacher_eval"], context["teacher_reference"])
  warm = warm_start_record(arms)
  results = judge(arms)
  studied = {a: r for a, r in arms.items() if a != plan.WARM_START}
  return metrics_log.strict_json(
    {
      "prereg_commit": context["prereg_commit"],
      "plan": {
        "seeds": list(plan.SEEDS),
        "steps": plan.STEPS,
        "eval_steps": list(plan.eval_steps()),
        "test": plan.TEST,
        "level": plan.LEVEL,
        "correction": plan.CORRECTION,
      },
      "teacher": teacher,
      "budget": int(context["budget"]),
      "constant_answer_baseline": float(context["constant_answer_baseline"]),
      "derived": context.get("derived", {}),
      "warm_start": warm,
      "gates": gates(teacher, warm, context["budget"], context["constant_answer_baseline"], arms),
      "arms": {a: arm_record(a, runs, warm) for a, runs in studied.items()},
      "claims": [
        {k: v for k, v in r.items() if k != "untested"} | {"why_not_tested": r["untested"]}
        for r in results
      ],
      "paper_claims": group_verdicts(results),
      "post_hoc": [a for a in studied if a not in {x.name for x in plan.ARMS}],
      "cpu_seconds": context.get("cpu_seconds"),
    }
  )
