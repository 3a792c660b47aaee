"""The RL-init study's table and figure: Avg@k / Pass@k / length / entropy vs RL step.

Input: an OUT directory laid out by launch/rl_study.sh, `OUT/<arm>/seed<s>/` GRPO
workdirs, each with rl_evals.jsonl (one evaluation per line, written by `rl_run`).
Per arm and RL step, every figure is the mean over seeds and problems, with a 95%
percentile bootstrap interval over PROBLEMS: one resample of problem indices is applied
to every seed alike (the seeds of an arm are evaluated on the same problems, so they
stay paired). Pass@k per problem is 1 iff any of its k samples is correct (the unbiased
estimator with n = k). Evaluations without per-problem results (older runs) get the
mean only and an interval of "n/a".
"""
from __future__ import annotations

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = ("avg_at_k", "pass_at_k", "length", "entropy")
N_BOOT = 2000


def read_curve(workdir: str) -> dict[int, dict]:
  """{RL step: the first eval set's metrics} of one GRPO workdir (last line per step)."""
  out = {}
  with open(os.path.join(workdir, "rl_evals.jsonl")) as f:
    for line in f:
      if line.strip():
        d = json.loads(line)
        out[d["step"]] = next(iter(d["eval"].values()))
  return out


def per_problem(m: dict) -> dict[str, np.ndarray] | None:
  """[P] arrays of each metric for one evaluation, or None without per-problem data."""
  per = m.get("per_problem")
  if per is None:
    return None
  correct = np.asarray(per["correct"], np.float64)   # fraction of the k samples
  pass_k = per.get(f"pass_at_{m['k']}")
  return {"avg_at_k": correct,
          "pass_at_k": (correct > 0).astype(np.float64) if pass_k is None
          else np.asarray(pass_k, np.float64),
          "length": np.asarray(per["length"], np.float64),
          "entropy": np.asarray(per["entropy"], np.float64)}


def bootstrap(values_SxP: np.ndarray, n_boot: int = N_BOOT, seed: int = 0):
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
        vals = [c[step][key] if name != "pass_at_k" else c[step][key][str(c[step]["k"])]
                for c in curves]
        row[name] = (float(np.mean(vals)), None, None)
    out[step] = row
  return out


def load_study(out_dir: str) -> dict[str, dict[int, dict]]:
  """{arm: summarise(its seeds)} for every OUT/<arm>/seed*/rl_evals.jsonl."""
  arms = {}
  for path in sorted(glob.glob(os.path.join(out_dir, "*", "seed*", "rl_evals.jsonl"))):
    arm = os.path.basename(os.path.dirname(os.path.dirname(path)))
    arms.setdefault(arm, []).append(read_curve(os.path.dirname(path)))
  return {arm: summarise(curves) for arm, curves in arms.items()}


def _cell(v) -> str:
  mean, lo, hi = v
  return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else " [n/a]")


def markdown(study: dict[str, dict[int, dict]]) -> str:
  lines = ["| init (arm) | RL step | seeds | Avg@k | Pass@k | length | entropy |",
           "|---|---|---|---|---|---|---|"]
  for arm, rows in study.items():
    for step, row in rows.items():
      lines.append(f"| {arm} | {step} | {row['seeds']} | " +
                   " | ".join(_cell(row[m]) for m in METRICS) + " |")
  return "\n".join(lines) + "\n"


def plot(study: dict[str, dict[int, dict]], path: str) -> None:
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
  for arm, rows in study.items():
    steps = sorted(rows)
    for ax, name in zip(axes, METRICS):
      mean = [rows[s][name][0] for s in steps]
      line, = ax.plot(steps, mean, marker="o", label=arm)
      if all(rows[s][name][1] is not None for s in steps):
        ax.fill_between(steps, [rows[s][name][1] for s in steps],
                        [rows[s][name][2] for s in steps], color=line.get_color(), alpha=0.2)
  for ax, name in zip(axes, METRICS):
    ax.set_xlabel("RL step")
    ax.set_title(name)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
