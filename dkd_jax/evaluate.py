"""`python -m dkd_jax.evaluate --workdir=RUN_DIR [--config=configs/X.py[:arg]]`: evaluate a run.

Restores the student of the run's latest checkpoint and evaluates it on
`config.eval.datasets` (Avg@k, Pass@k, length, truncation, entropy, held-out KL; see
`evals.harness`). The config defaults to the one the run saved (RUN_DIR/config.json);
`--config` (with `--config.eval.k=8` style overrides) evaluates under another.
Results go to RUN_DIR/eval.json and RUN_DIR/eval.md, the only files it writes there: a
missing bootstrapped teacher is an error naming the command that makes it, and a GGUF
or data file not yet converted in RUN_DIR is converted into a temporary folder.
"""

import json

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dkd_jax.core import paths
from dkd_jax.core import platforms
from dkd_jax.core import sharding
from dkd_jax.evals import harness
from dkd_jax.runs import configuration
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import tasks
from dkd_jax.runs import workdir as run_dir

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (default: the run's saved config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory to evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Alias of --workdir.")


def evaluate_checkpoint(c, workdir: str, log=print) -> dict:
  """{eval set: metrics} for the student of `workdir`'s latest checkpoint. Reads the
  run directory only (read_only everywhere): the caller writes the eval.* files."""
  configuration.validate(c)
  mesh = sharding.resolve_mesh(c.mesh)
  tokenizer = pair_lib.load_tokenizer(c, workdir, read_only=True)
  task = tasks.load_task(c, tokenizer, workdir, read_only=True)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log, read_only=True)
  params = run_dir.restore_student(workdir, mesh, pair.student_cfg, c=c)
  return harness.evaluate_run(configuration.eval_spec(c), pair, task, params, mesh, log)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  platforms.prefer_cpu_without_accelerator()  # before JAX starts (core/platforms.py)
  workdir = _WORKDIR.value or _CHECKPOINT.value
  if not workdir:
    raise app.UsageError("give the run directory: --workdir=RUN_DIR")
  # orbax logs every file op at INFO, and warns that a read-only checkpoint is read-only.
  logging.set_verbosity(logging.ERROR)
  c = _CONFIG.value if _CONFIG.value is not None else run_dir.load_config(workdir)
  results = evaluate_checkpoint(c, workdir)
  markdown = harness.markdown(results)
  out = paths.as_path(workdir)
  (out / "eval.json").write_text(json.dumps(results, indent=2))
  (out / "eval.md").write_text(markdown)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
