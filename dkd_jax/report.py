"""`python -m dkd_jax.report RUN_DIR... [--out=DIR]`: the tradeoff plots and table.

Reads each run directory's summary.json and writes accuracy_vs_entropy.png,
accuracy_vs_compute.png, horizon.png and results.md into --out (see `evals.plots`).
"""
from absl import app
from absl import flags

from dkd_jax.evals import plots

_OUT = flags.DEFINE_string("out", "report", "Folder for the plots and results.md.")


def main(argv):
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError("give one or more run directories: "
                         "python -m dkd_jax.report RUN_DIR... [--out=DIR]")
  print(plots.write_report(dirs, _OUT.value))
  print(f"wrote {_OUT.value}/accuracy_vs_entropy.png, accuracy_vs_compute.png, horizon.png, "
        "results.md")


if __name__ == "__main__":
  app.run(main)
