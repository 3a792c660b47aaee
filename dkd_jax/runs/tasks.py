"""The task of a run: tokenizer, train/eval records, the prompt pipeline and the grader.

`chain` (arithmetic chains with self-checks and redos: response length is up to the
policy; the study's task) and `arithmetic` (fixed-length worked solutions) are built in
(char tokenizer, exact integer answers); `gsm8k` / `math` / `aime` / `amc` read local
files and grade with the math verifier, tokenized by the models' own tokenizer.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Callable
from typing import Any

from dkd_jax.core import multihost
from dkd_jax.core import rng
from dkd_jax.data import arithmetic
from dkd_jax.data import chain
from dkd_jax.data import pipeline
from dkd_jax.data import sources
from dkd_jax.evals import math_eval
from dkd_jax.objectives import prefixes
from dkd_jax.runs import workdir as run_dir

_CALC_MARKS = re.compile(r"<<[^>]*>>")
BUILT_IN = ("arithmetic", "chain")  # synthetic tasks: char tokenizer, exact answers


@dataclasses.dataclass
class Task:
  name: str
  tokenizer: Any
  train_records: list
  eval_records: list
  train_batches: Any  # grain IterDataset of prompt (+response) batches
  grade: Callable[[str, str], math_eval.Grade]  # (response text, gold) -> Grade
  train_encoded: Any = None  # the tokenized train records the batches draw from
  teacher_tokenizer: Any = None  # set when the teacher reads another tokenizer

  def eval_sets(self, names, data_dir: str | None = None) -> dict[str, list]:
    """Named eval sets: this task's held-out split, or local benchmark files."""
    out = {}
    for name in names:
      if name in BUILT_IN or name == self.name:
        out[name] = self.eval_records
      else:
        if not data_dir:
          raise ValueError(
            f"config.eval.datasets names {name!r}, which needs "
            "config.eval.data_dir (e.g. ../shared/data)"
          )
        out[name] = sources.read_shared(name, data_dir)
    return out


def _grade_arithmetic(response: str, gold: str) -> math_eval.Grade:
  """Exact integer match on the final `#### N` line (no symbolic checking needed)."""
  extracted = math_eval.extract_answer(response)
  if arithmetic.score(response, gold):
    return math_eval.Grade(True, extracted, math_eval.CORRECT)
  reason = math_eval.NO_ANSWER if extracted is None else math_eval.MISMATCH
  return math_eval.Grade(False, extracted, reason)


def _arith_config(c) -> arithmetic.ArithmeticConfig:
  a = c.data.arithmetic
  return arithmetic.ArithmeticConfig(
    min_operands=a.min_operands, max_operands=a.max_operands, max_digits=a.max_digits
  )


def _tfds_dir(c, workdir: str, read_only: bool) -> str:
  """WORKDIR/tfds, or (read_only, and the file not prepared there yet) a temporary
  folder: readers of a run directory never write into it."""
  from dkd_jax.data import tfds_math  # tfds import is slow: only when used

  data_dir = str(run_dir.tfds_dir(workdir))
  if read_only and not tfds_math.is_prepared(c.data.path, c.data.task, data_dir=data_dir):
    return tempfile.mkdtemp(prefix="dkd_tfds_")
  return data_dir


def _chain_config(c) -> chain.ChainConfig:
  ch = c.data.chain
  return chain.ChainConfig(
    min_ops=ch.min_ops,
    max_ops=ch.max_ops,
    check_prob=ch.check_prob,
    error_prob=ch.error_prob,
    max_redos=ch.max_redos,
  )


def problem_stream(c) -> Callable[[int, int], dict]:
  """(stream_seed, index) -> problem `index` of a built-in task's stream `stream_seed`
  (gold solution included): what the warm start draws its own split from."""
  if c.data.task == "chain":
    cfg = _chain_config(c)
    return lambda seed, i: chain.make_problem(seed, i, cfg)
  if c.data.task == "arithmetic":
    cfg = _arith_config(c)
    return lambda seed, i: arithmetic.make_problem(seed, i, cfg)
  raise ValueError(f"data.task={c.data.task!r} has no problem stream; built-in: {BUILT_IN}")


def records_for(c, workdir: str | None = None, read_only: bool = False) -> tuple[list, list]:
  """(train, eval) records. Arithmetic eval problems come from a disjoint seed stream;
  a local file is prepared as a TFDS dataset in WORKDIR/tfds (data.reader='tfds') or
  read directly (data.reader='plain'), and split by `file_split`."""
  if c.data.task == "chain":
    ch = c.data.chain
    # One fixed problem set for every seed and arm: runs are compared on the same
    # held-out problems (paired), which are disjoint in content from training.
    return chain.make_splits(ch.num_train, ch.num_eval, _chain_config(c), data_seed=ch.data_seed)
  if c.data.task == "arithmetic":
    cfg = _arith_config(c)
    a = c.data.arithmetic
    return (
      arithmetic.make_records(a.num_train, rng.int_seed(c.seed, "train_problems"), cfg),
      arithmetic.make_records(a.num_eval, rng.int_seed(c.seed, "eval_problems"), cfg),
    )
  held_out, train, _ = file_split(c, file_records(c, workdir, read_only))
  return train, held_out


def file_records(c, workdir: str | None = None, read_only: bool = False) -> list:
  """Every record of the local file `data.path`, in file order."""
  if c.data.reader == "tfds" and workdir:
    from dkd_jax.data import tfds_math  # tfds import is slow: only when used

    # Prepared once, by process 0; the other processes then read the prepared files.
    records = multihost.primary_first(
      "tfds_prepare",
      lambda: tfds_math.records_from_file(
        c.data.path, c.data.task, data_dir=_tfds_dir(c, workdir, read_only)
      ),
    )
  else:
    records = sources.read_records(c.data.path, c.data.task)
  for r in records:  # GSM8K calculator annotations are not text a model should learn
    r["solution"] = _CALC_MARKS.sub("", r.get("solution", ""))
  return records


def warm_start_pool_size(c) -> int:
  """Problems a local file keeps back for the student's warm start: the last
  `student.warm_start.num_problems` of the file when `student.init='warm_start'`, else 0."""
  s = c.get("student")  # a data-only config (evaluate's task reader) has no student
  if c.data.task in BUILT_IN or s is None or s.get("init") != "warm_start":
    return 0
  return int(s.warm_start.num_problems)


def file_split(c, records: list) -> tuple[list, list, list]:
  """(held-out, train, warm-start pool) of a local file's records, in file order: the first
  problems are held out, the last `warm_start_pool_size` are the warm start's gold traces,
  the distillation trains on the rest. Disjoint by position; the warm start also skips any
  question that recurs in the other two."""
  n_eval = min(c.eval.num_problems, max(len(records) // 10, 1))
  n_pool = warm_start_pool_size(c)
  if n_pool and n_eval + n_pool >= len(records):
    raise ValueError(
      f"config.student.warm_start.num_problems={n_pool} leaves no training problems in "
      f"{c.data.path} ({len(records)} records, {n_eval} held out); lower num_problems"
    )
  n_train = len(records) - n_pool
  return records[:n_eval], records[n_eval:n_train], records[n_train:]


def load_task(
  c, tokenizer, workdir: str | None = None, read_only: bool = False, teacher_tokenizer=None
) -> Task:
  train, held_out = records_for(c, workdir, read_only)
  with_responses = (
    c.data.teacher_source in (prefixes.DATASET, prefixes.CACHED_TOPK)
    and c.objective.prefix != prefixes.STUDENT
  )
  encoded = pipeline.encode_records(
    train,
    tokenizer,
    max_prompt_len=c.data.max_prompt_len,
    truncate=c.data.truncate_prompts,
    with_responses=with_responses,
    max_response_len=c.data.max_response_len,
  )
  batches = pipeline.batch_dataset(
    encoded, seed=rng.int_seed(c.seed, "train_shuffle"), batch_size=c.data.batch_size
  )
  grade = _grade_arithmetic if c.data.task in BUILT_IN else math_eval.grade
  return Task(c.data.task, tokenizer, train, held_out, batches, grade, encoded, teacher_tokenizer)
