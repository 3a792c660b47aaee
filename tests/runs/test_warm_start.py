"""The warm-started student (student.init='warm_start', issue 20): its own split, disjoint
from the distillation's problems and a function of (config, seed); validated like every
field; cached in the workdir; its own evaluation in the run's summary."""

import json
import os

import jax
import numpy as np
import pytest

from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.models import decoder as model_lib
from dkd_jax.runs import configuration
from dkd_jax.runs import distill_loop
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import tasks
from dkd_jax.runs import warm_start
from tests.runs.test_configs import ROOT
from tests.runs.test_configs import load


def _config(arg="tiny", **over):
  c = load(os.path.join(ROOT, "configs", "rev_teacher.py"), arg)
  c.update_from_flattened_dict(over)
  return c


@pytest.mark.parametrize("task", ["arithmetic", "chain"])
def test_split_is_disjoint_from_train_and_held_out_and_a_function_of_the_seed(task):
  c = _config(**{"data.task": task, "student.warm_start.num_problems": 300})
  if task == "chain":
    c.data.chain.update(num_train=2000, num_eval=64)
  train, held = tasks.records_for(c)
  exclude = {r["question"] for r in train + held}
  a = warm_start.split(c, 0, exclude)
  assert len(a) == 300 and len({r["question"] for r in a}) == 300
  assert not exclude & {r["question"] for r in a}
  assert all(r["solution"] for r in a)
  assert [r["question"] for r in warm_start.split(c, 0, exclude)] == [r["question"] for r in a]
  assert [r["question"] for r in warm_start.split(c, 1, exclude)] != [r["question"] for r in a]


def test_split_that_cannot_be_drawn_is_named():
  c = _config(**{"data.arithmetic.max_operands": 2, "data.arithmetic.max_digits": 1})
  c.student.warm_start.num_problems = 500  # only 300 distinct one-digit a?b problems
  with pytest.raises(ValueError, match="student.warm_start.num_problems=500"):
    warm_start.split(c, 0, set())


@pytest.mark.parametrize(
  "over,needle",
  [
    ({"student.warm_start.steps": 0}, "student.warm_start.steps"),
    ({"student.warm_start.lr": -1.0}, "student.warm_start.lr"),
    ({"student.warm_start.batch_size": -2}, "student.warm_start.batch_size"),
    ({"student.warm_start.num_problems": 4}, "num_problems=4 cannot fill"),
    ({"student.init": "warm"}, "student.init"),
  ],
)
def test_bad_warm_start_names_the_field(over, needle):
  c = _config()
  c.update_from_flattened_dict(over)
  with pytest.raises(ValueError, match=needle):
    configuration.validate(c)


def test_rev_teacher_starts_warm_and_random_is_one_override_away():
  assert _config("").student.init == "warm_start"
  c = _config("", **{"student.init": "random"})
  configuration.validate(c)


def test_run_warm_starts_caches_and_reports_the_start(tmp_path):
  c = _config(
    **{
      "teacher.bootstrap_steps": 10,
      "student.warm_start.steps": 20,
      "train.steps": 2,
      "eval.num_problems": 4,
      "eval.kl_problems": 4,
      "eval.k": 2,
      "data.arithmetic.num_train": 256,
    }
  )
  work = str(tmp_path / "run")
  summary = distill_loop.run(c, work)
  start = summary["warm_start_eval"]["arithmetic"]
  assert start["k"] == 2 and 0 <= start["avg_at_k"] <= 1 and "truncation_rate" in start
  assert os.path.exists(os.path.join(work, warm_start.DIR, warm_start.META))
  log = open(os.path.join(work, "log.txt")).read()
  assert "student warm start step 20/20" in log and "student at warm start on arithmetic" in log

  # The same (config, seed) reuses the cache; the warm start is not the random init.
  mesh = sharding.resolve_mesh(c.mesh)
  task = tasks.load_task(c, pair_lib.load_tokenizer(c, work), work)
  lines = []
  _, params = warm_start.student(c, c.seed, mesh, task, work, lines.append)
  assert any("reusing the cached one" in line for line in lines)
  cfg = configuration.model_config(c.student.model, "student.model")
  init = lambda seed: model_lib.init_params(cfg, mesh, rng.int_seed(seed, "student_init"))[1]
  gap = lambda a, b: max(
    jax.tree.leaves(
      jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)
    )
  )
  assert gap(params, init(c.seed)) > 1e-3
  # A read-only reader (evaluate: it restores a checkpoint over these) never trains one.
  c.seed += 1
  _, other = warm_start.student(c, c.seed, mesh, task, work, lines.append, read_only=True)
  assert gap(other, init(c.seed)) == 0
  meta = json.load(open(os.path.join(work, warm_start.DIR, warm_start.META)))
  assert meta["seed"] == c.seed - 1  # untouched


def _gsm8k_file(path, questions):
  lines = [
    json.dumps({"question": q, "answer": f"{q} is easy.\n#### {i}"})
    for i, q in enumerate(questions)
  ]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_a_file_keeps_its_last_problems_for_the_warm_start(tmp_path):
  """A local file has no problem stream: [held out | distillation train | warm-start pool],
  disjoint by position, and the pool drops questions that recur elsewhere."""
  qs = [f"q{i}?" for i in range(60)]
  qs[-1] = "q10?"  # recurs in the training part: the warm start must skip it
  over = {"data.task": "gsm8k", "data.path": _gsm8k_file(tmp_path / "g.jsonl", qs)}
  c = _config(**over, **{"data.reader": "plain", "eval.num_problems": 5})
  c.student.warm_start.update(num_problems=20, batch_size=4)
  train, held = tasks.records_for(c)
  assert [r["question"] for r in held] == qs[:5] and [r["question"] for r in train] == qs[5:40]
  pool = tasks.file_split(c, tasks.file_records(c))[2]
  exclude = {r["question"] for r in train + held}
  ws = warm_start.split(c, 0, exclude, pool)
  assert [r["question"] for r in ws] == qs[40:59] and all(r["solution"] for r in ws)
  configuration.validate(c)  # file tasks may warm-start now
  c.student.warm_start.batch_size = 20  # 19 distinct problems left: one batch cannot fill
  with pytest.raises(ValueError, match=r"19 distinct problems .*warm_start.batch_size=20"):
    warm_start.split(c, 0, exclude, pool)
  c.student.warm_start.batch_size = 4

  c.student.init = "random"  # no warm start: the whole file after the held-out trains
  assert len(tasks.records_for(c)[0]) == 55 and tasks.file_split(c, tasks.file_records(c))[2] == []
  c.student.init = "warm_start"
  c.student.warm_start.num_problems = 55
  with pytest.raises(ValueError, match="student.warm_start.num_problems=55 leaves no training"):
    tasks.records_for(c)


def test_warm_start_batches_truncate_prompts_like_the_run(tmp_path):
  """A file's long question is cut to max_prompt_len when data.truncate_prompts is set, as
  the distillation's own batches are, instead of stopping the warm start."""
  line = json.dumps({"question": "1+" * 40 + "1?", "answer": "1+1=2\n#### 2"})
  (tmp_path / "g.jsonl").write_text((line + "\n") * 8)
  c = _config(**{"data.task": "gsm8k", "data.path": str(tmp_path / "g.jsonl")})
  c.student.warm_start.batch_size = 4
  tok = pair_lib.load_tokenizer(c, str(tmp_path / "w"))
  records = tasks.file_records(c)
  with pytest.raises(ValueError, match="max_prompt_len"):
    next(warm_start._batches(c, 0, records, tok))
  c.data.truncate_prompts = True
  batch = next(warm_start._batches(c, 0, records, tok))
  assert batch["prompt_tokens"].shape == (4, c.data.max_prompt_len)
  assert batch["prompt_truncated"].all() and (batch["response_len"] > 0).all()
