"""A distillation run: config -> models, data, prefix sources -> train loop -> eval.

`run(config, workdir)` is what `python -m dkd_jax.launch` calls. It validates the
config (nothing compiles before that), builds the mesh once, loads or bootstraps
the teacher, initialises the student, restores the latest checkpoint in the
workdir when there is one, then loops: prompts (grain) -> prefixes (dataset or
rollouts of the live params) -> the one jitted train step -> metrics, NaN check,
curriculum gate, logging, checkpoint. It ends with an evaluation and a summary.
"""
from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections as mlc
import numpy as np

from dkd_jax import checkpointing
from dkd_jax import configuration
from dkd_jax import curriculum as curriculum_lib
from dkd_jax import evaluate as evaluate_lib
from dkd_jax import metrics_log
from dkd_jax import models
from dkd_jax import prefixes
from dkd_jax import schedules
from dkd_jax import sharding
from dkd_jax import rollout as rollout_lib
from dkd_jax import sampling
from dkd_jax import tasks
from dkd_jax import train


def resolve_mesh(shape) -> jax.sharding.Mesh:
  shape = [int(s) for s in shape]
  if shape.count(-1) > 1:
    raise ValueError(f"config.mesh={tuple(shape)}: at most one -1")
  if -1 in shape:
    rest = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = max(jax.device_count() // rest, 1)
  return sharding.make_mesh(shape)


class Loop:
  """The per-step host logic around the jitted step; its state is checkpointed."""

  def __init__(self, c, mesh, pair, task, workdir, log):
    self.c, self.mesh, self.pair, self.task, self.log = c, mesh, pair, task, log
    self.spec = configuration.kl_spec(c)
    self.schedule = configuration.alpha_schedule(c)
    self.cur_cfg = configuration.curriculum_config(c, pair.student_cfg.vocab_size)
    self.optimizer = train.make_optimizer(c.optim, c.train.steps)
    static = train.StepStatic(pair.student_graphdef, pair.teacher_graphdef, self.spec,
                              self.optimizer, mesh)
    self.state_shard = train.state_shardings(mesh, self.optimizer, pair.student_cfg)
    self.step_fn = train.jit_train_step(static, self.state_shard, pair.teacher_shardings)
    self.state = jax.jit(lambda p: train.init_state(self.optimizer, p),
                         out_shardings=self.state_shard)(pair.student_params)
    self.iterator = iter(task.train_batches)
    self.cur_state = curriculum_lib.init_state()
    self.sched_state = schedules.init_state(self.schedule)
    self.cost = prefixes.GenerationCost()
    self.cache = (prefixes.RolloutCache(os.path.join(workdir, "teacher_rollouts.jsonl"))
                  if c.data.teacher_source == "rollout_cached" else None)
    self.ckpt = checkpointing.RunCheckpointer(os.path.join(workdir, "checkpoints"),
                                              every=c.train.ckpt_every,
                                              max_to_keep=c.train.max_ckpts)
    self.last_entropy = None
    self.sampler = sampling.Sampler(c.rollout.temperature, c.rollout.top_p, c.rollout.top_k)
    eng = functools.partial(evaluate_lib.make_engine, mesh=mesh, slots=c.data.batch_size,
                            max_prompt_len=c.data.max_prompt_len,
                            max_new=c.data.max_response_len, eos_id=task.tokenizer.eos_id)
    self.student_engine = eng(pair.student_cfg, pair.student_graphdef,
                              params_shard=self.state_shard["params"])
    self.teacher_engine = eng(pair.teacher_cfg, pair.teacher_graphdef,
                              params_shard=pair.teacher_shardings)

  # -- checkpoint -------------------------------------------------------------------------
  def host_state(self) -> dict:
    return {"iterator": self.iterator.get_state(), "curriculum": self.cur_state,
            "schedule": self.sched_state, "cost": self.cost.state(),
            "last_entropy": self.last_entropy}

  def restore(self) -> int:
    out = self.ckpt.restore(self.state)
    if out is None:
      return 0
    self.state, host = out
    self.iterator.set_state(host["iterator"])
    self.cur_state, self.sched_state = host["curriculum"], host["schedule"]
    self.cost.load(host["cost"])
    self.last_entropy = host["last_entropy"]
    step = int(self.state["step"])
    self.log(f"resumed from step {step}")
    return step

  # -- one step ---------------------------------------------------------------------------
  def make_batch(self, step: int, prompts: dict, max_len: int) -> tuple[dict, dict]:
    """Prefixes for this step's prompts, packed; plus host-side rollout stats."""
    c = self.c
    rng = np.random.default_rng([c.seed, step, 1])
    rows = prefixes.student_rows(rng, len(prompts["prompt_len"]), c.objective.prefix,
                                 c.objective.student_prefix_frac)
    parts = self.prefix_parts(step, prompts, rows, max_len)
    tokens, mask = prefixes.pack(prompts["prompt_tokens"], prompts["prompt_len"],
                                 parts["response_tokens"], parts["response_len"],
                                 self.task.tokenizer.pad_id)
    stats = {"response_len": float(np.mean(parts["response_len"])),
             "truncation_rate": float(np.mean(parts["truncated"])),
             "student_frac": float(np.mean(rows))}
    if parts.get("student_entropy") is not None:
      stats["rollout_entropy"] = parts["student_entropy"]
    return train.make_batch(tokens, mask, rows, 0.0, c.seed * 15485863 + step), stats

  def _rollout(self, engine, params, prompts, idx, max_len, seed):
    return rollout_lib.rollout(
        engine, params, prompts["prompt_tokens"][idx], prompt_lens=prompts["prompt_len"][idx],
        sampler=self.sampler, seed=seed, max_new_tokens=max_len,
        sync_every=self.c.rollout.sync_every, pad_id=self.task.tokenizer.pad_id)

  def _teacher_rows(self, step, prompts, idx, max_len, out):
    """Teacher prefixes: dataset responses (cut to max_len) or teacher rollouts."""
    if self.c.data.teacher_source == "dataset":
      for i in idx:
        n = int(prompts["response_len"][i])
        out["response_tokens"][i, :min(n, max_len)] = prompts["response_tokens"][i, :min(n, max_len)]
        out["response_len"][i] = min(n, max_len)
        out["truncated"][i] = n > max_len or bool(prompts["response_truncated"][i])
      return
    cached = lambda i: None if self.cache is None else self.cache.get(prompts["index"][i])
    todo = [i for i in idx if cached(i) is None]
    fresh = {}
    if todo:
      res = self.cost.timed("teacher", self._rollout, self.teacher_engine,
                            self.pair.teacher_params, prompts, np.asarray(todo),
                            self.c.data.max_response_len, seed=self.c.seed * 7919 + step)
      fresh = {i: {"index": int(prompts["index"][i]),
                   "tokens": res["response_tokens"][j, :res["response_len"][j]].tolist(),
                   "truncated": bool(res["truncated"][j])} for j, i in enumerate(todo)}
      if self.cache is not None:
        self.cache.put(list(fresh.values()))
    for i in idx:
      row = fresh.get(i) or cached(i)
      toks = row["tokens"][:max_len]
      out["response_tokens"][i, :len(toks)] = toks
      out["response_len"][i] = len(toks)
      out["truncated"][i] = row["truncated"] or len(row["tokens"]) > max_len

  def prefix_parts(self, step, prompts, rows, max_len) -> dict:
    """Responses [B, R] for this step: student rollouts where `rows`, teacher elsewhere."""
    B, R = len(rows), self.c.data.max_response_len
    out = {"response_tokens": np.full((B, R), self.task.tokenizer.pad_id, np.int32),
           "response_len": np.zeros((B,), np.int32), "truncated": np.zeros((B,), bool),
           "student_entropy": None}
    s_idx, t_idx = np.flatnonzero(rows), np.flatnonzero(~rows)
    if len(s_idx):
      res = self.cost.timed("student", self._rollout, self.student_engine,
                            self.state["params"], prompts, s_idx, max_len,
                            seed=self.c.seed * 104729 + step)
      out["response_tokens"][s_idx, :res["response_tokens"].shape[1]] = res["response_tokens"]
      out["response_len"][s_idx] = res["response_len"]
      out["truncated"][s_idx] = res["truncated"]
      out["student_entropy"] = rollout_lib.token_mean(res, "entropies")
    if len(t_idx):
      self._teacher_rows(step, prompts, t_idx, max_len, out)
    return out

  def current_alpha(self, step: int) -> float:
    alpha, self.sched_state = schedules.alpha_at(self.schedule, step, self.sched_state,
                                                 entropy=self.last_entropy)
    return float(curriculum_lib.effective_alpha(self.cur_cfg, self.cur_state, alpha))

  def step(self, step: int) -> dict:
    t0 = time.perf_counter()
    max_len = (curriculum_lib.max_length(self.cur_cfg, self.cur_state)
               if self.cur_cfg.enabled else self.c.data.max_response_len)
    batch, stats = self.make_batch(step, next(self.iterator), max_len)
    batch["alpha"] = np.float32(self.current_alpha(step))
    batch = jax.device_put(batch, train.batch_shardings(self.mesh))
    t1 = time.perf_counter()
    self.state, metrics = self.step_fn(self.state, batch, self.pair.teacher_params)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    t2 = time.perf_counter()
    metrics_log.check_finite(step + 1, metrics)
    metrics.update(stats, max_len=max_len, step_time=t2 - t0, train_time=t2 - t1,
                   gen_time=t1 - t0, **self.cost.as_metrics())
    self.last_entropy = stats.get("rollout_entropy", metrics["ent_s"])
    self.cur_state, decision = curriculum_lib.update(
        self.cur_cfg, self.cur_state, step + 1, self.last_entropy, stats["truncation_rate"])
    if decision is not None:
      self.log(f"curriculum: {decision['action']} at step {decision['step']}: "
               f"{decision['reason']}")
    return metrics


def restore_params(c, mesh, pair, workdir: str):
  """The student params of a run's latest checkpoint (for evaluate)."""
  optimizer = train.make_optimizer(c.optim, c.train.steps)
  shard = train.state_shardings(mesh, optimizer, pair.student_cfg)
  like = jax.jit(lambda p: train.init_state(optimizer, p), out_shardings=shard)(
      pair.student_params)
  ckpt = checkpointing.RunCheckpointer(os.path.join(workdir, "checkpoints"), every=1)
  out = ckpt.restore(like)
  if out is None:
    raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints; train first with "
                            "python -m dkd_jax.launch --workdir=...")
  return out[0]["params"]


def run(c: mlc.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates and returns the summary dict (also written to workdir)."""
  configuration.validate(c)
  os.makedirs(workdir, exist_ok=True)
  logger = metrics_log.Logger(workdir, c)
  log = logger.text
  mesh = resolve_mesh(c.mesh)
  log(f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} devices")
  tokenizer = models.load_tokenizer(c, workdir)
  task = tasks.load_task(c, tokenizer, workdir)
  pair = models.load_pair(c, mesh, task, workdir, log)
  loop = Loop(c, mesh, pair, task, workdir, log)
  start = loop.restore()
  peak = metrics_log.peak_flops(mesh)
  tokens_per_step = c.data.batch_size * (c.data.max_prompt_len + c.data.max_response_len)
  flops = train.step_flops(pair.student_cfg, pair.teacher_cfg, tokens_per_step)
  bar = metrics_log.progress(start, c.train.steps)
  for step in range(start, c.train.steps):
    metrics = loop.step(step)
    metrics["tokens_per_s"] = tokens_per_step / metrics["step_time"]
    metrics["mfu"] = flops / metrics["train_time"] / peak
    logger.scalars(step + 1, metrics)
    bar.update(1)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", ent=f"{metrics['ent_s']:.3f}")
    loop.ckpt.maybe_save(step + 1, loop.state, loop.host_state(),
                         force=step + 1 == c.train.steps)
  bar.close()
  loop.ckpt.close()
  results = evaluate_lib.evaluate_run(c, pair, task, loop.state["params"], mesh, log)
  teacher = evaluate_lib.evaluate_run(c, pair, task, pair.teacher_params, mesh, log, "teacher")
  summary = dict(eval=results, teacher_eval=teacher, steps=c.train.steps, curriculum_enabled=bool(c.curriculum.enabled),
                 objective=dict(
      prefix=c.objective.prefix, kl=c.objective.kl, alpha=c.objective.alpha,
      estimator=c.objective.estimator), generation_cost=loop.cost.state(),
      curriculum=loop.cur_state.get("decisions", []))
  print_summary(summary, log)
  logger.finish(summary)
  return summary


def print_summary(summary: dict, log) -> None:
  o = summary["objective"]
  log(f"summary: prefix={o['prefix']} kl={o['kl']} estimator={o['estimator']} "
      f"steps={summary['steps']}")
  for role in ("eval", "teacher_eval"):
    for name, m in summary[role].items():
      k = m["k"]
      log(f"  {'student' if role == 'eval' else 'teacher'} on {name}: accuracy(Avg@{k})="
          f"{m['avg_at_k']:.3f} Pass@1={m['pass_at_k']['1']:.3f} "
          f"Pass@{k}={m['pass_at_k'][str(k)]:.3f} length={m['mean_response_len']:.1f} "
          f"entropy={m['mean_entropy']:.3f} KL(p||q)={m['fkl']:.4f} KL(q||p)={m['rkl']:.4f}")
