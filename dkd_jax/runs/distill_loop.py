"""A distillation run: config -> models, data, prefix sources -> train loop -> eval.

`run(config, workdir)` is what `python -m dkd_jax.launch` calls. It validates the
config (nothing compiles before that), builds the mesh once, loads or bootstraps
the teacher, initialises the student, restores the latest checkpoint in the
workdir when there is one, then loops: prompts (grain) -> prefixes (`prefixes` plans
them; the loop runs the rollouts they need with the live params) -> the one jitted
train step -> metrics, NaN check, curriculum gate, logging, checkpoint. It ends with
the student written to WORKDIR/export/hf (when `config.export.at_end`), an evaluation
and a summary; evaluations at `config.eval.at_steps` along the way go to
WORKDIR/evals.jsonl. Rollouts and the loss mask are cut at the horizon
(`config.train.horizon`, DESIGN §6), or at the curriculum's stage length. This module
orchestrates only: which prefixes, which alpha and which random stream are decided by
`prefixes`, `schedules`/`curriculum` and `rng`.
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import ml_collections as mlc
import numpy as np

from dkd_jax.core import checkpointing
from dkd_jax.core import metrics_log
from dkd_jax.core import multihost
from dkd_jax.core import paths
from dkd_jax.core import preemption
from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.data import alignment
from dkd_jax.data import pipeline
from dkd_jax.data import topk_store
from dkd_jax.evals import harness
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.models import handoff
from dkd_jax.objectives import curriculum as curriculum_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import prefixes
from dkd_jax.objectives import routing
from dkd_jax.objectives import schedules
from dkd_jax.runs import configuration
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import scaffold
from dkd_jax.runs import tasks
from dkd_jax.runs import warm_start
from dkd_jax.train import step as train
from dkd_jax.train import teacher_topk
from dkd_jax.train import teachers as teachers_lib

REFERENCE_PROMPTS = 64  # training prompts the teacher's reference entropy is measured on
EVALS_FILE = "evals.jsonl"  # evaluations at config.eval.at_steps along the trajectory


class Loop:
  """The per-step host logic around the jitted step; its state is checkpointed."""

  def __init__(self, c, mesh, pair, task, workdir, log):
    self.c, self.mesh, self.pair, self.task, self.log = c, mesh, pair, task, log
    self.spec = configuration.kl_spec(c)
    self.schedule = configuration.alpha_schedule(c)
    self.cur_cfg = configuration.curriculum_config(c, pair.student_cfg.vocab_size)
    self.data = configuration.data_settings(c)
    self.topk = self._topk_cache(workdir)
    self.base = scaffold.build(
      c,
      mesh,
      pair.student_cfg,
      pair.student_graphdef,
      pair.student_params,
      workdir,
      optimizer_steps=c.train.steps,
      slots=self.data.batch_size,
      max_new=self.data.max_response_len,
      eos_id=task.tokenizer.eos_id,
    )
    self.optimizer, self.state_shard = self.base.optimizer, self.base.state_shard
    self.state, self.ckpt = self.base.state, self.base.ckpt
    self.teachers = self._teacher_statics()
    static = train.StepStatic(
      pair.student_graphdef,
      None if self.topk else pair.teacher_graphdef,
      self.spec,
      self.optimizer,
      mesh,
      response_window=self.data.max_response_len,
      teachers=self.teachers,
    )
    t_shard = tuple(t[2] for t in self._teacher_list()) if self.teachers else pair.teacher_shardings
    self.step_fn = train.jit_train_step(static, self.state_shard, t_shard)
    self.iterator = iter(task.train_batches)
    self.cur_state = curriculum_lib.init_state()
    self.sched_state = schedules.init_state(self.schedule)
    self.cost = metrics_log.GenerationCost()
    self.cache = (
      prefixes.RolloutCache(paths.as_path(workdir) / "teacher_rollouts.jsonl")
      if c.data.teacher_source == prefixes.ROLLOUT_CACHED
      else None
    )
    self.last_entropy = None
    self.sampler = configuration.rollout_settings(c).sampler()
    self.student_engine = self.base.engine
    t_tok = pair.teacher_tokenizer
    self.teacher_engine = self.base.make_engine(
      pair.teacher_cfg,
      pair.teacher_graphdef,
      params_shard=pair.teacher_shardings,
      eos=None if t_tok is None else t_tok.eos_id,
    )

  def _teacher_list(self) -> list[tuple]:
    """(graphdef, params, shardings, tokenizer or None when it is the student's) per teacher."""
    pair, student = self.pair, self.task.tokenizer
    same = lambda tok: tok is None or tok.tokens() == student.tokens()
    first = (pair.teacher_graphdef, pair.teacher_params, pair.teacher_shardings)
    out = [(*first, None if same(pair.teacher_tokenizer) else pair.teacher_tokenizer)]
    for t in pair.extra_teachers:
      out.append((t.graphdef, t.params, t.shardings, None if same(t.tokenizer) else t.tokenizer))
    return out

  def _teacher_statics(self) -> tuple:
    """`StepStatic.teachers` when the run has several teachers or one with another
    tokenizer; () for the single same-vocabulary teacher (the kernel path as before)."""
    teachers = self._teacher_list()
    if len(teachers) == 1 and teachers[0][3] is None:
      return ()
    x, out = self.c.objective.xtok, []
    for (graphdef, _, _, tok), cfg in zip(teachers, self._teacher_cfgs()):
      vmap = None
      if tok is not None and not configuration.cross_tokenizer(self.c):
        raise ValueError(
          "a teacher reads another tokenizer than the student: set config.student.tokenizer "
          "(the student's own, e.g. 'bpe:N' or a HF tokenizer directory) so the run is "
          "checked as cross-tokenizer"
        )
      if tok is not None:
        v = alignment.vocab_map(
          tok, self.task.tokenizer, cfg.vocab_size, self.pair.student_cfg.vocab_size
        )
        vmap = tuple(v.tolist())
      out.append(
        teachers_lib.TeacherStatic(
          graphdef,
          vmap,
          token_level=bool(x.token_level),
          uld_weight=float(x.uld_weight),
          credit=int(x.get("credit", 0)),
        )
      )
    return tuple(out)

  def _teacher_cfgs(self) -> list:
    return [self.pair.teacher_cfg] + [t.cfg for t in self.pair.extra_teachers]

  def _teacher_arrays(self, out: dict, prompts: dict, stats: dict) -> dict:
    """Row weights (`routing`) and, per teacher with another tokenizer, its tokens of each
    row's text and the chunk alignment (`data.alignment`); the student rows' share of
    non-canonical spellings goes into `stats` (the same for every teacher)."""
    records = [self.task.train_records[int(i)] for i in prompts["index"]]
    r = self.c.get("routing", None)
    teachers = self._teacher_list()
    out = dict(
      out,
      teacher_w=routing.teacher_weights(
        r.kind if r else "weights",
        len(teachers),
        prompts["index"],
        [rec.get("id", "") for rec in records],
        tuple(r.weights) if r else (),
        tuple(r.sources) if r else (),
      ),
    )
    width = self.c.objective.xtok.teacher_len or 2 * out["tokens"].shape[1]
    for k, (_, _, _, tok) in enumerate(teachers):
      if tok is None:
        continue
      arrays, noncanonical = alignment.xtok_arrays(
        out["tokens"],
        out["loss_mask"],
        [alignment.teacher_prompt_ids(tok, rec["question"]) for rec in records],
        self.task.tokenizer,
        tok,
        width,
      )
      noncanonical = noncanonical[out["student_row"] > 0]
      stats["noncanonical_frac"] = float(noncanonical.mean()) if noncanonical.size else 0.0
      out.update({f"{name}_{k}": v for name, v in arrays.items()})
    return out

  def _topk_cache(self, workdir) -> topk_store.TopKSource | None:
    """cached_topk: the teacher's top-k on disk (one pass if absent); the teacher's
    params then leave the device until the final evaluation reloads them."""
    c, pair = self.c, self.pair
    if c.data.teacher_source != prefixes.CACHED_TOPK:
      return None
    cache = teacher_topk.ensure_cache(
      workdir,
      self.task.train_encoded,
      pair.teacher_graphdef,
      pair.teacher_params,
      k=c.objective.teacher_top_k,
      batch_size=c.data.batch_size,
      mesh=self.mesh,
      pad_id=self.task.tokenizer.pad_id,
      log=self.log,
    )
    teacher_topk.free(pair.teacher_params)
    pair.teacher_params = None
    return cache

  # -- checkpoint -------------------------------------------------------------------------
  def host_state(self) -> dict:
    return {
      "iterator": self.iterator.get_state(),
      "curriculum": self.cur_state,
      "schedule": self.sched_state,
      "cost": self.cost.state(),
      "last_entropy": self.last_entropy,
    }

  def restore(self) -> int:
    host = self.base.restore(self.log)
    if host is None:
      return 0
    self.state = self.base.state
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
    c, pad = self.c, self.task.tokenizer.pad_id
    plan = prefixes.plan(
      rng.numpy_rng(c.seed, "prefix_rows", step),
      len(prompts["prompt_len"]),
      prefix=c.objective.prefix,
      student_frac=c.objective.student_prefix_frac,
      teacher_source=c.data.teacher_source,
      max_len=max_len,
    )
    parts, entropy = [], None
    if len(plan.student_idx):
      res = self.cost.timed(
        "student",
        self._rollout,
        self.student_engine,
        self.state["params"],
        prompts,
        plan.student_idx,
        max_len,
        rng.key_data(c.seed, "student_rollout", step),
      )
      parts.append(prefixes.rollout_responses(plan.student_idx, res))
      entropy = rollout_lib.token_mean(res, "entropies")
    if len(plan.teacher_idx):
      parts.append(self._teacher_responses(step, prompts, plan))
    batch = prefixes.assemble(prompts, parts, plan, c.data.max_response_len, pad, entropy)
    out = train.make_batch(
      batch.tokens_BxT,
      batch.loss_mask_BxT,
      batch.student_B,
      0.0,
      rng.key_data(c.seed, "train_step", step),
      length_bucket=configuration.length_bucket(c),
    )
    if self.topk is not None:
      out["topk_ids"], out["topk_logp"] = prefixes.topk_arrays(
        out["loss_mask"], [self.topk[i] for i in prompts["index"]], c.objective.teacher_top_k
      )
    if self.teachers:
      out = self._teacher_arrays(out, prompts, batch.stats)
    return out, batch.stats

  def _rollout(self, engine, params, prompts, idx, max_len, key) -> dict:
    return rollout_lib.rollout(
      engine,
      params,
      prompts["prompt_tokens"][idx],
      prompt_lens=prompts["prompt_len"][idx],
      sampler=self.sampler,
      seed=key,
      max_new_tokens=max_len,
      sync_every=self.c.rollout.sync_every,
      pad_id=self.task.tokenizer.pad_id,
    )

  def _teacher_responses(self, step, prompts, plan) -> prefixes.Responses:
    """Teacher prefixes: dataset responses, or teacher rollouts (cached when asked)."""
    c, idx, pad = self.c, plan.teacher_idx, self.task.tokenizer.pad_id
    R = c.data.max_response_len
    if plan.teacher_source in (prefixes.DATASET, prefixes.CACHED_TOPK):
      return prefixes.dataset_responses(prompts, idx, plan.max_len, R, pad)
    index = prompts["index"]
    rows = {i: self.cache.get(index[i]) for i in idx} if self.cache else {}
    todo = [i for i in idx if rows.get(i) is None]
    if todo:
      t_prompts = self._teacher_prompts(prompts, todo) if self.pair.teacher_tokenizer else prompts
      res = self.cost.timed(
        "teacher",
        self._rollout,
        self.teacher_engine,
        self.pair.teacher_params,
        t_prompts,
        np.arange(len(todo)) if self.pair.teacher_tokenizer else np.asarray(todo),
        R,
        rng.key_data(c.seed, "teacher_rollout", step),
      )
      fresh = prefixes.cache_rows(index[todo], res)
      if self.pair.teacher_tokenizer:  # the teacher's text, retokenised for the student
        fresh = [self._retokenized(row) for row in fresh]
      if self.cache is not None:
        self.cache.put(fresh)
      rows.update(zip(todo, fresh))
    return prefixes.cached_responses(idx, [rows[i] for i in idx], plan.max_len, R, pad)

  def _teacher_prompts(self, prompts: dict, rows) -> dict:
    """Rows' questions as the teacher's own prompts (its rendering, its ids, its pad)."""
    ttok = self.pair.teacher_tokenizer
    P = self.c.data.max_prompt_len
    ids = [
      alignment.teacher_prompt_ids(
        ttok, self.task.train_records[int(prompts["index"][i])]["question"]
      )
      for i in rows
    ]
    if max(map(len, ids)) > P:
      raise ValueError(
        f"a teacher prompt of {max(map(len, ids))} tokens exceeds config.data.max_prompt_len={P} "
        "(the teacher's engine shares the student's prompt width); raise it"
      )
    tokens = np.full((len(ids), P), ttok.pad_id, np.int32)
    for j, x in enumerate(ids):
      tokens[j, : len(x)] = x
    return {"prompt_tokens": tokens, "prompt_len": np.array([len(x) for x in ids], np.int32)}

  def _retokenized(self, row: dict) -> dict:
    toks = alignment.retokenize(
      self.pair.teacher_tokenizer, self.task.tokenizer, row["tokens"], not row["truncated"]
    )
    return dict(row, tokens=toks)

  def measure_reference(self) -> None:
    """The teacher's rollout entropy, once per run (checkpointed): what the curriculum's
    gate and floor ratios multiply when curriculum.reference='teacher'."""
    if (
      not self.cur_cfg.enabled
      or self.cur_cfg.reference != "teacher"
      or self.cur_state.get("reference_entropy") is not None
    ):
      return
    recs = self.task.train_records[:REFERENCE_PROMPTS]
    enc = pipeline.encode_records(
      recs, self.task.tokenizer, max_prompt_len=self.c.data.max_prompt_len, truncate=True
    )
    res = rollout_lib.rollout(
      self.teacher_engine,
      self.pair.teacher_params,
      enc.prompt_ids,
      sampler=self.sampler,
      seed=rng.key(self.c.seed, "curriculum_reference"),
      max_new_tokens=self.c.data.max_response_len,
      sync_every=self.c.rollout.sync_every,
      pad_id=self.task.tokenizer.pad_id,
    )
    h = rollout_lib.token_mean(res, "entropies")
    self.cur_state = curriculum_lib.set_reference(self.cur_state, h)
    gate, floor = curriculum_lib.thresholds(self.cur_cfg, self.cur_state)
    self.log(
      f"curriculum: teacher rollout entropy {h:.4f} nats on {len(recs)} prompts; "
      f"gate {gate:.4f}, floor {floor:.4f}"
    )

  def current_alpha(self, step: int) -> float:
    alpha, self.sched_state = schedules.alpha_at(
      self.schedule, step, self.sched_state, entropy=self.last_entropy
    )
    return float(curriculum_lib.effective_alpha(self.cur_cfg, self.cur_state, alpha))

  def step(self, step: int) -> dict:
    t0 = time.perf_counter()
    max_len = (
      curriculum_lib.max_length(self.cur_cfg, self.cur_state)
      if self.cur_cfg.enabled
      else configuration.horizon(self.c)
    )
    batch, stats = self.make_batch(step, next(self.iterator), max_len)
    batch["alpha"] = np.float32(self.current_alpha(step))
    # The kernel cannot check inside jit: ids in [0, V), a finite mask >= 0, alpha in [0, 1].
    kl_lib.check_batch(
      batch["loss_mask"],
      batch["tokens"],
      vocab=self.pair.student_cfg.vocab_size,
      alpha=batch["alpha"],
    )
    batch = sharding.put_global(
      batch,
      train.batch_shardings(self.mesh, self.topk is not None, self.teachers),
    )
    t1 = time.perf_counter()
    t_params = (
      tuple(t[1] for t in self._teacher_list()) if self.teachers else self.pair.teacher_params
    )
    self.state, metrics = self.step_fn(self.state, batch, t_params)
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    t2 = time.perf_counter()
    metrics_log.check_finite(step + 1, metrics)
    metrics.update(
      stats,
      max_len=max_len,
      seq_len=batch["tokens"].shape[1],
      step_time=t2 - t0,
      train_time=t2 - t1,
      gen_time=t1 - t0,
      **self.cost.as_metrics(),
    )
    self.last_entropy = stats.get("rollout_entropy", metrics["ent_s"])
    self.cur_state, decision = curriculum_lib.update(
      self.cur_cfg, self.cur_state, step + 1, self.last_entropy, stats["truncation_rate"]
    )
    if decision is not None:
      self.log(f"curriculum: {decision['action']} at step {decision['step']}: {decision['reason']}")
    return metrics


def run(c: mlc.ConfigDict, workdir: str, allow_config_change: bool = False) -> dict:
  """Trains, evaluates and returns the summary dict (also written to workdir). Resuming
  under a different config is refused unless `allow_config_change` (it would change
  the LR and α schedules mid-run)."""
  configuration.validate(c)
  paths.check_workdir(workdir)  # missing and not creatable, or unwritable: one line
  metrics_log.check_config_unchanged(workdir, c, allow_config_change)
  mesh = sharding.resolve_mesh(c.mesh)
  paths.check_workdir(workdir, checkpoint_bytes(c, mesh, workdir))  # before any compile
  logger = metrics_log.Logger(workdir, c)
  log = logger.text
  log(f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} devices")
  tokenizer = pair_lib.load_tokenizer(c, workdir)
  cross = configuration.cross_tokenizer(c)
  t_tok = pair_lib.teacher_tokenizer(c, workdir) if cross else None
  task = tasks.load_task(c, tokenizer, workdir, teacher_tokenizer=t_tok)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log)
  pair.extra_teachers = pair_lib.load_extra_teachers(c, mesh, task, workdir, log)
  loop = Loop(c, mesh, pair, task, workdir, log)
  start = loop.restore()
  logger.start(start)  # drops metric rows past the restored step (a killed run's tail)
  loop.measure_reference()
  if not _train(c, loop, logger, pair, mesh, start, workdir):  # preempted: checkpointed and logged
    logger.close()
    return {"preempted_at_step": int(loop.state["step"])}
  if pair.teacher_params is None:  # cached_topk trained without it; evaluation needs it
    pair.teacher_params = pair_lib.load_teacher(c, mesh, task, workdir, log)[2]
  if c.export.at_end:
    out = handoff.write_model(
      "hf",
      str(paths.as_path(workdir) / "export" / "hf"),
      pair.student_cfg,
      loop.state["params"],
      task.tokenizer,
    )
    log(f"export: the student as a Hugging Face directory in {out}")
  spec = configuration.eval_spec(c)
  results = harness.evaluate_run(spec, pair, task, loop.state["params"], mesh, log)
  # the teacher answers in its own tokens
  t_task = dataclasses.replace(task, tokenizer=t_tok) if cross else task
  teacher = (
    harness.evaluate_run(spec, pair, t_task, pair.teacher_params, mesh, log, "teacher")
    if c.eval.teacher
    else {}
  )
  summary = dict(
    eval=results,
    teacher_eval=teacher,
    steps=c.train.steps,
    horizon=configuration.horizon(c),
    seed=c.seed,
    curriculum_enabled=bool(c.curriculum.enabled),
    objective=dict(
      prefix=c.objective.prefix,
      kl=c.objective.kl,
      alpha=configuration.base_alpha(c),
      estimator=c.objective.estimator,
    ),
    alpha_schedule=c.objective.alpha_schedule.kind,
    generation_cost=loop.cost.state(),
    compute=dict(
      generated_tokens=sum(loop.cost.tokens.values()),
      train_flops=c.train.steps * _step_flops(c, pair),
    ),
    curriculum=loop.cur_state.get("decisions", []),
  )
  if c.student.init == "warm_start":  # the student before distillation, same evaluation
    summary["warm_start_eval"] = warm_start.cached_eval(workdir)
  print_summary(summary, log)
  logger.finish(summary)
  return summary


def checkpoint_bytes(c, mesh, workdir) -> int:
  """Bytes of one checkpoint (the train state's arrays), from shapes alone."""
  t_cfg = pair_lib.teacher_config(c, workdir)
  like = train.abstract_state(
    train.make_optimizer(c.optim, c.train.steps), mesh, pair_lib.student_config(c, t_cfg, workdir)
  )
  return checkpointing.nbytes(like)


def _step_flops(c, pair, width: int | None = None) -> float:
  """Model FLOPs of a step whose rows are `width` positions (default: the full P + R)."""
  width = width or c.data.max_prompt_len + c.data.max_response_len
  return train.step_flops(pair.student_cfg, pair.teacher_cfg, c.data.batch_size * width)


def read_evals(workdir) -> dict[int, dict]:
  """{step: eval results} of WORKDIR/evals.jsonl (the last line per step wins)."""
  path, out = paths.as_path(workdir) / EVALS_FILE, {}
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        d = json.loads(line)
        out[d["step"]] = d["eval"]
  return out


def evaluate_along(c, loop: Loop, workdir, step: int, done: dict) -> None:
  """The evaluation at a declared step of the trajectory (config.eval.at_steps; 0 = the
  starting student), on the first `eval.curve_problems` held-out problems (0 = all):
  appended to WORKDIR/evals.jsonl, skipped when that step is already there (resume)."""
  if step not in set(c.eval.get("at_steps", ())) or step in done or step == c.train.steps:
    return
  ce = mlc.ConfigDict(c.to_dict())
  if ce.eval.get("curve_problems", 0):
    ce.eval.num_problems = min(ce.eval.curve_problems, ce.eval.num_problems)
  done[step] = harness.evaluate_run(
    configuration.eval_spec(ce), loop.pair, loop.task, loop.state["params"], loop.mesh, loop.log
  )
  if multihost.is_primary():
    with (paths.as_path(workdir) / EVALS_FILE).open("a") as f:
      f.write(json.dumps({"step": step, "eval": done[step]}) + "\n")


def _train(c, loop: Loop, logger, pair, mesh, start: int, workdir) -> bool:
  """The train loop; False when a preemption notice stopped it (checkpoint written)."""
  peak = metrics_log.peak_flops(mesh)
  done = read_evals(workdir)
  evaluate_along(c, loop, workdir, start, done)
  bar = metrics_log.progress(start, c.train.steps, every=c.train.log_every)
  stops = (checkpointing.CheckpointWriteError, metrics_log.NonFiniteMetric)
  try:
    with preemption.Guard() as guard:
      for step in range(start, c.train.steps):
        metrics = loop.step(step)
        # the positions the step computed: its length bucket, not P + R
        width = metrics["seq_len"]
        metrics["tokens_per_s"] = c.data.batch_size * width / metrics["step_time"]
        metrics["mfu"] = _step_flops(c, pair, width) / metrics["train_time"] / peak
        logger.scalars(step + 1, metrics)
        # refresh=False: tqdm redraws at its own interval in update(), not on every step
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", ent=f"{metrics['ent_s']:.3f}", refresh=False)
        bar.update(1)
        last = step + 1 == c.train.steps
        loop.ckpt.maybe_save(step + 1, loop.state, loop.host_state, force=last)
        if guard.should_stop(step + 1):
          guard.save_and_log(loop.ckpt, step + 1, loop.state, loop.host_state(), logger.text)
          break
        evaluate_along(c, loop, workdir, step + 1, done)
    loop.ckpt.wait()  # the last write's errors surface here
  except stops as e:  # one line in the log; launch exits 1 without a traceback
    logger.text(str(e))
    e.logged = True
    raise
  finally:
    bar.close()
    loop.ckpt.close()  # the save in flight (the last good step) completes first
  return guard.reason is None


def print_summary(summary: dict, log) -> None:
  o = summary["objective"]
  log(
    f"summary: prefix={o['prefix']} kl={o['kl']} estimator={o['estimator']} "
    f"steps={summary['steps']}"
  )
  for name, m in summary.get("warm_start_eval", {}).items():
    k = m["k"]
    log(
      f"  student at warm start on {name}: accuracy(Avg@{k})={m['avg_at_k']:.3f} "
      f"Pass@{k}={m['pass_at_k'][str(k)]:.3f} length={m['mean_response_len']:.1f} "
      f"truncation={m['truncation_rate']:.2f}"
    )
  for role in ("eval", "teacher_eval"):
    for name, m in summary[role].items():
      k = m["k"]
      log(
        f"  {'student' if role == 'eval' else 'teacher'} on {name}: accuracy(Avg@{k})="
        f"{m['avg_at_k']:.3f} Pass@1={m['pass_at_k']['1']:.3f} "
        f"Pass@{k}={m['pass_at_k'][str(k)]:.3f} length={m['mean_response_len']:.1f} "
        f"truncation={m['truncation_rate']:.2f} entropy={m['mean_entropy']:.3f} "
        f"KL(p||q)={m['fkl']:.4f} KL(q||p)={m['rkl']:.4f}"
      )
