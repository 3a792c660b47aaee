"""GRPO after distillation (DESIGN §9): RL with the task's verifier as the reward.

Run from a distillation run's workdir (its config.json decides the models, task and
teacher; its latest checkpoint is the initial policy):
  python -m dkd_jax.launch --config=configs/grpo.py[:tiny] --config.init.checkpoint=RUN_DIR \
      --workdir=/tmp/grpo
or from a HF directory / .gguf file (`--config.init.checkpoint=DIR`, then the data block
of this file names the task), or with `--config.init.restore_student=False` from the
student a run STARTED from (the un-distilled baseline with that run's teacher and task).
Steps are RL steps: one group rollout of `rl.prompts_per_batch` x `rl.group_size`
responses, then `rl.updates_per_batch` optimizer steps on it.
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  chosen = common.presets(arg)
  c = common.base(arg)
  # Fields the run directory owns (seed, teacher, student, data, objective, curriculum)
  # are replaced by the run's own when init.checkpoint is a run directory.
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  c.init = mlc.ConfigDict(dict(checkpoint="", restore_student=True))
  c.rl = mlc.ConfigDict(
    dict(
      seed=0,  # the RL randomness (rollouts, prompt order); study seeds
      prompts_per_batch=8,
      group_size=8,
      updates_per_batch=2,
      advantage="mean_std",  # mean_std | mean (Dr. GRPO-style, no std)
      adv_eps=1e-6,
      eps_low=0.2,
      eps_high=0.2,  # eps_high > eps_low = DAPO's clip-higher
      aggregation="token",  # token (over the batch) | sequence (per response, then mean)
      kl_coef=0.0,  # β of the KL penalty; 0 = none
      kl_ref="init",  # init (the initial student) | teacher
      kl_estimator="full_vocab",  # full_vocab (exact, fused kernel) | k3 (sampled token)
      behavior_logp="rollout",  # rollout (engine's sampling log-probs) | recompute
      max_response_len=0,  # rollout length limit; 0 = the run's data.max_response_len
      # DAPO-style dynamic sampling: off | drop (tied groups leave the loss) | resample
      # (draw more groups, up to max_draws batches, until min_informative (0 = prompts_
      # per_batch) groups differ in reward; tied ones left over are dropped)
      dynamic_sampling="off",
      max_draws=4,
      min_informative=0,
      eval_every=25,
      eval_problems=0,
      eval_k=0,
    )
  )  # 0 = the init run's (its held-out set and k)
  c.rollout.temperature = 1.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 5
  c.optim.weight_decay = 0.0
  c.optim.end_lr_frac = 1.0  # constant after warmup: RL budgets are compared by step
  c.train.steps = 200
  c.train.ckpt_every = 25
  if "tiny" in chosen:
    c.rl.prompts_per_batch = 4
    c.rl.eval_every = 4
    c.train.steps = 8
    c.train.ckpt_every = 4
  return c
