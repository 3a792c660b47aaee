"""The study report: arms x seeds -> a table with 95% intervals, paired claims, plots.

Run directories are named `<arm>_s<seed>` (launch/study.sh). An arm's figure is the
mean over its seeds; its 95% interval is a bootstrap over problems of the seed-averaged
per-problem values (every run is evaluated on the same held-out problems, so problems
are the unit of resampling and seeds are averaged inside each problem). A claim
compares two arms paired on the same problems (`stats.paired_diff`) and gets a verdict:
appeared (the interval excludes 0 in the claimed direction), did not (it excludes 0 the
other way) or inconclusive. The problem bootstrap does not see seed-to-seed spread, so
each claim also lists the per-seed differences (seeds matched by number) and a verdict
stands only when every seed's difference has its sign ("inconclusive (seeds disagree)"
otherwise).
"""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np

from dkd_jax.core import paths
from dkd_jax.evals import plots
from dkd_jax.evals import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ARM_RE = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")
PER_PROBLEM = {
  "avg_at_k": "correct",
  "mean_response_len": "length",
  "mean_entropy": "entropy",
  "truncation_rate": "truncated",
}


def load_arms(run_dirs) -> dict[str, list[dict]]:
  """{arm: [summary per seed]} from finished `<arm>_s<seed>` run directories."""
  arms: dict[str, list[dict]] = {}
  for d in sorted(run_dirs):
    m = ARM_RE.match(paths.as_path(d).name)
    path = paths.as_path(d) / "summary.json"
    if not m or not path.exists():
      continue
    s = json.loads(path.read_text())
    s["run_dir"], s["seed"] = d, int(m["seed"])
    arms.setdefault(m["arm"], []).append(s)
  return arms


def _eval(s) -> dict:
  return next(iter(s["eval"].values()))


def per_problem(runs, name: str) -> np.ndarray:
  """Seed-averaged per-problem values of `name` ('correct', 'length', 'pass_at_8', ...)."""
  return np.mean([np.asarray(_eval(s)["per_problem"][name]) for s in runs], axis=0)


def arm_stats(runs) -> dict:
  """Seed means with bootstrap-over-problems 95% intervals."""
  k = _eval(runs[0])["k"]
  out = {
    "seeds": len(runs),
    "k": k,
    "steps": runs[0]["steps"],
    "problems": _eval(runs[0])["num_problems"],
  }
  for metric, field in {**PER_PROBLEM, f"pass_at_{k}": f"pass_at_{k}"}.items():
    v = per_problem(runs, field)
    out[metric] = (float(v.mean()), *stats.bootstrap_ci(v))
  for metric in ("fkl", "rkl"):
    vals = [_eval(s)[metric] for s in runs]
    out[metric] = (float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)))
  out["generated_tokens"] = float(np.mean([s["compute"]["generated_tokens"] for s in runs]))
  out["train_flops"] = float(np.mean([s["compute"]["train_flops"] for s in runs]))
  return out


def _fmt(t, digits=3) -> str:
  return f"{t[0]:.{digits}f} [{t[1]:.{digits}f}, {t[2]:.{digits}f}]"


def table(arms: dict[str, list[dict]]) -> str:
  """Markdown: one row per arm, mean [95% CI]."""
  rows = [
    "| arm | seeds | steps | Avg@k | Pass@k | length | trunc | entropy | KL(p‖q) "
    "[seed range] | gen. tokens | train FLOPs |",
    "|" + "---|" * 11,
  ]
  for arm, runs in arms.items():
    a = arm_stats(runs)
    k = a["k"]
    rows.append(
      f"| {arm} | {a['seeds']} | {a['steps']} | {_fmt(a['avg_at_k'])} | "
      f"{_fmt(a[f'pass_at_{k}'])} | {_fmt(a['mean_response_len'], 1)} | "
      f"{_fmt(a['truncation_rate'], 2)} | {_fmt(a['mean_entropy'])} | "
      f"{_fmt(a['fkl'])} | {a['generated_tokens']:.3g} | {a['train_flops']:.3g} |"
    )
  return "\n".join(rows) + "\n"


def compare(arms, a: str, b: str, field: str) -> dict | None:
  """Paired difference a - b of a per-problem field, or None if an arm is missing."""
  if a not in arms or b not in arms:
    return None
  return stats.paired_diff(per_problem(arms[a], field), per_problem(arms[b], field))


def seed_diffs(arms, a: str, b: str, field: str) -> list[float]:
  """mean(a) - mean(b) of a per-problem field for every seed both arms ran."""
  by_seed = lambda runs: {s["seed"]: s for s in runs}
  ra, rb = by_seed(arms.get(a, [])), by_seed(arms.get(b, []))
  return [
    float(per_problem([ra[s]], field).mean() - per_problem([rb[s]], field).mean())
    for s in sorted(set(ra) & set(rb))
  ]


def verdict(diff: dict | None, expect: str, seeds: list[float] | None = None) -> str:
  """'appeared' / 'did not' / 'inconclusive' for a claimed sign ('+' or '-'); with the
  per-seed differences, a verdict needs every seed on its side of 0."""
  if diff is None:
    return "not run"
  if diff["verdict"] == "inconclusive":
    return "inconclusive"
  if seeds and not (all(d > 0 for d in seeds) or all(d < 0 for d in seeds)):
    return "inconclusive (seeds disagree)"
  return "appeared" if (diff["verdict"] == "a>b") == (expect == "+") else "did not"


def claims_table(arms, claims) -> str:
  """claims: [(claim, arm_a, arm_b, field, expected sign)] -> markdown with verdicts."""
  rows = [
    "| claim | comparison | per-problem field | mean diff [95% CI] | per seed | verdict |",
    "|---|---|---|---|---|---|",
  ]
  for claim, a, b, field, expect in claims:
    d = compare(arms, a, b, field)
    seeds = seed_diffs(arms, a, b, field) if d is not None else []
    txt = "—" if d is None else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
    per_seed = ", ".join(f"{x:+.4f}" for x in seeds) or "—"
    rows.append(
      f"| {claim} | {a} − {b} (expected {expect}) | {field} | {txt} | "
      f"{per_seed} | {verdict(d, expect, seeds)} |"
    )
  return "\n".join(rows) + "\n"


def _errorbar(ax, x, t, label, **kw) -> None:
  ax.errorbar(
    [x[0]],
    [t[0]],
    xerr=[[x[0] - x[1]], [x[2] - x[0]]] if len(x) == 3 else None,
    yerr=[[t[0] - t[1]], [t[2] - t[0]]],
    fmt="o",
    capsize=3,
    **kw,
  )
  ax.annotate(label, (x[0], t[0]), fontsize=6, xytext=(3, 3), textcoords="offset points")


def plot_tradeoffs(arms, out: str) -> None:
  """Accuracy vs entropy and accuracy vs generated tokens, one point per arm."""
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
  for arm, runs in arms.items():
    s = arm_stats(runs)
    _errorbar(a1, s["mean_entropy"], s["avg_at_k"], arm)
    _errorbar(a2, (s["generated_tokens"],), s["avg_at_k"], arm)
  a1.set(
    xlabel="mean token entropy (nats) [95% CI]",
    ylabel="Avg@k [95% CI]",
    title="accuracy vs entropy",
  )
  a2.set(
    xlabel="tokens generated during training",
    ylabel="Avg@k [95% CI]",
    title="accuracy vs generation compute",
    xscale="symlog",
  )
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "tradeoffs.png")
  plt.close(fig)


def _curve(run_dir, key) -> tuple[np.ndarray, np.ndarray]:
  lines = (paths.as_path(run_dir) / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(line) for line in lines if line.strip()]
  return np.array([r["step"] for r in rows]), np.array([r.get(key, np.nan) for r in rows])


def plot_training(arms, out: str, names=None) -> None:
  """Response length and student entropy over training: seed mean, band = seed range."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for arm in names or arms:
    if arm not in arms:
      continue
    for ax, key in zip(axes, ("response_len", "ent_s")):
      curves = [_curve(s["run_dir"], key) for s in arms[arm]]
      n = min(len(c[0]) for c in curves)
      x, ys = curves[0][0][:n], np.stack([c[1][:n] for c in curves])
      ax.plot(x, ys.mean(0), label=arm)
      ax.fill_between(x, ys.min(0), ys.max(0), alpha=0.2)
  axes[0].set(
    xlabel="step", ylabel="mean response length (train prefixes)", title="length over training"
  )
  axes[1].set(xlabel="step", ylabel="student token entropy (nats)", title="entropy over training")
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=6)
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "training_curves.png")
  plt.close(fig)


def plot_horizon(arms, out: str, pairs) -> None:
  """pairs: [(label, [(steps_arm, ...)])]: Avg@k and length vs horizon with CIs."""
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
  for label, names in pairs:
    pts = [(arm_stats(arms[n])["steps"], arm_stats(arms[n])) for n in names if n in arms]
    if not pts:
      continue
    x = [p[0] for p in pts]
    for ax, key in ((a1, "avg_at_k"), (a2, "mean_response_len")):
      y = np.array([p[1][key] for p in pts])
      ax.errorbar(
        x, y[:, 0], yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], fmt="o-", capsize=3, label=label
      )
  a1.set(xlabel="training steps", ylabel="Avg@k [95% CI]", title="accuracy vs horizon")
  a2.set(xlabel="training steps", ylabel="mean response length [95% CI]", title="length vs horizon")
  if a1.get_legend_handles_labels()[0]:
    a1.legend(fontsize=7)
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "horizon.png")
  plt.close(fig)


# The study's design (launch/study.sh names its arms so): the paper's claims as paired
# comparisons, (claim, arm a, arm b, per-problem field, expected sign of a - b).
CLAIMS = (
  (
    "direction: reverse KL gains accuracy (student prefixes)",
    "rev_student",
    "fwd_student",
    "correct",
    "+",
  ),
  (
    "direction: ... at lower entropy (student prefixes)",
    "rev_student",
    "fwd_student",
    "entropy",
    "-",
  ),
  (
    "direction: reverse KL gains accuracy (teacher prefixes)",
    "rev_teacher",
    "fwd_teacher",
    "correct",
    "+",
  ),
  (
    "direction: ... at lower entropy (teacher prefixes)",
    "rev_teacher",
    "fwd_teacher",
    "entropy",
    "-",
  ),
  (
    "prefix: student prefixes gain accuracy (reverse KL)",
    "rev_student",
    "rev_teacher",
    "correct",
    "+",
  ),
  (
    "prefix: student prefixes gain accuracy (forward KL)",
    "fwd_student",
    "fwd_teacher",
    "correct",
    "+",
  ),
  ("horizon: the long run gains accuracy", "rev_student", "horizon_short_plain", "correct", "+"),
  (
    "horizon: ... and loses entropy (stability)",
    "rev_student",
    "horizon_short_plain",
    "entropy",
    "-",
  ),
  ("horizon: ... and inflates length", "rev_student", "horizon_short_plain", "length", "+"),
  (
    "mixing: forward weight (α=0.5) keeps entropy up in a long run",
    "mix_a50",
    "rev_student",
    "entropy",
    "+",
  ),
  ("mixing: ... and length down", "mix_a50", "rev_student", "length", "-"),
  (
    "mixing: ... without losing accuracy (did not = it lost)",
    "mix_a50",
    "rev_student",
    "correct",
    "+",
  ),
  ("mixing (entropy-adaptive α): entropy kept up", "mix_adaptive", "rev_student", "entropy", "+"),
  (
    "mixing (entropy-adaptive α): ... without losing accuracy",
    "mix_adaptive",
    "rev_student",
    "correct",
    "+",
  ),
  (
    "curriculum: +Avg@k over fixed long training",
    "horizon_long_curriculum",
    "rev_student",
    "correct",
    "+",
  ),
  (
    "curriculum: +Pass@k over fixed long training",
    "horizon_long_curriculum",
    "rev_student",
    "pass_at_8",
    "+",
  ),
  ("curriculum: shorter responses", "horizon_long_curriculum", "rev_student", "length", "-"),
  (
    "curriculum (short horizon): +Avg@k",
    "horizon_short_curriculum",
    "horizon_short_plain",
    "correct",
    "+",
  ),
  (
    "curriculum (short horizon): shorter responses",
    "horizon_short_curriculum",
    "horizon_short_plain",
    "length",
    "-",
  ),
)
HORIZON = (
  ("without curriculum", ("horizon_short_plain", "rev_student")),
  ("with curriculum", ("horizon_short_curriculum", "horizon_long_curriculum")),
)
TRAINING_CURVES = (
  "fwd_student",
  "rev_student",
  "mix_a50",
  "mix_adaptive",
  "horizon_long_curriculum",
)


def write_study_report(run_dirs, out: str) -> str:
  """Table, claims and plots into `out` (results.md, claims.md, *.png); returns both
  tables. Hand-written findings live in out/FINDINGS.md, which this never touches."""
  arms = load_arms(run_dirs)
  if not arms:
    raise FileNotFoundError(f"no finished <arm>_s<seed> runs among {list(run_dirs)[:5]}")
  paths.as_path(out).mkdir(parents=True, exist_ok=True)
  text = table(arms)
  claims = claims_table(arms, CLAIMS)
  (paths.as_path(out) / "results.md").write_text(text)
  (paths.as_path(out) / "claims.md").write_text(claims)
  plot_tradeoffs(arms, out)
  plot_training(arms, out, TRAINING_CURVES)
  plot_horizon(arms, out, HORIZON)
  return text + "\n" + claims
