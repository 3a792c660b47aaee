"""The study's figures: tradeoffs, trajectories along the declared evaluation points, and
training curves, each with the reference lines a reader needs (teacher, warm start,
constant-answer baseline, length budget). Arms are told apart by a legend outside the
axes, never by text placed next to a point, so labels cannot overprint.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np

from dkd_jax.core import paths
from dkd_jax.evals import plots
from dkd_jax.evals import preregistration as plan
from dkd_jax.evals import study

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = "osD^v<>phX*"


def references(record: dict) -> dict:
  """Reference values from a study.json record."""
  w = record.get("warm_start", {})
  mean = lambda xs: float(np.mean(xs)) if xs else None
  return {
    "teacher": record["teacher"],
    "warm_start": {m: mean(w.get(m, [])) for m in ("avg_at_k", "entropy", "length")},
    "constant_answer": record["constant_answer_baseline"],
    "budget": record["budget"],
  }


def _reference_lines(ax, refs, metric: str, vertical: bool = False) -> None:
  """Teacher / warm start / constant answer (accuracy), teacher (entropy), budget (length)."""
  if not refs:
    return
  line = ax.axvline if vertical else ax.axhline
  items = []
  if metric == "avg_at_k":
    items = [
      (refs["teacher"]["avg_at_k"], "teacher", "--"),
      (refs["warm_start"].get("avg_at_k"), "warm start", ":"),
      (refs["constant_answer"], "constant answer", "-."),
    ]
  elif metric == "entropy":
    items = [
      (refs["teacher"]["entropy"], "teacher", "--"),
      (refs["warm_start"].get("entropy"), "warm start", ":"),
    ]
  elif metric == "length":
    items = [(refs["budget"], "budget", "-"), (refs["teacher"]["len_p50"], "teacher p50", "--")]
  for y, label, style in items:
    if y is not None:
      line(y, color="0.3", lw=0.9, ls=style, label=label)


def _legend(ax, others=()) -> None:
  """One legend (arms and reference lines of `ax` and `others`), outside the axes."""
  handles, labels = ax.get_legend_handles_labels()
  for o in others:
    h, lab = o.get_legend_handles_labels()
    handles, labels = handles + h, labels + lab
  if handles:
    seen = dict(zip(labels, handles))
    ax.legend(seen.values(), seen.keys(), fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))


def _err(t) -> list | None:
  return None if np.isnan(t[1]) else [[t[0] - t[1]], [t[2] - t[0]]]


def plot_tradeoffs(arms, out: str, refs=None) -> None:
  """Accuracy vs entropy and vs generated tokens: one point per arm, t-intervals."""
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
  for i, (arm, runs) in enumerate(arms.items()):
    s = study.arm_stats(runs)
    kw = dict(fmt=MARKERS[i % len(MARKERS)], capsize=3, label=arm)
    a1.errorbar(
      [s["entropy"][0]], [s["avg_at_k"][0]], xerr=_err(s["entropy"]), yerr=_err(s["avg_at_k"]), **kw
    )
    a2.errorbar([s["generated_tokens"]], [s["avg_at_k"][0]], yerr=_err(s["avg_at_k"]), **kw)
  _reference_lines(a1, refs, "avg_at_k")
  _reference_lines(a1, refs and {**refs, "warm_start": {}}, "entropy", vertical=True)
  _reference_lines(a2, refs, "avg_at_k")
  a1.set(xlabel="mean token entropy (nats)", ylabel="Avg@k", title="accuracy vs entropy")
  a2.set(
    xlabel="tokens generated during training",
    ylabel="Avg@k",
    title="accuracy vs generation compute",
    xscale="symlog",
  )
  _legend(a2, [a1])
  fig.suptitle("seed mean, 95% t-interval over seeds", fontsize=8)
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "tradeoffs.png")
  plt.close(fig)


def plot_trajectories(arms, out: str, refs=None, problems: int = plan.CURVE_PROBLEMS) -> None:
  """Avg@k, length, entropy and truncation at the declared evaluation points (the first
  `problems` held-out problems at every point): seed mean, band = seed range."""
  metrics = ("avg_at_k", "length", "entropy", "truncation")
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
  for arm, runs in arms.items():
    c = study.curves(runs, problems)
    if not c:
      continue
    x = [int(s) for s in c]
    for ax, m in zip(axes, metrics):
      ys = np.array([c[s][m] for s in c])  # [points, seeds]
      (line,) = ax.plot(x, ys.mean(1), marker="o", ms=3, label=arm)
      ax.fill_between(x, ys.min(1), ys.max(1), color=line.get_color(), alpha=0.15)
  for ax, m in zip(axes, metrics):
    _reference_lines(ax, refs, m)
    ax.set(xlabel="training step", title=m)
  _legend(axes[-1], axes[:-1])
  fig.suptitle(f"evaluation along each trajectory (first {problems} held-out problems)", fontsize=8)
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "trajectories.png")
  plt.close(fig)


def _curve(run_dir, key) -> tuple[np.ndarray, np.ndarray]:
  rows = study.read_jsonl(paths.as_path(run_dir) / "metrics.jsonl")
  return np.array([r["step"] for r in rows]), np.array([r.get(key, np.nan) for r in rows])


def plot_training(arms, out: str, refs=None) -> None:
  """Rollout length and student entropy over training: seed mean, band = seed range."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  for arm, runs in arms.items():
    if arm == plan.WARM_START:
      continue
    for ax, key in zip(axes, ("response_len", "ent_s")):
      cs = [_curve(s["run_dir"], key) for s in runs]
      n = min(len(c[0]) for c in cs)
      if n == 0:
        continue
      x, ys = cs[0][0][:n], np.stack([c[1][:n] for c in cs])
      (line,) = ax.plot(x, ys.mean(0), lw=1, label=arm)
      ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
  _reference_lines(axes[0], refs, "length")
  _reference_lines(axes[1], refs and {**refs, "warm_start": {}}, "entropy")
  axes[0].set(xlabel="step", ylabel="tokens", title="rollout length during training")
  axes[1].set(xlabel="step", ylabel="nats", title="student token entropy during training")
  _legend(axes[1], axes[:1])
  fig.tight_layout()
  plots.save_figure(fig, paths.as_path(out) / "training_curves.png")
  plt.close(fig)


def plot_all(arms, out: str, refs=None) -> None:
  plot_tradeoffs({a: r for a, r in arms.items() if a != plan.WARM_START}, out, refs)
  plot_trajectories({a: r for a, r in arms.items() if a != plan.WARM_START}, out, refs)
  plot_training(arms, out, refs)


def load_references(path: str) -> dict:
  return references(json.loads(paths.as_path(path).read_text()))
