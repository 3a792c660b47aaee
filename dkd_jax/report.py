"""`python -m dkd_jax.report RUN_DIR... [--out=DIR] [--study]`: the tradeoff plots and table.

Reads each run directory's summary.json and writes accuracy_vs_entropy.png,
accuracy_vs_compute.png, horizon.png and results.md into --out (see `evals.plots`).
With --study the directories are a study's `<arm>_s<seed>` runs: one row per arm with
95% intervals, the paper's claims as paired comparisons (claims.md) and the plots of
`evals.study`.
"""

from absl import app
from absl import flags

from dkd_jax.evals import plots
from dkd_jax.evals import study

_OUT = flags.DEFINE_string("out", "report", "Folder for the plots and results.md.")
_STUDY = flags.DEFINE_bool(
  "study",
  False,
  "Runs are a study's <arm>_s<seed> directories: aggregate seeds, intervals, claims.",
)


def main(argv) -> None:
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError(
      "give one or more run directories: python -m dkd_jax.report RUN_DIR... [--out=DIR]"
    )
  if _STUDY.value:
    print(study.write_study_report(dirs, _OUT.value))
    print(
      f"wrote {_OUT.value}/results.md, claims.md, tradeoffs.png, training_curves.png, horizon.png"
    )
    return
  print(plots.write_report(dirs, _OUT.value))
  print(
    f"wrote {_OUT.value}/accuracy_vs_entropy.png, accuracy_vs_compute.png, horizon.png, results.md"
  )


if __name__ == "__main__":
  app.run(main)
