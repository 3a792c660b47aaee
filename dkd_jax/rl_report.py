"""`python -m dkd_jax.rl_report OUT_DIR [--out=DIR]`: the RL-init study's table and figure.

Reads OUT_DIR/<arm>/seed<s>/rl_evals.jsonl (launch/rl_study.sh's layout) and writes
rl_results.md (Avg@k / Pass@k / length / entropy vs RL step, mean over seeds, 95%
bootstrap intervals over problems; then each initialisation's RL gain and the paired
differences of gains) and rl_curves.png into --out (see `evals.rl_curves`).
"""

from absl import app
from absl import flags

from dkd_jax.core import paths
from dkd_jax.evals import rl_curves

_OUT = flags.DEFINE_string("out", "report", "Folder for rl_results.md and rl_curves.png.")


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
  table = rl_curves.markdown(study)
  table += "\n## RL gain per initialisation (paired: same problems and seeds)\n\n"
  table += rl_curves.gains_markdown(rl_curves.load_curves(argv[1]))
  (out / "rl_results.md").write_text(table)
  rl_curves.plot(study, out / "rl_curves.png")
  print(table)
  print(f"wrote {_OUT.value}/rl_results.md, rl_curves.png")


if __name__ == "__main__":
  app.run(main)
