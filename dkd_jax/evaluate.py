"""`python -m dkd_jax.evaluate --workdir=RUN_DIR [--config=configs/X.py[:arg]]`: evaluate a run.

Restores the student of the run's latest checkpoint and evaluates it on
`config.eval.datasets` (Avg@k, Pass@k, length, truncation, entropy, held-out KL; see
`evals.harness`). The config defaults to the one the run saved (RUN_DIR/config.json);
`--config` (with `--config.eval.k=8` style overrides) evaluates under another.
`--teacher` evaluates the run's teacher instead (eval_teacher.json / .md), `--budget=N`
caps every evaluated response at N tokens, and `--reference=PATH` also measures the
teacher's frozen reference rollouts (`runs.reference`: `--reference_prompts` training
problems up to `--reference_cap` tokens) into PATH, the input of `remedies.derive`.
Results go to RUN_DIR/eval.json and RUN_DIR/eval.md, the only files it writes there: a
missing bootstrapped teacher is an error naming the command that makes it, and a GGUF
or data file not yet converted in RUN_DIR is converted into a temporary folder.
"""

import dataclasses
import json

import ml_collections as mlc
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
from dkd_jax.runs import reference as reference_lib
from dkd_jax.runs import tasks
from dkd_jax.runs import workdir as run_dir

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (default: the run's saved config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory to evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Alias of --workdir.")
_TEACHER = flags.DEFINE_bool("teacher", False, "Evaluate the run's teacher, not its student.")
_BUDGET = flags.DEFINE_integer("budget", 0, "Response cap of the evaluation (0 = the config's).")
_REFERENCE = flags.DEFINE_string("reference", "", "Also write the teacher's reference here.")
_REF_PROMPTS = flags.DEFINE_integer("reference_prompts", 512, "Training prompts it uses.")
_REF_CAP = flags.DEFINE_integer("reference_cap", 240, "Response cap of the reference rollouts.")


def evaluate_checkpoint(
  c, workdir: str, log=print, teacher: bool = False, reference: str = ""
) -> dict:
  """{eval set: metrics} for the student of `workdir`'s latest checkpoint (or, with
  `teacher`, the run's teacher). Reads the run directory only (read_only everywhere): the
  caller writes the eval.* files; `reference` names a file outside it for the teacher's
  reference rollouts."""
  configuration.validate(c)
  mesh = sharding.resolve_mesh(c.mesh)
  tokenizer = pair_lib.load_tokenizer(c, workdir, read_only=True)
  task = tasks.load_task(c, tokenizer, workdir, read_only=True)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log, read_only=True)
  spec = configuration.eval_spec(c)
  if reference:
    ref = reference_lib.measure(c, pair, task, mesh, prompts=_REF_PROMPTS.value, cap=_REF_CAP.value)
    paths.as_path(reference).write_text(json.dumps(ref.to_json()))
    log(f"teacher reference: {len(ref.lengths)} rollouts up to {ref.cap} tokens -> {reference}")
  if teacher:  # a teacher with another tokenizer than the student's answers in its own
    if pair.teacher_tokenizer is not None:
      task = dataclasses.replace(task, tokenizer=pair.teacher_tokenizer)
    return harness.evaluate_run(spec, pair, task, pair.teacher_params, mesh, log, "teacher")
  params = run_dir.restore_student(workdir, mesh, pair.student_cfg, c=c)
  return harness.evaluate_run(spec, pair, task, params, mesh, log)


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
  if _BUDGET.value:
    c = mlc.ConfigDict(c.to_dict())
    c.eval.max_response_len = _BUDGET.value
  results = evaluate_checkpoint(c, workdir, teacher=_TEACHER.value, reference=_REFERENCE.value)
  markdown = harness.markdown(results)
  name = "eval_teacher" if _TEACHER.value else "eval"
  out = paths.as_path(workdir)
  (out / f"{name}.json").write_text(json.dumps(results, indent=2))
  (out / f"{name}.md").write_text(markdown)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
