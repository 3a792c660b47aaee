"""Evaluation: k samples per problem through the engine -> Avg@k, Pass@k, length, entropy, KL.

`evaluate_run` evaluates a student's (or the teacher's) params as an `EvalSpec` says
(built and validated from `config.eval` by `runs.configuration.eval_spec`): on its
datasets (the task's held-out set, or local GSM8K / MATH500 / AIME24 / AMC23 files from
its data_dir); the run calls it at its end and `python -m dkd_jax.evaluate` on a run's
checkpoint.

Per dataset: Avg@k (mean correctness of all samples), unbiased Pass@k for every k <= n,
mean response length, truncation rate, mean token entropy (nats, temperature 1; the mean
over responses of each one's token mean, for point and interval alike) and the
held-out teacher-student forward and reverse KL on the student's own samples.
Unreadable answers count as wrong and are tallied by reason, never a crash.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.data import pipeline
from dkd_jax.evals import math_eval
from dkd_jax.evals import stats
from dkd_jax.generate import engine as engine_lib
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """Everything an evaluation needs besides the models and the task (typed, validated
  once by `runs.configuration.eval_spec`; this module never reads a config)."""

  datasets: tuple[str, ...]  # eval set names: the task's own, or shared benchmark files
  k: int  # samples per problem
  num_problems: int  # first N problems of each set
  kl_problems: int  # problems whose fixed teacher responses score the held-out KL
  temperature: float
  max_response_len: int
  max_prompt_len: int
  slots: int  # engine decode slots (also the held-out KL batch)
  kl_chunk: int  # vocab chunk of the held-out KL kernel
  seed: int  # the eval rollouts' stream (rng "eval_rollout")
  data_dir: str | None = None  # where shared benchmark files live


def _kl_fn(pair, mesh, chunk) -> Callable:
  return _kl_jit(pair.student_graphdef, pair.teacher_graphdef, mesh, chunk)


@functools.cache
def _kl_jit(student_graphdef, teacher_graphdef, mesh, chunk) -> Callable:
  """One jit per (pair, mesh, chunk): a second evaluation reuses its compile."""
  spec = kl_lib.KLSpec(kind="forward", chunk=chunk)

  def fn(s_params, t_params, tokens_BxT, mask_BxT) -> tuple[jax.Array, jax.Array, jax.Array]:
    B, T = tokens_BxT.shape
    with sharding.mesh_context(mesh):
      h_s, _ = model_lib.apply(student_graphdef, s_params, tokens_BxT)
      h_t, _ = model_lib.apply(teacher_graphdef, t_params, tokens_BxT)
    _, tok = kl_lib.distill_loss(
      h_s.reshape(B * T, -1),
      model_lib.head(student_graphdef, s_params),
      h_t.reshape(B * T, -1),
      model_lib.head(teacher_graphdef, t_params),
      mask_BxT.reshape(-1),
      spec,
      mesh=mesh,
    )
    m = mask_BxT.reshape(-1)
    return jnp.sum(tok["fkl"] * m), jnp.sum(tok["rkl"] * m), jnp.sum(m)

  return jax.jit(fn)


def heldout_kl(fn, pair, s_params, tokens, mask, mesh, batch: int) -> tuple[float, float]:
  """Token-mean teacher-student KL(p||q) and KL(q||p) over the masked tokens; `fn` is
  `_kl_fn(...)`, built once per evaluation so every eval set reuses its compile."""
  n = tokens.shape[0]
  pad = (-n) % batch
  tokens = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), tokens.dtype)])
  mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), mask.dtype)])
  put = lambda x: sharding.put_global(x, sharding.batch_sharding(mesh, 2))
  f = r = m = 0.0
  for i in range(0, len(tokens), batch):
    a, b, c = fn(
      s_params, pair.teacher_params, put(tokens[i : i + batch]), put(mask[i : i + batch])
    )
    f, r, m = f + float(a), r + float(b), m + float(c)
  return f / max(m, 1.0), r / max(m, 1.0)


def make_engine(
  cfg, graphdef, mesh, *, slots, max_prompt_len, max_new, eos_id, params_shard
) -> engine_lib.Engine:
  return engine_lib.Engine(
    cfg,
    graphdef,
    max_concurrent_decodes=slots,
    max_prefill_length=max_prompt_len,
    max_decode_length=max_new,
    mesh=mesh,
    eos_ids=(eos_id,),
    param_shardings=params_shard,
  )


def response_texts(res: dict, tokenizer) -> tuple[list[str], int]:
  """(decoded responses without their EOS, number of ids past the tokenizer's vocab)."""
  eos, vocab = tokenizer.eos_id, tokenizer.vocab_size
  texts, invalid = [], 0
  for row, n in zip(res["response_tokens"], res["response_len"]):
    ids = [int(t) for t in row[:n]]
    ids = ids[:-1] if ids and ids[-1] == eos else ids
    # Model vocabularies are padded (for sharding) past the tokenizer's: such ids
    # have no text. They are counted, and the answer is graded without them.
    invalid += sum(t >= vocab for t in ids)
    texts.append(tokenizer.decode([t for t in ids if t < vocab]))
  return texts, invalid


def _grades(res, tokenizer, golds, grade) -> tuple[list[str], list[bool], collections.Counter, int]:
  """(texts, correct, reasons, invalid-token count); a response cut at the token budget
  is wrong whatever it contains (DESIGN §7: the budget is part of the task)."""
  texts, invalid = response_texts(res, tokenizer)
  correct, reasons = [], collections.Counter()
  for text, cut, gold in zip(texts, res["truncated"], golds):
    g = grade(text, gold)
    ok = g.correct and not cut
    correct.append(ok)
    if not ok:
      reasons["truncated" if cut else g.reason] += 1
  return texts, correct, reasons, invalid


def _per_problem(res, correct, P: int, k: int) -> dict[str, np.ndarray]:
  """Per-problem arrays (means over its k samples): what intervals resample."""
  mask = res["loss_mask"]
  tok_H = np.sum(res["entropies"] * mask, 1) / np.maximum(np.sum(mask, 1), 1.0)
  return {
    "correct": np.asarray(correct, np.float64).reshape(P, k).mean(1),
    "length": np.asarray(res["response_len"], np.float64).reshape(P, k).mean(1),
    "entropy": tok_H.reshape(P, k).mean(1),
    "truncated": np.asarray(res["truncated"], np.float64).reshape(P, k).mean(1),
  }


def point_and_intervals(per: dict[str, np.ndarray], pass_k, k: int) -> dict:
  """Each figure as the mean of its per-problem values, with the bootstrap interval of
  that same mean: one estimator for point and interval. Entropy is the mean over
  responses of each response's token-mean entropy (not token-weighted over the whole
  set, which weighs long responses more and sat outside its own per-problem interval)."""
  return {
    "mean_response_len": float(per["length"].mean()),
    "truncation_rate": float(per["truncated"].mean()),
    "mean_entropy": float(per["entropy"].mean()),
    "ci95": {
      "avg_at_k": stats.bootstrap_ci(per["correct"]),
      f"pass_at_{k}": stats.bootstrap_ci(pass_k),
      "mean_response_len": stats.bootstrap_ci(per["length"]),
      "mean_entropy": stats.bootstrap_ci(per["entropy"]),
    },
  }


def evaluate_set(
  engine,
  params,
  tokenizer,
  records,
  grade,
  *,
  k,
  temperature,
  max_new,
  max_prompt_len,
  seed,
  pad_id,
) -> tuple[dict, dict]:
  """Rollouts (k per problem) and their grades; returns (metrics, rollout result)."""
  enc = pipeline.encode_records(records, tokenizer, max_prompt_len=max_prompt_len, truncate=True)
  # One prefill per problem, k samples from it (rows stay problem-major: i * k + j).
  res = rollout_lib.rollout(
    engine,
    params,
    enc.prompt_ids,
    sampler=sampling.Sampler(temperature),
    seed=seed,
    max_new_tokens=max_new,
    pad_id=pad_id,
    samples_per_prompt=k,
  )
  golds = [a for a in enc.answers for _ in range(k)]
  texts, correct, reasons, invalid = _grades(res, tokenizer, golds, grade)
  P = len(records)
  correct_PxK = np.asarray(correct).reshape(P, k)
  per = _per_problem(res, correct, P, k)
  pass_k = stats.per_problem_pass_at_k(correct_PxK, k)
  metrics = {
    "num_problems": P,
    "k": k,
    "avg_at_k": math_eval.avg_at_k(correct_PxK),
    "pass_at_k": {str(kk): v for kk, v in math_eval.pass_at_k_table(correct_PxK).items()},
    **point_and_intervals(per, pass_k, k),
    "per_problem": {
      name: [round(float(x), 6) for x in v] for name, v in (*per.items(), (f"pass_at_{k}", pass_k))
    },
    "generated_tokens": int(np.sum(res["response_len"])),
    "wrong_by_reason": dict(reasons),
    "prompts_truncated": int(enc.num_truncated_prompts),
    "invalid_tokens": int(invalid),
    "example": texts[0][:200],
  }
  return metrics, res


def teacher_responses(e: EvalSpec, pair, task, records, mesh) -> dict:
  """The teacher's responses to `records`, drawn with one fixed key (not the run's seed):
  the one set every student's held-out KL is measured on, so runs are scored on the
  same states."""
  eng = make_engine(
    pair.teacher_cfg,
    pair.teacher_graphdef,
    mesh,
    slots=e.slots,
    max_prompt_len=e.max_prompt_len,
    max_new=e.max_response_len,
    eos_id=task.tokenizer.eos_id,
    params_shard=pair.teacher_shardings,
  )
  enc = pipeline.encode_records(
    records, task.tokenizer, max_prompt_len=e.max_prompt_len, truncate=True
  )
  return rollout_lib.rollout(
    eng,
    pair.teacher_params,
    enc.prompt_ids,
    sampler=sampling.Sampler(e.temperature),
    seed=rng.key(0, "heldout_kl"),
    max_new_tokens=e.max_response_len,
    pad_id=task.tokenizer.pad_id,
  )


def evaluate_run(e: EvalSpec, pair, task, params, mesh, log, role: str = "student") -> dict:
  """Evaluates `params` (the student's, or with role='teacher' the teacher's) on every
  set of `e.datasets`; {name: metrics}. KL is always teacher vs `params`: `fkl`/`rkl`
  on a fixed set of teacher responses (comparable across runs), `fkl_own`/`rkl_own` on
  the evaluated model's own samples."""
  slots = e.slots
  cfg, graphdef = (
    (pair.student_cfg, pair.student_graphdef)
    if role == "student"
    else (pair.teacher_cfg, pair.teacher_graphdef)
  )
  eng = make_engine(
    cfg,
    graphdef,
    mesh,
    slots=slots,
    max_prompt_len=e.max_prompt_len,
    max_new=e.max_response_len,
    eos_id=task.tokenizer.eos_id,
    params_shard=model_lib.param_shardings(mesh, cfg),
  )
  kl_fn = _kl_fn(pair, mesh, e.kl_chunk)
  out = {}
  for name, records in task.eval_sets(e.datasets, e.data_dir).items():
    records = records[: e.num_problems]
    metrics, res = evaluate_set(
      eng,
      params,
      task.tokenizer,
      records,
      task.grade,
      k=e.k,
      temperature=e.temperature,
      max_new=e.max_response_len,
      max_prompt_len=e.max_prompt_len,
      seed=rng.key(e.seed, "eval_rollout"),
      pad_id=task.tokenizer.pad_id,
    )
    metrics["fkl"] = metrics["rkl"] = metrics["fkl_own"] = metrics["rkl_own"] = 0.0
    # A teacher with another tokenizer has no token-level KL against the student (NaN).
    if getattr(pair, "teacher_tokenizer", None) is not None:
      metrics["fkl"] = metrics["rkl"] = metrics["fkl_own"] = metrics["rkl_own"] = float("nan")
    elif role == "student":
      metrics["fkl_own"], metrics["rkl_own"] = heldout_kl(
        kl_fn, pair, params, res["tokens"], res["loss_mask"], mesh, slots
      )
      ref = teacher_responses(e, pair, task, records[: e.kl_problems], mesh)
      metrics["fkl"], metrics["rkl"] = heldout_kl(
        kl_fn, pair, params, ref["tokens"], ref["loss_mask"], mesh, slots
      )
    out[name] = metrics
    lo, hi = metrics["ci95"]["avg_at_k"]
    log(
      f"eval {role} {name}: Avg@{e.k}={metrics['avg_at_k']:.3f} [{lo:.3f}, {hi:.3f}] "
      f"Pass@{e.k}={metrics['pass_at_k'][str(e.k)]:.3f} "
      f"len={metrics['mean_response_len']:.1f} trunc={metrics['truncation_rate']:.2f} "
      f"H={metrics['mean_entropy']:.3f} KL(p||q)={metrics['fkl']:.4f} "
      f"KL(q||p)={metrics['rkl']:.4f}"
    )
  return out


def markdown(results: dict) -> str:
  lines = [
    "| dataset | n | k | Avg@k | Pass@1 | Pass@k | length | trunc | entropy | KL(p‖q) | KL(q‖p) |",
    "|" + "---|" * 11,
  ]
  for name, m in results.items():
    k = str(m["k"])
    lines.append(
      f"| {name} | {m['num_problems']} | {k} | {m['avg_at_k']:.3f} | "
      f"{m['pass_at_k']['1']:.3f} | {m['pass_at_k'][k]:.3f} | "
      f"{m['mean_response_len']:.1f} | {m['truncation_rate']:.2f} | "
      f"{m['mean_entropy']:.3f} | {m['fkl']:.4f} | {m['rkl']:.4f} |"
    )
  return "\n".join(lines) + "\n"
