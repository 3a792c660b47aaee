"""The teacher's frozen reference (DESIGN §6, §8): its own rollouts on training prompts.

Measured once per study, before any student run, at a cap longer than any budget the
rules can give (`remedies.budget` refuses a reference capped below it): per response its
length (tokens incl. EOS), whether it hit the cap, and its per-token entropies at the
rollout temperature. `objectives.remedies.derive` turns it into the budget, the short
horizon and every remedy threshold. The prompts are the first N training problems and
the key depends on the teacher's bootstrap seed only, so every reader measures the same
reference from the same teacher.
"""

from __future__ import annotations

import numpy as np

from dkd_jax.core import rng
from dkd_jax.data import pipeline
from dkd_jax.evals import harness
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.objectives import remedies


def measure(c, pair, task, mesh, *, prompts: int, cap: int, slots: int = 128) -> remedies.Reference:
  """The teacher's reference rollouts (`remedies.Reference`) on `prompts` training
  problems, each response up to `cap` tokens, at config.rollout.temperature."""
  if prompts < 1 or cap < 1:
    raise ValueError(f"reference needs prompts >= 1 and cap >= 1, got {prompts}, {cap}")
  recs = task.train_records[:prompts]
  enc = pipeline.encode_records(
    recs, task.tokenizer, max_prompt_len=c.data.max_prompt_len, truncate=True
  )
  eng = harness.make_engine(
    pair.teacher_cfg,
    pair.teacher_graphdef,
    mesh,
    slots=min(slots, len(recs)),
    max_prompt_len=c.data.max_prompt_len,
    max_new=cap,
    eos_id=task.tokenizer.eos_id,
    params_shard=pair.teacher_shardings,
  )
  res = rollout_lib.rollout(
    eng,
    pair.teacher_params,
    enc.prompt_ids,
    sampler=sampling.Sampler(c.rollout.temperature),
    seed=rng.key(c.teacher.bootstrap_seed, "curriculum_reference"),
    max_new_tokens=cap,
    pad_id=task.tokenizer.pad_id,
  )
  return from_rollout(res, cap)


def from_rollout(res: dict, cap: int) -> remedies.Reference:
  """A Reference from a rollout result (rows' entropies sit at positions p-1 .. p+r-2)."""
  lens = np.asarray(res["response_len"], np.int64)
  p = np.asarray(res["prompt_len"], np.int64)
  ents = tuple(
    np.asarray(res["entropies"][i, p[i] - 1 : p[i] - 1 + lens[i]], np.float64)
    for i in range(len(lens))
  )
  return remedies.Reference(lens, np.asarray(res["truncated"], bool), ents, int(cap))
