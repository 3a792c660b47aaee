"""The tradeoff plots and table of a set of runs (what `python -m dkd_jax.report` draws).

Reads each run's summary.json (written by run.run) and draws the paper's three
tradeoffs as PNGs:
  accuracy_vs_entropy.png  — KL direction: Avg@k vs mean token entropy, per quadrant;
  accuracy_vs_compute.png  — prefix source: Avg@k vs generation compute (teacher vs
                             student prefixes);
  horizon.png              — training horizon: Avg@k and response length vs steps,
                             with and without the length curriculum.
and a markdown table (results.md) with one row per run.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from etils import epath

from dkd_jax.core import paths


def _or_nan(x) -> float:
  """A summary's KL (null where it has no value: two vocabularies) as a float."""
  return float("nan") if x is None else float(x)


def load_runs(run_dirs) -> list[dict]:
  runs = []
  for d in run_dirs:
    path = paths.as_path(d) / "summary.json"
    if not path.exists():
      raise FileNotFoundError(
        f"{path} is missing: run `python -m dkd_jax.launch` or "
        "`python -m dkd_jax.evaluate` on that directory first"
      )
    s = json.loads(path.read_text())
    s["run"] = paths.as_path(d).name
    runs.append(s)
  return runs


def save_figure(fig: plt.Figure, path: epath.Path) -> None:
  """`fig` as a PNG at `path` (local or remote: written through the epath file)."""
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)


def label(s) -> str:
  o = s["objective"]
  kl = o["kl"] if o["kl"] != "mixed" else f"mixed(α={o['alpha']})"
  return f"{o['prefix']}/{kl}" + ("+curriculum" if s.get("curriculum_enabled") else "")


def _main_eval(s) -> dict:
  """The first eval set's results (each summary holds one dict per eval set)."""
  return next(iter(s["eval"].values()))


def _gen_seconds(s) -> float:
  return sum(s.get("generation_cost", {}).get("seconds", {}).values())


def _main_runs(runs) -> list[dict]:
  """The objective-comparison runs: everything but the horizon sweep (run names horizon_*)."""
  return [s for s in runs if not s["run"].startswith("horizon_")] or runs


def plot_entropy(runs, out) -> None:
  fig, ax = plt.subplots(figsize=(5, 4))
  for s in _main_runs(runs):
    e = _main_eval(s)
    ax.scatter(e["mean_entropy"], e["avg_at_k"], s=40)
    ax.annotate(label(s), (e["mean_entropy"], e["avg_at_k"]), fontsize=7)
  ax.set(
    xlabel="mean token entropy (nats)", ylabel="Avg@k", title="KL direction: accuracy vs entropy"
  )
  fig.tight_layout()
  save_figure(fig, paths.as_path(out) / "accuracy_vs_entropy.png")
  plt.close(fig)


def plot_compute(runs, out) -> None:
  fig, ax = plt.subplots(figsize=(5, 4))
  for s in _main_runs(runs):
    prefix = s["objective"]["prefix"]
    marker = {"teacher": "s", "student": "o"}.get(prefix, "^")
    ax.scatter(_gen_seconds(s), _main_eval(s)["avg_at_k"], marker=marker, s=40)
    ax.annotate(label(s), (_gen_seconds(s), _main_eval(s)["avg_at_k"]), fontsize=7)
  ax.set(
    xlabel="generation time during training (s)",
    ylabel="Avg@k",
    title="prefix source: accuracy vs generation compute",
  )
  fig.tight_layout()
  save_figure(fig, paths.as_path(out) / "accuracy_vs_compute.png")
  plt.close(fig)


def plot_horizon(runs, out) -> None:
  """Runs sharing the curriculum runs' objective, by horizon, with / without curriculum."""
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
  ref = [s["objective"] for s in runs if s.get("curriculum_enabled")]
  same = [s for s in runs if not ref or s["objective"] == ref[0]]
  for cur in (False, True):
    rows = sorted(
      ((s["steps"], _main_eval(s)) for s in same if bool(s.get("curriculum_enabled")) == cur),
      key=lambda r: r[0],
    )
    if not rows:
      continue
    name = "with curriculum" if cur else "without curriculum"
    a1.plot([r[0] for r in rows], [r[1]["avg_at_k"] for r in rows], "o-", label=name)
    a2.plot([r[0] for r in rows], [r[1]["mean_response_len"] for r in rows], "o-", label=name)
  a1.set(xlabel="training steps", ylabel="Avg@k", title="accuracy vs horizon")
  a2.set(xlabel="training steps", ylabel="mean response length", title="length vs horizon")
  a1.legend(fontsize=7)
  fig.tight_layout()
  save_figure(fig, paths.as_path(out) / "horizon.png")
  plt.close(fig)


def table(runs) -> str:
  head = (
    "| run | objective | steps | Avg@k | Pass@k (max k) | length | trunc | entropy | "
    "fwd KL | rev KL | gen s |"
  )
  lines = [head, "|" + "---|" * 11]
  for s in runs:
    e = _main_eval(s)
    pk = e["pass_at_k"][str(max(int(k) for k in e["pass_at_k"]))]
    lines.append(
      f"| {s['run']} | {label(s)} | {s['steps']} | {e['avg_at_k']:.3f} | {pk:.3f} | "
      f"{e['mean_response_len']:.1f} | {e['truncation_rate']:.2f} | "
      f"{e['mean_entropy']:.3f} | {_or_nan(e.get('fkl')):.4f} | "
      f"{_or_nan(e.get('rkl')):.4f} | {_gen_seconds(s):.1f} |"
    )
  return "\n".join(lines) + "\n"


def write_report(run_dirs, out: str) -> str:
  """Writes the three plots and results.md into `out`; returns the table."""
  runs = load_runs(run_dirs)
  paths.as_path(out).mkdir(parents=True, exist_ok=True)
  plot_entropy(runs, out)
  plot_compute(runs, out)
  plot_horizon(runs, out)
  text = table(runs)
  (paths.as_path(out) / "results.md").write_text(text)
  return text
