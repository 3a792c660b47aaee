"""The RL-init study's table and figure: Avg@k / Pass@k / length / entropy vs RL step.

Input: an OUT directory laid out by launch/rl_study.sh, `OUT/<arm>/seed<s>/` GRPO
workdirs, each with rl_evals.jsonl (one evaluation per line, written by `rl_run`).
Per arm and RL step, every figure is the mean over seeds and problems, with a 95%
percentile bootstrap interval over PROBLEMS: one resample of problem indices is applied
to every seed alike (the seeds of an arm are evaluated on the same problems, so they
stay paired). Pass@k per problem is 1 iff any of its k samples is correct (the unbiased
estimator with n = k). Evaluations without per-problem results (older runs) get the
mean only and an interval of "n/a".

`gains` answers the study's two questions with paired differences on the same problems
and seeds: how much RL moved each initialisation (last step minus step 0), and whether
one initialisation gained more than another (the difference of their gains).
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from etils import epath

from dkd_jax.core import paths

METRICS = ("avg_at_k", "pass_at_k", "length", "entropy")
N_BOOT = 2000


def read_curve(workdir: str) -> dict[int, dict]:
  """{RL step: the first eval set's metrics} of one GRPO workdir (last line per step)."""
  out = {}
  for line in (paths.as_path(workdir) / "rl_evals.jsonl").read_text().splitlines():
    if line.strip():
      d = json.loads(line)
      out[d["step"]] = next(iter(d["eval"].values()))
  return out


def per_problem(m: dict) -> dict[str, np.ndarray] | None:
  """[P] arrays of each metric for one evaluation, or None without per-problem data."""
  per = m.get("per_problem")
  if per is None:
    return None
  correct = np.asarray(per["correct"], np.float64)  # fraction of the k samples
  pass_k = per.get(f"pass_at_{m['k']}")
  return {
    "avg_at_k": correct,
    "pass_at_k": (correct > 0).astype(np.float64)
    if pass_k is None
    else np.asarray(pass_k, np.float64),
    "length": np.asarray(per["length"], np.float64),
    "entropy": np.asarray(per["entropy"], np.float64),
  }


def bootstrap(
  values_SxP: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
  """(mean, lo, hi): the 95% percentile interval of the seed-and-problem mean under
  resampling problems (the same indices for every seed)."""
  S, P = values_SxP.shape
  idx_BxP = np.random.default_rng(seed).integers(0, P, (n_boot, P))
  means_B = values_SxP[:, idx_BxP].mean(axis=(0, 2))
  lo, hi = np.percentile(means_B, [2.5, 97.5])
  return float(values_SxP.mean()), float(lo), float(hi)


def summarise(curves: list[dict[int, dict]]) -> dict[int, dict]:
  """{step: {metric: (mean, lo, hi) | (mean, None, None), 'seeds': n}} over one arm's
  seeds; only steps every seed has reached."""
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  out = {}
  for step in steps:
    per = [per_problem(c[step]) for c in curves]
    row = {"seeds": len(curves), "k": curves[0][step]["k"]}
    for name in METRICS:
      if all(p is not None for p in per):
        row[name] = bootstrap(np.stack([p[name] for p in per]))
      else:
        key = {"length": "mean_response_len", "entropy": "mean_entropy"}.get(name, name)
        vals = [
          c[step][key] if name != "pass_at_k" else c[step][key][str(c[step]["k"])] for c in curves
        ]
        row[name] = (float(np.mean(vals)), None, None)
    out[step] = row
  return out


def load_curves(out_dir: str) -> dict[str, dict[int, list[dict]]]:
  """{arm: {seed: curve}} for every OUT/<arm>/seed<s>/rl_evals.jsonl."""
  arms = {}
  for path in sorted(paths.as_path(out_dir).glob("*/seed*/rl_evals.jsonl")):
    seed_dir = path.parent
    arm = seed_dir.parent.name
    seed = int(seed_dir.name[len("seed") :])
    arms.setdefault(arm, {})[seed] = read_curve(seed_dir)
  return arms


def load_study(out_dir: str) -> dict[str, dict[int, dict]]:
  """{arm: summarise(its seeds)} for every OUT/<arm>/seed*/rl_evals.jsonl."""
  return {arm: summarise(list(seeds.values())) for arm, seeds in load_curves(out_dir).items()}


def _gain_SxP(seeds: dict[int, dict], name: str, common: list[int]) -> np.ndarray | None:
  """[S, P] per-problem (last common step - step 0) of one arm, or None if not paired."""
  rows = []
  for seed in common:
    curve = seeds[seed]
    steps = sorted(curve)
    first, last = per_problem(curve[steps[0]]), per_problem(curve[steps[-1]])
    if first is None or last is None or len(steps) < 2:
      return None
    rows.append(last[name] - first[name])
  return np.stack(rows)


def gains(curves: dict[str, dict[int, dict]], metric: str = "avg_at_k") -> dict:
  """{'arms': {arm: {'start', 'gain': (mean, lo, hi), 'seeds', 'start_entropy'}},
  'pairs': {(a, b): (mean, lo, hi) of gain(a) - gain(b)}}: paired bootstrap over
  problems (seeds matched by index); arms without per-problem data are left out."""
  arms, per_arm = {}, {}
  for arm, seeds in curves.items():
    common = sorted(seeds)
    g = _gain_SxP(seeds, metric, common)
    if g is None:
      continue
    starts = [per_problem(seeds[s][min(seeds[s])]) for s in common]
    per_arm[arm] = (common, g)
    arms[arm] = {
      "gain": bootstrap(g),
      "seeds": len(common),
      "start": float(np.mean([p[metric].mean() for p in starts])),
      "start_entropy": float(np.mean([p["entropy"].mean() for p in starts])),
    }
  pairs = {}
  names = sorted(per_arm)
  for i, a in enumerate(names):
    for b in names[i + 1 :]:
      common = sorted(set(per_arm[a][0]) & set(per_arm[b][0]))
      if not common or per_arm[a][1].shape[1] != per_arm[b][1].shape[1]:
        continue
      ga = per_arm[a][1][[per_arm[a][0].index(s) for s in common]]
      gb = per_arm[b][1][[per_arm[b][0].index(s) for s in common]]
      pairs[(a, b)] = bootstrap(ga - gb)
  return {"arms": arms, "pairs": pairs}


def gains_markdown(curves: dict[str, dict[int, dict]]) -> str:
  """Each arm's RL change (last step - step 0) in every metric, then the pairwise
  differences of Avg@k and Pass@k gains with a verdict."""
  g = {m: gains(curves, m) for m in METRICS}
  lines = [
    "| init (arm) | seeds | start Avg@k | start entropy | "
    + " | ".join(f"Δ {m}" for m in METRICS)
    + " |",
    "|---|---|---|---|" + "---|" * len(METRICS),
  ]
  arms = g["avg_at_k"]["arms"]
  for arm in sorted(arms, key=lambda a: -arms[a]["gain"][0]):
    r = arms[arm]
    lines.append(
      f"| {arm} | {r['seeds']} | {r['start']:.3f} | {r['start_entropy']:.3f} | "
      + " | ".join(_cell(g[m]["arms"][arm]["gain"]) for m in METRICS)
      + " |"
    )
  for m in ("avg_at_k", "pass_at_k"):
    lines += ["", f"| Δ {m}: gain(a) - gain(b) | difference [95% CI] | verdict |", "|---|---|---|"]
    for (a, b), v in sorted(g[m]["pairs"].items()):
      verdict = (
        "a gains more" if v[1] > 0 else "b gains more" if v[2] < 0 else "no difference resolved"
      )
      lines.append(f"| {a} - {b} | {_cell(v)} | {verdict} |")
  return "\n".join(lines) + "\n"


def _cell(v) -> str:
  mean, lo, hi = v
  return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else " [n/a]")


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


def plot(study: dict[str, dict[int, dict]], path: str | epath.Path) -> None:
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
  for arm, rows in study.items():
    steps = sorted(rows)
    for ax, name in zip(axes, METRICS):
      mean = [rows[s][name][0] for s in steps]
      (line,) = ax.plot(steps, mean, marker="o", label=arm)
      if all(rows[s][name][1] is not None for s in steps):
        ax.fill_between(
          steps,
          [rows[s][name][1] for s in steps],
          [rows[s][name][2] for s in steps],
          color=line.get_color(),
          alpha=0.2,
        )
  for ax, name in zip(axes, METRICS):
    ax.set_xlabel("RL step")
    ax.set_title(name)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  with paths.as_path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
