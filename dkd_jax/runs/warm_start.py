"""A pretrained student: `config.student.init='warm_start'` (DESIGN §8, competence first).

The paper's students are pretrained. From a random init, reverse KL on teacher prefixes
learns little (BUILD_NOTES, "rev_teacher from a random student (issue 20)": its push on
the teacher's token scales with the student's own probability of that token, so the
tokens a random student has given almost no mass barely move). A warm start is a short
SFT on gold traces of a split that is
disjoint in content from the distillation's training and held-out problems: the task's
problem stream under the seed's own stream id, skipping every question that occurs in
either set. `config.student.warm_start` sets its steps, learning rate, batch size and
number of problems. The SFT starts from the student's random init for the seed, which is
the init that `student.init='random'` uses.

A local file (GSM8K, MATH) has no problem stream: its last `num_problems` records are
kept back from the distillation (`tasks.file_split`) and are the warm start's gold traces.

`student(c, seed, mesh, task, workdir, log)` returns (graphdef, params) and depends only
on the config and the seed, so a study warm-starts each seed's student from its own split.
The result is cached in WORKDIR/student_warm_start, keyed by the model, schedule, seed and
data, like the bootstrapped teacher. The cache also keeps the warm start's own evaluation
on the held-out problems before any distillation (`warm_start_eval.json`), so the run's
summary shows what the distillation added.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from dkd_jax.core import multihost
from dkd_jax.core import paths
from dkd_jax.core import rng
from dkd_jax.data import pipeline
from dkd_jax.evals import harness
from dkd_jax.models import decoder as model_lib
from dkd_jax.runs import bootstrap
from dkd_jax.runs import configuration
from dkd_jax.runs import tasks
from dkd_jax.runs import workdir as run_dir

DIR = run_dir.WARM_START
META = "warm_start_meta.json"
EVAL = "warm_start_eval.json"
MAX_DRAWS_PER_PROBLEM = 50


def split(c, seed: int, exclude, pool: list | None = None) -> list[dict]:
  """`student.warm_start.num_problems` problems with gold traces from the seed's own
  stream, none of whose questions is in `exclude` (the run's train and held-out
  questions) or repeated. A local file has no stream: its `pool` (the file's last
  problems, kept out of the distillation by `tasks.file_split`) is used, the same for
  every seed, less any question that recurs in `exclude` or in the pool itself."""
  if pool is not None:
    out = _unique(pool, exclude)
    if len(out) < c.student.warm_start.batch_size:
      raise ValueError(
        f"the warm start has {len(out)} distinct problems left in {c.data.path}'s last "
        f"{len(pool)}, fewer than config.student.warm_start.batch_size="
        f"{c.student.warm_start.batch_size}; raise num_problems"
      )
    return out
  n = int(c.student.warm_start.num_problems)
  make = tasks.problem_stream(c)
  stream = rng.int_seed(seed, "warm_start_problems")
  seen, out, i = set(exclude), [], 0
  while len(out) < n:
    r = make(stream, i)
    i += 1
    if r["question"] not in seen:
      seen.add(r["question"])
      out.append(r)
    if i > MAX_DRAWS_PER_PROBLEM * (n + 1):
      raise ValueError(
        f"cannot draw config.student.warm_start.num_problems={n} problems disjoint from "
        f"the run's {len(exclude)} train/held-out questions; lower num_problems"
      )
  return out


def _unique(records, exclude) -> list[dict]:
  seen, out = set(exclude), []
  for r in records:
    if r["question"] not in seen:
      seen.add(r["question"])
      out.append(r)
  return out


def _batches(c, seed: int, records, tokenizer) -> Iterator[dict]:
  w = c.student.warm_start
  return iter(
    pipeline.prompt_dataset(
      records,
      tokenizer,
      max_prompt_len=c.data.max_prompt_len,
      truncate=c.data.truncate_prompts,
      seed=rng.int_seed(seed, "warm_start_shuffle"),
      batch_size=int(w.batch_size),
      with_responses=True,
      max_response_len=c.data.max_response_len,
    )
  )


def meta(c, seed: int, cfg: model_lib.ModelConfig) -> dict:
  """What the cache is keyed by."""
  w = c.student.warm_start
  data = {k: c.data[k] for k in ("task", "max_prompt_len", "max_response_len")}
  if c.data.task in tasks.BUILT_IN:
    data[c.data.task] = c.data[c.data.task].to_dict()
  else:  # the file's pool is its last num_problems records
    data["path"] = str(c.data.path)
  return {
    "model": {k: v for k, v in vars(cfg).items() if k not in ("scan_layers", "remat")},
    "steps": int(w.steps),
    "lr": float(w.lr),
    "batch_size": int(w.batch_size),
    "num_problems": int(w.num_problems),
    "seed": int(seed),
    "data": data,
  }


def evaluate(c, seed: int, cfg, graphdef, params, mesh, task) -> dict:
  """The warm-started student on the run's held-out problems, with the settings and
  sample stream of the run's final evaluation (so the two are paired)."""
  e = c.eval
  slots = int(e.slots) or c.data.batch_size
  eng = harness.make_engine(
    cfg,
    graphdef,
    mesh,
    slots=slots,
    max_prompt_len=c.data.max_prompt_len,
    max_new=e.max_response_len,
    eos_id=task.tokenizer.eos_id,
    params_shard=model_lib.param_shardings(mesh, cfg),
  )
  out = {}
  for name, records in task.eval_sets(e.datasets, e.data_dir or None).items():
    m, _ = harness.evaluate_set(
      eng,
      params,
      task.tokenizer,
      records[: e.num_problems],
      task.grade,
      k=e.k,
      temperature=e.temperature,
      max_new=e.max_response_len,
      max_prompt_len=c.data.max_prompt_len,
      seed=rng.key(seed, "eval_rollout"),
      pad_id=task.tokenizer.pad_id,
    )
    out[name] = {k: m[k] for k in ("k", "avg_at_k", "pass_at_k", "mean_response_len")} | {
      k: m[k] for k in ("truncation_rate", "mean_entropy", "num_problems")
    }
  return out


def student(
  c, seed: int, mesh, task, workdir: str, log=print, read_only: bool = False
) -> tuple[Any, dict]:
  """(graphdef, params) of the warm-started student of `seed` (`student.model`, SFT on
  its own disjoint split), from WORKDIR/student_warm_start or trained and saved there.
  `read_only` (evaluate, export: they restore a checkpoint over these params) never
  trains or writes: without a matching cache it gives the seed's random init."""
  cfg = configuration.model_config(c.student.model, "student.model")
  init_seed = rng.int_seed(seed, "student_init")
  w = c.student.warm_start
  path = paths.as_path(workdir) / DIR
  key = json.loads(json.dumps(meta(c, seed, cfg)))
  if read_only and not ((path / META).exists() and json.loads((path / META).read_text()) == key):
    return model_lib.init_params(cfg, mesh, init_seed)

  def train(progress) -> tuple[Any, dict]:
    exclude = {r["question"] for r in (*task.train_records, *task.eval_records)}
    pool = None
    if c.data.task not in tasks.BUILT_IN:
      pool = tasks.file_split(c, tasks.file_records(c, workdir))[2]
    records = split(c, seed, exclude, pool)
    log(
      f"student: warm start by SFT on {len(records)} gold traces disjoint from the "
      f"distillation's problems ({w.steps} steps, lr {w.lr})"
    )
    graphdef, params = bootstrap.train_teacher(
      cfg,
      _batches(c, seed, records, task.tokenizer),
      steps=int(w.steps),
      lr=float(w.lr),
      mesh=mesh,
      seed=init_seed,
      pad_id=task.tokenizer.pad_id,
      log=log,
      name="student warm start",
      progress=progress,
    )
    result = evaluate(c, seed, cfg, graphdef, params, mesh, task)
    if multihost.is_primary():
      path.mkdir(parents=True, exist_ok=True)
      paths.write_text_atomic(path / EVAL, json.dumps(result))
    return graphdef, params

  graphdef, params = bootstrap.cached_sft(
    path,
    key,
    cfg,
    train,
    mesh=mesh,
    seed=init_seed,
    what="warm-started student",
    meta_name=META,
    log=log,
  )
  for name, m in cached_eval(workdir).items():
    log(
      f"student at warm start on {name}: Avg@{m['k']}={m['avg_at_k']:.3f} "
      f"len={m['mean_response_len']:.1f} trunc={m['truncation_rate']:.2f}"
    )
  return graphdef, params


def cached_eval(workdir: str) -> dict:
  """The warm start's own evaluation kept beside it ({} when there is none)."""
  f = paths.as_path(workdir) / DIR / EVAL
  return json.loads(f.read_text()) if f.exists() else {}
