"""The RL-init study's tables and figure: Avg@k / Pass@k / length / entropy vs RL step.

Input: an OUT directory laid out by launch/rl_study.sh, `OUT/<arm>/seed<s>/` GRPO
workdirs, each with rl_evals.jsonl (one evaluation per line, written by `rl_loop`) and
metrics.jsonl (per RL step, incl. tied and informative groups). The rules are the
distillation study's (`evals.study`, DESIGN §8): the seed is the unit of replication.

- Per arm and RL step a figure is the mean over seeds of each seed's mean over problems,
  with a 95% t-interval over the seed means ("n/a" with one seed). Pass@k per problem is
  the unbiased estimator when the evaluation recorded it, else 1 iff a sample is right.
- An arm's RL gain is, per seed, its last evaluation minus its step-0 evaluation; the
  table gives the per-seed gains and their t-interval.
- The declared RL claims (`preregistration.RL_CLAIMS`: differences of gains, or of the
  values after RL) are paired over seeds, t-tested, Holm-corrected as one family, and read
  appeared / did not / inconclusive / not tested (missing arm, < 2 paired seeds, or
  identical arms).
- `informative` reports, per arm, the GRPO groups that carried a gradient per step (and
  the tied fraction over the first RL steps, which the plan caps at 50%).
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np

from dkd_jax.core import paths
from dkd_jax.evals import plots
from dkd_jax.evals import preregistration as plan
from dkd_jax.evals import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("avg_at_k", "pass_at_k", "length", "entropy")
START_STEPS = 5  # "at its start": the first RL steps' tied fraction


def _jsonl(path) -> list[dict]:
  path = paths.as_path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_curve(workdir: str) -> dict[int, dict]:
  """{RL step: the first eval set's metrics} of one GRPO workdir (last line per step)."""
  return {
    d["step"]: next(iter(d["eval"].values()))
    for d in _jsonl(paths.as_path(workdir) / "rl_evals.jsonl")
  }


def seed_mean(m: dict, name: str) -> float:
  """One evaluation's figure: the mean over problems (the summary value without them)."""
  per = m.get("per_problem")
  if per is None:
    key = {"length": "mean_response_len", "entropy": "mean_entropy"}.get(name, name)
    return float(m[key][str(m["k"])] if name == "pass_at_k" else m[key])
  if name == "avg_at_k":
    return float(np.mean(per["correct"]))
  if name == "pass_at_k":
    pk = per.get(f"pass_at_{m['k']}")
    return float(np.mean(pk if pk is not None else np.asarray(per["correct"]) > 0))
  return float(np.mean(per[name]))


def summarise(curves: list[dict[int, dict]]) -> dict[int, dict]:
  """{step: {metric: (mean, lo, hi) over seeds, 'seeds': n}}; only steps every seed has
  reached."""
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  out = {}
  for step in steps:
    row = {"seeds": len(curves), "k": curves[0][step]["k"]}
    for name in METRICS:
      row[name] = stats.t_interval([seed_mean(c[step], name) for c in curves])
    out[step] = row
  return out


def load_curves(out_dir: str) -> dict[str, dict[int, dict]]:
  """{arm: {seed: curve}} for every OUT/<arm>/seed<s>/rl_evals.jsonl."""
  arms: dict[str, dict[int, dict]] = {}
  for path in sorted(paths.as_path(out_dir).glob("*/seed*/rl_evals.jsonl")):
    seed_dir = path.parent
    arm = seed_dir.parent.name
    seed = int(seed_dir.name[len("seed") :])
    arms.setdefault(arm, {})[seed] = read_curve(seed_dir)
  return arms


def load_study(out_dir: str) -> dict[str, dict[int, dict]]:
  """{arm: summarise(its seeds)} for every OUT/<arm>/seed*/rl_evals.jsonl."""
  return {arm: summarise(list(seeds.values())) for arm, seeds in load_curves(out_dir).items()}


def _ends(curve: dict[int, dict], name: str) -> tuple[float, float]:
  steps = sorted(curve)
  return seed_mean(curve[steps[0]], name), seed_mean(curve[steps[-1]], name)


def per_seed(curves, arm: str, name: str, kind: str = "gain") -> dict[int, float]:
  """{seed: last - first} ('gain') or {seed: last} ('final') of one arm."""
  out = {}
  for seed, curve in curves.get(arm, {}).items():
    if len(curve) >= (2 if kind == "gain" else 1):
      first, last = _ends(curve, name)
      out[seed] = last - first if kind == "gain" else last
  return out


def gains(curves: dict[str, dict[int, dict]], metric: str = "avg_at_k") -> dict:
  """{arm: {'start', 'start_entropy', 'per_seed', 'gain': (mean, lo, hi), 'seeds'}}."""
  out = {}
  for arm in curves:
    g = per_seed(curves, arm, metric)
    if not g:
      continue
    starts = [seed_mean(curves[arm][s][min(curves[arm][s])], metric) for s in g]
    ent = [seed_mean(curves[arm][s][min(curves[arm][s])], "entropy") for s in g]
    out[arm] = {
      "seeds": len(g),
      "per_seed": [g[s] for s in sorted(g)],
      "gain": stats.t_interval([g[s] for s in sorted(g)]),
      "start": float(np.mean(starts)),
      "start_entropy": float(np.mean(ent)),
    }
  return out


def judge(curves, claims=plan.RL_CLAIMS, level: float = plan.LEVEL, info=None) -> list[dict]:
  """The declared RL claims: per-seed differences, paired t-test, Holm, verdict. With
  `info` (`informative`), an init whose groups were more than RL_MAX_TIED_AT_START tied
  at its start leaves its claims not tested (GRPO had almost nothing to learn from)."""
  rows = []
  for c in claims:
    a = per_seed(curves, c.a, c.metric, c.kind)
    b = per_seed(curves, c.b, c.metric, c.kind)
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    why = next((f"arm {n} was not run" for n in (c.a, c.b) if n not in curves), None)
    if why is None and len(seeds) < 2:
      why = f"{len(seeds)} paired seed(s); the test needs >= 2"
    stuck = [n for n in (c.a, c.b) if info and n in info and not info[n]["start_ok"]]
    if why is None and stuck:
      why = f"{stuck[0]}: more than {plan.RL_MAX_TIED_AT_START:.0%} of groups tied at start"
    test = stats.paired_t_test(diffs) if len(diffs) >= 2 else None
    if why is None and test["tie"]:
      why = "the arms are identical on every seed"
    rows.append(
      dict(
        id=c.id,
        name=c.text,
        a=c.a,
        b=c.b,
        metric=c.metric,
        kind=c.kind,
        expected=c.expected,
        seeds=seeds,
        per_seed=diffs,
        test=test,
        p=1.0 if why else test["p"],
        untested=why,
      )
    )
  for r, p in zip(rows, stats.holm([r["p"] for r in rows])):
    r["p_holm"] = p
    r["verdict"] = stats.claim_verdict(
      r["test"], r["expected"], p, level=level, untested=r["untested"]
    )
  return rows


def informative(out_dir: str) -> dict[str, dict]:
  """Per arm: informative groups per RL step (mean over steps, per seed), the tied
  fraction over the first START_STEPS steps, and the share of skipped updates. Older
  logs without `informative_groups` derive it from tied_groups x prompts per batch."""
  arms: dict[str, dict] = {}
  for path in sorted(paths.as_path(out_dir).glob("*/seed*/metrics.jsonl")):
    seed_dir = path.parent
    arm = seed_dir.parent.name
    rows = [r for r in _jsonl(path) if "tied_groups" in r]
    if not rows:
      continue
    P = json.loads((seed_dir / "config.json").read_text())["rl"]["prompts_per_batch"]
    info = [r.get("informative_groups", (1 - r["tied_groups"]) * P) for r in rows]
    a = arms.setdefault(arm, {"seeds": [], "per_step": [], "tied_at_start": [], "skipped": []})
    a["seeds"].append(int(seed_dir.name[len("seed") :]))
    a["per_step"].append(float(np.mean(info)))
    a["tied_at_start"].append(float(np.mean([r["tied_groups"] for r in rows[:START_STEPS]])))
    a["skipped"].append(float(np.mean([r.get("skipped_update", 0.0) for r in rows])))
  for a in arms.values():
    a["start_ok"] = all(t <= plan.RL_MAX_TIED_AT_START for t in a["tied_at_start"])
  return arms


def _cell(v) -> str:
  mean, lo, hi = v
  ok = lo is not None and not np.isnan(lo)
  return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if ok else " [n/a]")


def markdown(study: dict[str, dict[int, dict]]) -> str:
  lines = [
    "| init (arm) | RL step | seeds | Avg@k | Pass@k | length | entropy |",
    "|---|---|---|---|---|---|---|",
  ]
  for arm, rows in study.items():
    for step, row in rows.items():
      lines.append(
        f"| {arm} | {step} | {row['seeds']} | " + " | ".join(_cell(row[m]) for m in METRICS) + " |"
      )
  return "\n".join(lines) + "\n"


def gains_markdown(curves: dict[str, dict[int, dict]]) -> str:
  """Each arm's RL change (last step - step 0) per metric: per seed, then the seed mean
  [95% t-interval over seeds]."""
  g = {m: gains(curves, m) for m in METRICS}
  arms = g["avg_at_k"]
  lines = [
    "| init (arm) | seeds | start Avg@k | start entropy | Δ Avg@k per seed | "
    + " | ".join(f"Δ {m}" for m in METRICS)
    + " |",
    "|---|---|---|---|---|" + "---|" * len(METRICS),
  ]
  for arm in sorted(arms, key=lambda a: -arms[a]["gain"][0]):
    r = arms[arm]
    per = ", ".join(f"{x:+.3f}" for x in r["per_seed"])
    lines.append(
      f"| {arm} | {r['seeds']} | {r['start']:.3f} | {r['start_entropy']:.3f} | {per} | "
      + " | ".join(_cell(g[m][arm]["gain"]) for m in METRICS)
      + " |"
    )
  return "\n".join(lines) + "\n"


def claims_markdown(results: list[dict]) -> str:
  lines = [
    "| id | claim | comparison | per seed | mean [95% t-CI] | t (df) | p | p (Holm) | verdict |",
    "|" + "---|" * 9,
  ]
  for r in results:
    t = r["test"]
    per = ", ".join(f"{x:+.4f}" for x in r["per_seed"]) or "—"
    mean = "—" if t is None else _cell((t["mean"], *t["ci"]))
    tdf = "—" if t is None else f"{t['t']:.2f} ({t['df']})"
    p = "—" if t is None else f"{t['p']:.4f}"
    lines.append(
      f"| {r['id']} | {r['name']} | {r['kind']}({r['a']}) − {r['kind']}({r['b']}), "
      f"{r['metric']} (expected {r['expected']}) | {per} | {mean} | {tdf} | {p} | "
      f"{r['p_holm']:.4f} | {r['verdict']} |"
    )
  return "\n".join(lines) + "\n"


def informative_markdown(info: dict[str, dict], P: int | None = None) -> str:
  lines = [
    "| init (arm) | seeds | informative groups per step (per seed) | tied at start "
    f"(first {START_STEPS} steps, per seed) | ≤ {plan.RL_MAX_TIED_AT_START:.0%} tied | "
    "skipped updates |",
    "|---|---|---|---|---|---|",
  ]
  for arm, a in sorted(info.items()):
    lines.append(
      f"| {arm} | {len(a['seeds'])} | {', '.join(f'{x:.2f}' for x in a['per_step'])} | "
      f"{', '.join(f'{x:.2f}' for x in a['tied_at_start'])} | "
      f"{'yes' if a['start_ok'] else 'no'} | {np.mean(a['skipped']):.2f} |"
    )
  return "\n".join(lines) + "\n"


def plot(study: dict[str, dict[int, dict]], path: str, refs: dict | None = None) -> None:
  """Seed means with t-interval bands; on Avg@k the teacher's, the warm start's and the
  constant answer's lines when `refs` has them. Arms are named in a legend outside."""
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS) + 2, 3.4))
  for arm, rows in study.items():
    steps = sorted(rows)
    for ax, name in zip(axes, METRICS):
      mean = [rows[s][name][0] for s in steps]
      (line,) = ax.plot(steps, mean, marker="o", ms=3, label=arm)
      lo = [rows[s][name][1] for s in steps]
      if not any(x is None or np.isnan(x) for x in lo):
        ax.fill_between(
          steps, lo, [rows[s][name][2] for s in steps], color=line.get_color(), alpha=0.15
        )
  for label, key, style in (
    ("teacher", "teacher", "--"),
    ("warm start", "warm_start", ":"),
    ("constant answer", "constant_answer", "-."),
  ):
    if refs and refs.get(key) is not None:
      axes[0].axhline(refs[key], color="0.3", lw=0.9, ls=style, label=label)
  for ax, name in zip(axes, METRICS):
    ax.set(xlabel="RL step", title=name)
  axes[-1].legend(
    *axes[0].get_legend_handles_labels(), fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1)
  )
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(path))
  plt.close(fig)
