"""A GRPO run (DESIGN §9): a distilled student -> group rollouts -> verifier rewards ->
the clipped objective -> evaluation curve.

`run(config, workdir)` is what `python -m dkd_jax.launch` calls for a config with an
`rl` block (configs/grpo.py). `config.init.checkpoint` names where the policy starts:

- a run directory (config.json + checkpoints/): that run's config decides the models,
  task, teacher, seed and evaluation (`RUN_OWNED`: the RL curve is scored on the very
  held-out problems the distillation run was; `rl.eval_problems` / `rl.eval_k` may only
  shrink or resize it, e.g. for cheaper intermediate points), its bootstrapped teacher is
  copied into the
  workdir, and its latest student checkpoint is the initial policy (or, with
  `init.restore_student=False`, the student that run started from: the un-distilled
  baseline);
- a HF directory or .gguf file: the student (and, unless configured, the teacher);
- empty: this config's own student init.

Each RL step: `rl.prompts_per_batch` prompts (their own shuffle, `rl.seed`) -> G =
`rl.group_size` samples per prompt from ONE prefill (`rollout(samples_per_prompt=G)`),
with the live params -> `task.grade` rewards (truncated = wrong) -> group advantages ->
`rl.updates_per_batch` calls of the one jitted GRPO step on that batch. The evaluation
(`evals.harness`, the same as the distillation runs') runs at step 0, every
`rl.eval_every` steps and at the end; each result is appended to WORKDIR/rl_evals.jsonl.
Train state + prompt iterator are checkpointed together; a killed run resumes.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import ml_collections as mlc
import numpy as np
import tqdm

from dkd_jax.core import metrics_log
from dkd_jax.core import paths
from dkd_jax.core import preemption
from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.data import pipeline
from dkd_jax.evals import harness
from dkd_jax.evals import math_eval
from dkd_jax.generate import rollout as rollout_lib
from dkd_jax.generate import sampling
from dkd_jax.runs import configuration
from dkd_jax.runs import pair as pair_lib
from dkd_jax.runs import scaffold
from dkd_jax.runs import tasks
from dkd_jax.runs import workdir as run_dir
from dkd_jax.train import grpo

# the update's metric names (a skipped update logs them as 0 with skipped_update = 1)
METRIC_NAMES = (
  "clip_frac_high",
  "clip_frac_high_last",
  "clip_frac_low",
  "clip_frac_low_last",
  "grad_norm",
  "kl",
  "logp_vs_rollout",
  "loss",
  "pg_loss",
  "policy_nll",
  "ratio_max_dev",
  "ratio_max_dev_first",
  "ratio_mean",
)
RUN_OWNED = ("seed", "teacher", "student", "data", "objective", "curriculum", "eval")
EVALS_FILE = "rl_evals.jsonl"


def _is_gguf_file(src: str) -> bool:
  """A local .gguf checkpoint file (the gguf reader reads local files only)."""
  return src.endswith(".gguf") and pathlib.Path(src).is_file()


def resolve_config(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """The config this run uses: `c` with the init source's models, task, seed and eval."""
  out = mlc.ConfigDict(c.to_dict())
  src = c.init.checkpoint
  if src and run_dir.is_run_dir(src):
    run_c = run_dir.load_config(src)
    for k in RUN_OWNED:
      out[k] = run_c[k]
    # The distillation trajectory's evaluation points are not GRPO's (rl.eval_every sets
    # those); kept, a study run's at_steps=(0, 100, 200) refused a 100-step GRPO run.
    if "at_steps" in out.eval:
      out.eval.at_steps = ()
  elif src == pair_lib.SMOLLM2_ALIAS or src and (run_dir.has_config(src) or _is_gguf_file(src)):
    out.student.init, out.student.checkpoint = "checkpoint", src
    out.teacher.checkpoint = out.teacher.checkpoint or src
  elif src:
    raise FileNotFoundError(
      f"config.init.checkpoint={src!r} is neither a run directory "
      "(config.json + checkpoints/) nor a HF directory or .gguf file"
    )
  return out


def eval_config(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """`c` with `rl.eval_problems` / `rl.eval_k` applied (0 = keep) for the evaluation only:
  the first N held-out problems, a fixed subset (curves stay paired across arms), while
  the train/held-out split, which `eval.num_problems` sets for file tasks, is untouched."""
  out = mlc.ConfigDict(c.to_dict())
  if c.rl.eval_problems:
    out.eval.num_problems = min(c.rl.eval_problems, c.eval.num_problems)
  if c.rl.eval_k:
    out.eval.k = c.rl.eval_k
  return out


def initial_params(c, pair, mesh, log) -> dict:
  """The policy's starting params: the init run's latest student, or the pair's."""
  src = c.init.checkpoint
  if not (src and run_dir.is_run_dir(src) and c.init.restore_student):
    return pair.student_params
  params = run_dir.restore_student(src, mesh, pair.student_cfg)
  log(f"policy: the latest student checkpoint of {src}")
  return params


def host_copy(params, shardings) -> dict:
  """A copy that never aliases `params` (whose buffers the donated step will free)."""
  return jax.device_put(jax.device_get(params), shardings)


def unparseable_frac(reasons: Sequence[str]) -> float:
  """Fraction of responses that ended by themselves but whose answer the grader could
  not read: the arithmetic and chain graders return no_answer, math-verify also
  unparseable (counting only the latter read 0.0 on every arithmetic run)."""
  unread = (math_eval.NO_ANSWER, math_eval.UNPARSEABLE)
  return float(np.mean([r in unread for r in reasons])) if len(reasons) else 0.0


class RLLoop:
  """The per-step host logic around the jitted GRPO step; its state is checkpointed."""

  def __init__(self, c, mesh, pair, task, workdir, log):
    self.c, self.mesh, self.pair, self.task, self.log = c, mesh, pair, task, log
    r = c.rl
    data, self.rollout = configuration.data_settings(c), configuration.rollout_settings(c)
    self.G, self.P = r.group_size, r.prompts_per_batch
    self.max_new = r.max_response_len or data.max_response_len
    params = initial_params(c, pair, mesh, log)
    self.base = scaffold.build(
      c,
      mesh,
      pair.student_cfg,
      pair.student_graphdef,
      params,
      workdir,
      optimizer_steps=c.train.steps * r.updates_per_batch,
      slots=self.P * self.G,
      max_new=self.max_new,
      eos_id=task.tokenizer.eos_id,
    )
    self.optimizer, self.state, shard = self.base.optimizer, self.base.state, self.base.state_shard
    self.engine, self.ckpt = self.base.engine, self.base.ckpt
    spec = configuration.rl_spec(c)
    ref_gd, self.ref_params, ref_shard = None, None, None
    if spec.kl_coef > 0 and r.kl_ref == "teacher":
      ref_gd, self.ref_params, ref_shard = (
        pair.teacher_graphdef,
        pair.teacher_params,
        pair.teacher_shardings,
      )
    elif spec.kl_coef > 0:  # the initial policy, frozen
      ref_shard = shard["params"]
      ref_gd, self.ref_params = pair.student_graphdef, host_copy(params, ref_shard)
    static = grpo.StepStatic(pair.student_graphdef, ref_gd, spec, self.optimizer, mesh)
    self.step_fn = grpo.jit_grpo_step(static, shard, ref_shard)
    self.iterator = iter(
      pipeline.prompt_dataset(
        task.train_records,
        task.tokenizer,
        max_prompt_len=data.max_prompt_len,
        seed=rng.int_seed(r.seed, "rl_shuffle"),
        batch_size=self.P,
        truncate=data.truncate_prompts,
      )
    )
    # GRPO's ratio needs the full-support policy softmax(logits / T) (validate_rl).
    self.sampler = sampling.Sampler(self.rollout.temperature)
    self.gen_tokens = 0
    self.rl_step = 0
    self.metric_names = list(METRIC_NAMES)

  def host_state(self) -> dict:
    return {
      "iterator": self.iterator.get_state(),
      "gen_tokens": self.gen_tokens,
      "rl_step": self.rl_step,
    }

  def restore(self) -> int:
    """The RL step to continue from (0 when the workdir has no checkpoint)."""
    host = self.base.restore(self.log)
    if host is None:
      return 0
    self.state = self.base.state
    self.iterator.set_state(host["iterator"])
    self.gen_tokens = host["gen_tokens"]
    # skipped updates (dynamic sampling) make optimizer steps != RL steps x updates
    step = host.get("rl_step", int(self.state["step"]) // self.c.rl.updates_per_batch)
    self.rl_step = step
    self.log(f"resumed from RL step {step}")
    return step

  def draw(self, step: int, i: int) -> tuple[dict, np.ndarray, list[str]]:
    """One group rollout of the next P prompts: (result with P*G rows, rewards, reasons).
    Draw 0 uses the step's rollout key (so dynamic_sampling='off' is unchanged); draw i
    > 0 (resampling) its own stream."""
    c, tok = self.c, self.task.tokenizer
    prompts = next(self.iterator)
    key = (
      rng.key(c.rl.seed, "rl_rollout", step)
      if i == 0
      else jax.random.fold_in(rng.key(c.rl.seed, "rl_resample", step), i)
    )
    res = rollout_lib.rollout(
      self.engine,
      self.state["params"],
      prompts["prompt_tokens"],
      prompt_lens=prompts["prompt_len"],
      sampler=self.sampler,
      seed=key,
      max_new_tokens=self.max_new,
      sync_every=self.rollout.sync_every,
      pad_id=tok.pad_id,
      samples_per_prompt=self.G,
    )
    texts, _ = harness.response_texts(res, tok)
    reward_B, reasons = grpo.rewards(
      texts, np.repeat(prompts["answer"], self.G), res["truncated"], self.task.grade
    )
    self.gen_tokens += int(np.sum(res["response_len"]))
    return res, reward_B, reasons

  def group_rollout(self, step: int) -> tuple[dict, np.ndarray, dict]:
    """(rollout result with P*G rows, advantages [P*G], rollout metrics). With
    rl.dynamic_sampling 'resample', more groups are drawn (up to rl.max_draws batches)
    until rl.min_informative (0 = P) of them have differing rewards; with 'drop' or
    'resample' the tied groups' rows are masked out of the loss."""
    r = self.c.rl
    mode, need = r.dynamic_sampling, r.min_informative or self.P
    draws = [self.draw(step, 0)]
    while (
      mode == "resample"
      and len(draws) < r.max_draws
      and sum(int(grpo.informative(d[1].reshape(-1, self.G)).sum()) for d in draws) < need
    ):
      draws.append(self.draw(step, len(draws)))
    reward_DxG = np.concatenate([d[1] for d in draws]).reshape(-1, self.G)
    reasons = [x for d in draws for x in d[2]]
    groups, keep = grpo.select_groups(reward_DxG, self.P, mode)
    rows = grpo.group_rows(groups, self.G)
    res = grpo.take_rows(grpo.concat_results([d[0] for d in draws]), rows)
    reward_PxG = reward_DxG[groups]
    adv_PxG = grpo.group_advantages(reward_PxG, r.advantage, r.adv_eps)
    if mode != "off":
      res["loss_mask"] = res["loss_mask"] * np.repeat(keep, self.G)[:, None]
    drawn = grpo.informative(reward_DxG)
    stats = {
      "reward": float(reward_PxG.mean()),
      "tied_groups": float(np.mean(~drawn)),
      "informative_groups": float(np.sum(keep & grpo.informative(reward_PxG))),
      "draws": float(len(draws)),
      "unparseable_frac": unparseable_frac(reasons),
      "reward_drawn": float(reward_DxG.mean()),
      "response_len": float(np.mean(res["response_len"])),
      "truncation_rate": float(np.mean(res["truncated"])),
      "rollout_entropy": rollout_lib.token_mean(res, "entropies"),
      "gen_tokens": float(self.gen_tokens),
    }
    return res, adv_PxG.reshape(-1), stats

  def update(self, res: dict, adv_B: np.ndarray) -> dict:
    """`rl.updates_per_batch` optimizer steps on one rollout batch; per-update metrics
    are averaged, the first update's ratio deviation and the last one's clip fractions
    are kept by name. A batch with no loss token left (every group dropped) makes no
    optimizer step at all: AdamW would still move the weights on a zero gradient."""
    if not np.any(res["loss_mask"]):
      return dict.fromkeys(self.metric_names, 0.0) | {"skipped_update": 1.0}
    recompute = self.c.rl.behavior_logp == "recompute"
    batch = jax.device_put(
      grpo.make_batch(
        res["tokens"], res["loss_mask"], res["sampling_logprobs"], adv_B, own_old=recompute
      ),
      grpo.batch_shardings(self.mesh),
    )
    per_update = []
    for u in range(self.c.rl.updates_per_batch):
      self.state, m, logp_BxT = self.step_fn(self.state, batch, self.ref_params)
      per_update.append(m)
      if recompute and u == 0:  # π_old := the params that sampled the batch
        batch = dict(
          batch,
          old_logp=logp_BxT,
          own_old=jax.device_put(np.asarray(False), sharding.replicated(self.mesh)),
        )
    per_update = [{k: float(v) for k, v in m.items()} for m in jax.device_get(per_update)]
    out = {k: float(np.mean([m[k] for m in per_update])) for k in per_update[0]}
    out["ratio_max_dev_first"] = per_update[0]["ratio_max_dev"]
    out["logp_vs_rollout"] = per_update[0]["logp_vs_rollout"]
    for k in ("clip_frac_low", "clip_frac_high"):
      out[k + "_last"] = per_update[-1][k]
    self.metric_names = sorted(out)
    return out | {"skipped_update": 0.0}

  def step(self, step: int) -> dict:
    t0 = time.perf_counter()
    self.rl_step = step + 1
    res, adv_B, stats = self.group_rollout(step)
    t1 = time.perf_counter()
    metrics = self.update(res, adv_B)
    t2 = time.perf_counter()
    metrics_log.check_finite(step + 1, metrics)
    return dict(metrics, **stats, step_time=t2 - t0, gen_time=t1 - t0, train_time=t2 - t1)


def read_evals(workdir: str) -> dict[int, dict]:
  """{RL step: eval results} of WORKDIR/rl_evals.jsonl (the last line per step wins)."""
  path, out = paths.as_path(workdir) / EVALS_FILE, {}
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        d = json.loads(line)
        out[d["step"]] = d["eval"]
  return out


def eval_steps(c) -> set[int]:
  steps, every = c.train.steps, c.rl.eval_every
  return {0, steps} | set(range(every, steps, every))


def _evaluate(c, loop, workdir, step, log) -> dict:
  results = harness.evaluate_run(
    configuration.eval_spec(eval_config(c)),
    loop.pair,
    loop.task,
    loop.state["params"],
    loop.mesh,
    log,
  )
  with (paths.as_path(workdir) / EVALS_FILE).open("a") as f:
    f.write(json.dumps({"step": step, "eval": results}) + "\n")
  return results


def run(c: mlc.ConfigDict, workdir: str) -> dict:
  """GRPO from `config.init.checkpoint`; returns the summary (also in WORKDIR)."""
  configuration.validate(c)
  c = resolve_config(c)
  configuration.validate(c)
  paths.as_path(workdir).mkdir(parents=True, exist_ok=True)
  if c.init.checkpoint:
    run_dir.adopt_artifacts(c.init.checkpoint, workdir)
  logger = metrics_log.Logger(workdir, c)
  log = logger.text
  mesh = sharding.resolve_mesh(c.mesh)
  rows = c.rl.prompts_per_batch * c.rl.group_size
  if rows % (mesh.shape["data"] * mesh.shape["fsdp"]):
    raise ValueError(
      f"config.rl.prompts_per_batch * config.rl.group_size = {rows} rows do "
      f"not divide the batch mesh axes {dict(mesh.shape)}"
    )
  log(f"grpo from {c.init.checkpoint or 'the configured student'}: mesh {dict(mesh.shape)}")
  task = tasks.load_task(c, pair_lib.load_tokenizer(c, workdir), workdir)
  pair = pair_lib.load_pair(c, mesh, task, workdir, log)
  loop = RLLoop(c, mesh, pair, task, workdir, log)
  start, evals = loop.restore(), read_evals(workdir)
  logger.start(start)  # metric rows past the restored step are dropped
  todo = eval_steps(c)
  if start in todo and start not in evals:  # also a kill between checkpoint and eval
    evals[start] = _evaluate(c, loop, workdir, start, log)
  bar = tqdm.tqdm(
    total=c.train.steps,
    initial=start,
    desc="grpo",
    unit="step",
    dynamic_ncols=True,
    file=sys.stderr,
    mininterval=1.0,
  )
  with preemption.Guard() as guard:
    for step in range(start, c.train.steps):
      metrics = loop.step(step)
      logger.scalars(step + 1, metrics)
      bar.update(1)
      clip = metrics["clip_frac_low"] + metrics["clip_frac_high"]
      bar.set_postfix(reward=f"{metrics['reward']:.3f}", clip=f"{clip:.3f}")
      loop.ckpt.maybe_save(step + 1, loop.state, loop.host_state(), force=step + 1 == c.train.steps)
      if guard.should_stop(step + 1):  # its evaluation (if due) runs on resume
        guard.save_and_log(loop.ckpt, step + 1, loop.state, loop.host_state(), log)
        break
      if step + 1 in todo:
        evals[step + 1] = _evaluate(c, loop, workdir, step + 1, log)
    bar.close()
    loop.ckpt.close()
  if guard.reason is not None:
    logger.close()
    return {"preempted_at_step": int(loop.state["step"]) // c.rl.updates_per_batch}
  summary = dict(
    eval=evals[c.train.steps],
    steps=c.train.steps,
    init=c.init.to_dict(),
    rl=c.rl.to_dict(),
    curve=curve(evals),
  )
  log(
    "grpo summary: "
    + "  ".join(f"step {s}: Avg@k={v['avg_at_k']:.3f}" for s, v in summary["curve"].items())
  )
  logger.finish(summary)
  return summary


def curve(evals: dict[int, dict]) -> dict[int, dict]:
  """{step: the first eval set's Avg@k, Pass@k, length, entropy} for the summary."""
  out = {}
  for step in sorted(evals):
    m = next(iter(evals[step].values()))
    out[step] = {
      "avg_at_k": m["avg_at_k"],
      "pass_at_k": m["pass_at_k"][str(m["k"])],
      "mean_response_len": m["mean_response_len"],
      "mean_entropy": m["mean_entropy"],
    }
  return out
