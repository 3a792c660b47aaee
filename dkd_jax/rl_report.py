"""`python -m dkd_jax.rl_report OUT_DIR [--out=DIR] [--study_json=PATH]`: the RL-init study.

Reads OUT_DIR/<arm>/seed<s>/rl_evals.jsonl and metrics.jsonl (launch/rl_study.sh's layout)
and writes rl_results.md (Avg@k / Pass@k / length / entropy vs RL step: seed means with
95% t-intervals over seeds; each initialisation's per-seed RL gain; the declared RL claims
with their seed-level paired tests, Holm-corrected; the informative GRPO groups per step)
and rl_curves.png into --out (see `evals.rl_curves`). With --study_json (the distillation
study's study.json) the figure carries the teacher, warm-start and constant-answer lines
and the claims are also written to OUT/rl_claims.json.
"""

import json

import numpy as np
from absl import app
from absl import flags

from dkd_jax.core import metrics_log
from dkd_jax.core import paths
from dkd_jax.evals import rl_curves

_OUT = flags.DEFINE_string("out", "report", "Folder for rl_results.md and rl_curves.png.")
_STUDY_JSON = flags.DEFINE_string("study_json", "", "study.json for the reference lines.")


def _refs(path: str) -> dict | None:
  if not path:
    return None
  r = json.loads(paths.as_path(path).read_text())
  warm = r.get("warm_start", {}).get("avg_at_k") or []
  return {
    "teacher": r["teacher"]["avg_at_k"],
    "warm_start": float(np.mean(warm)) if warm else None,
    "constant_answer": r["constant_answer_baseline"],
  }


def main(argv) -> None:
  if len(argv) != 2:
    raise app.UsageError(
      "give the study's OUT directory: python -m dkd_jax.rl_report OUT [--out=DIR]"
    )
  study = rl_curves.load_study(argv[1])
  if not study:
    raise app.UsageError(f"no {argv[1]}/<arm>/seed*/rl_evals.jsonl found")
  out = paths.as_path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  curves = rl_curves.load_curves(argv[1])
  info = rl_curves.informative(argv[1])
  claims = rl_curves.judge(curves, info=info)
  table = rl_curves.markdown(study)
  table += "\n## RL gain per initialisation (last evaluation − step 0, per seed)\n\n"
  table += rl_curves.gains_markdown(curves)
  table += "\n## Declared RL claims (seed-level paired t-test, Holm)\n\n"
  table += rl_curves.claims_markdown(claims)
  table += "\n## Informative GRPO groups\n\n"
  table += rl_curves.informative_markdown(info)
  (out / "rl_results.md").write_text(table)
  (out / "rl_claims.json").write_text(
    json.dumps(metrics_log.strict_json(claims), indent=1, allow_nan=False)
  )
  rl_curves.plot(study, out / "rl_curves.png", _refs(_STUDY_JSON.value))
  print(table)
  print(f"wrote {_OUT.value}/rl_results.md, rl_claims.json, rl_curves.png")


if __name__ == "__main__":
  app.run(main)
