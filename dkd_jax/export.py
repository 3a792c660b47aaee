"""`python -m dkd_jax.export --workdir=RUN_DIR --out=DIR [--format=hf|gguf] [--step=N]`.

The student of a run's latest (or `--step`) checkpoint as a Hugging Face directory
(config.json, model.safetensors, the run tokenizer's files and chat template,
generation_config.json) or as a GGUF file (DIR/model.gguf, or `--out=FILE.gguf`), for
transformers, vLLM, lm-eval or llama.cpp. The run's saved config (RUN_DIR/config.json)
says what the student is; nothing is written into RUN_DIR except under `--out`.
"""

from absl import app
from absl import flags
from absl import logging
from jax.sharding import Mesh

from dkd_jax.core import platforms
from dkd_jax.core import sharding
from dkd_jax.data.protocols import Tokenizer
from dkd_jax.models import handoff
from dkd_jax.models.decoder import ModelConfig
from dkd_jax.runs import configuration
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import workdir as run_dir

_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory whose student to export.")
_OUT = flags.DEFINE_string("out", None, "Output directory (or FILE.gguf with --format=gguf).")
_FORMAT = flags.DEFINE_enum(
  "format",
  "hf",
  list(handoff.FORMATS),
  "hf: a Hugging Face directory; gguf: one llama.cpp GGUF file.",
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", list(handoff.DTYPES), "Stored precision of the weight matrices."
)


def _mesh(c, log) -> Mesh:
  """The run's mesh when this host has its devices, else one device (export only
  gathers the params to the host)."""
  try:
    return sharding.resolve_mesh(c.mesh)
  except ValueError as e:
    log(f"export: {e}; restoring onto one device instead")
    return sharding.make_mesh((1, 1, 1))


def student_params(
  c, workdir: str, step: int | None = None, log=print
) -> tuple[ModelConfig, dict, Tokenizer]:
  """(student ModelConfig, params, tokenizer) of a run's checkpoint; reads only."""
  configuration.validate(c)
  tokenizer = pair_lib.load_tokenizer(c, workdir, read_only=True)
  teacher_cfg = pair_lib.teacher_config(c, workdir, read_only=True)
  cfg = pair_lib.student_config(c, teacher_cfg, workdir, read_only=True)
  return cfg, run_dir.restore_student(workdir, _mesh(c, log), cfg, step, c=c), tokenizer


def export_run(
  workdir: str,
  out: str,
  fmt: str = "hf",
  step: int | None = None,
  dtype: str = "float32",
  log=print,
) -> str:
  """Writes the student of `workdir` to `out`; returns the path written."""
  c = run_dir.load_config(workdir)
  cfg, params, tokenizer = student_params(c, workdir, step, log)
  path = handoff.write_model(fmt, out, cfg, params, tokenizer, dtype)
  log(
    f"export: {cfg.arch} student ({cfg.n_layers} layers, d_model {cfg.d_model}, vocab "
    f"{cfg.vocab_size}) of {workdir} -> {path} ({fmt}, {dtype})"
  )
  return path


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  platforms.prefer_cpu_without_accelerator()  # before JAX starts (core/platforms.py)
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("give the run directory and the output: --workdir=RUN_DIR --out=DIR")
  # orbax logs every file op at INFO, and warns that a read-only checkpoint is read-only.
  logging.set_verbosity(logging.ERROR)
  export_run(_WORKDIR.value, _OUT.value, _FORMAT.value, _STEP.value, _DTYPE.value)


if __name__ == "__main__":
  app.run(main)
