"""Shared pieces of every experiment config (big_vision style `get_config(arg)` files).

Each experiment file (fwd_teacher.py, rev_student.py, ...) calls `base(arg)` and sets
its objective. `arg` is a comma-separated list of presets: `tiny` (a run that finishes
in about a minute on 2 CPU cores) and `default` (the embedded CPU run); a file may
accept more (`base(arg, extra=("teacher", ...))`). An unknown preset fails, listing
the known ones. Override any field on the command line: `--config.objective.alpha=0.3`.
"""

import ml_collections as mlc

PRESETS = ("default", "tiny", "chain")


def presets(arg: str, extra=()) -> set[str]:
  """The comma-separated presets of `arg`; an unknown name raises, listing the known."""
  names = {a.strip() for a in (arg or "default").split(",") if a.strip()}
  known = PRESETS + tuple(extra)
  unknown = sorted(names - set(known))
  if unknown:
    raise ValueError(
      f"unknown config preset(s) {unknown} in {arg!r}; known presets: "
      f"{list(known)} (comma-separated, e.g. 'tiny')"
    )
  return names


def tiny_model(
  d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, scan_layers=True
) -> mlc.ConfigDict:
  return mlc.ConfigDict(
    dict(
      arch="llama",
      vocab_size=vocab_size,
      d_model=d_model,
      d_ff=2 * d_model,
      n_layers=n_layers,
      n_heads=n_heads,
      n_kv_heads=n_kv_heads,
      head_dim=d_model // n_heads,
      rope_theta=10000.0,
      norm_eps=1e-5,
      tie_embeddings=True,
      max_seq_len=256,
      dtype="float32",
      scan_layers=scan_layers,
      remat="none",
    )
  )


def base(arg: str = "", extra=()) -> mlc.ConfigDict:
  chosen = presets(arg, extra)
  c = mlc.ConfigDict()
  c.seed = 0
  c.mesh = (-1, 1, 1)  # (data, fsdp, tensor); -1 = all remaining devices

  # Models. An empty checkpoint means: build from `model` (the teacher is then
  # bootstrapped by supervised training on the task and cached in the workdir).
  # bootstrap_seed: the bootstrapped teacher does not depend on config.seed, so every
  # seed of a study distils the same teacher.
  c.teacher = mlc.ConfigDict(
    dict(
      checkpoint="",
      model=tiny_model(d_model=128, n_layers=4),
      bootstrap_steps=800,
      bootstrap_lr=3e-3,
      bootstrap_seed=0,
    )
  )
  c.student = mlc.ConfigDict(
    dict(
      checkpoint="",
      # Unrolled layers: at 2 layers the compile stays short, and XLA:CPU runs the
      # student's backward without a scan's per-layer stacking (the :chain train step
      # ~5-8 ms, ~8%, faster; BUILD_NOTES "Step speed, session 8").
      model=tiny_model(d_model=96, n_layers=2, scan_layers=False),
      init="random",
      keep_every=2,
      tokenizer="",
      warm_start=mlc.ConfigDict(dict(steps=400, lr=3e-3, batch_size=32, num_problems=4000)),
    )
  )
  # More teachers (multi-teacher distillation): name -> a section like `teacher` (each
  # bootstrapped into WORKDIR/teachers/<name> when it has no checkpoint); `routing` picks
  # each sequence's teacher: 'weights' mixes the losses with fixed weights (config.teacher
  # first, then extra_teachers by name; () = equal), 'source' routes by record-id prefix
  # (one per teacher), 'modulo' by record index mod the number of teachers.
  c.extra_teachers = mlc.ConfigDict()
  c.routing = mlc.ConfigDict(dict(kind="weights", weights=(), sources=()))
  # student.init: random | warm_start | teacher_layers (every keep_every-th teacher layer)
  # | checkpoint. warm_start: a pretrained student, as in the paper: SFT from the seed's
  # random init on gold traces of num_problems problems disjoint from the distillation's
  # train and held-out problems (a local file keeps its last num_problems back for it),
  # cached in WORKDIR/student_warm_start (dkd_jax/runs/warm_start.py).
  # student.tokenizer: "" = the teacher's; "bpe:N" = a BPE of N tokens trained on the task's
  # text (WORKDIR/student_tokenizer); or a HF tokenizer directory. Another tokenizer than the
  # teacher's makes the run cross-tokenizer (objective.xtok; BUILD_NOTES).

  # The two decoupled axes (DESIGN.md §1) + mixing.
  c.objective = mlc.ConfigDict(
    dict(
      prefix="teacher",
      student_prefix_frac=0.5,
      kl="forward",
      alpha=0.5,
      beta=0.5,
      estimator="full_vocab",
      temperature=1.0,
      teacher_top_k=0,
      # cross-tokenizer only: token_level adds the mapped forward term (shared tokens +
      # ULD) to sequence KD on teacher rows; teacher_len is the teacher's token width
      # (0 = twice the student's prompt + response).
      xtok=mlc.ConfigDict(dict(token_level=False, uld_weight=1.0, teacher_len=0, credit=0)),
      alpha_schedule=mlc.ConfigDict(
        dict(
          kind="constant",
          alpha_end=0.5,
          target_entropy=0.5,
          rate=0.05,
          alpha_min=0.0,
          alpha_max=1.0,
        )
      ),
    )
  )
  # reference: 'teacher' (default) makes gate_entropy / floor_entropy ratios of the
  # teacher's measured rollout entropy; 'student_start' ratios of the student's first
  # window; 'absolute' reads them as nats.
  c.curriculum = mlc.ConfigDict(
    dict(
      enabled=False,
      lengths=(24, 36, 48),
      check_every=10,
      window=10,
      min_steps=40,
      reference="teacher",
      gate_entropy=0.7,
      floor_entropy=0.35,
      max_truncation=0.6,
      stage_max_truncation=(),  # () or one rate per advance (remedies.derive)
      on_collapse="raise_forward",
      alpha_step=0.1,
      alpha_max=0.9,
    )
  )

  # Data: the built-in arithmetic chain-of-thought task, or local math files.
  c.data = mlc.ConfigDict(
    dict(
      task="arithmetic",
      path="",
      teacher_source="dataset",  # dataset | rollout | rollout_cached
      reader="tfds",  # local files: tfds (array_record via grain) | plain
      batch_size=16,
      max_prompt_len=16,
      max_response_len=48,
      truncate_prompts=False,
      arithmetic=mlc.ConfigDict(
        dict(min_operands=2, max_operands=3, max_digits=2, num_train=20000, num_eval=64)
      ),
      # task='chain': length is up to the policy (self-checks, redos); problems are one
      # fixed set (data_seed), held-out ones disjoint in content from training.
      chain=mlc.ConfigDict(
        dict(
          min_ops=2,
          max_ops=6,
          check_prob=0.5,
          error_prob=0.1,
          max_redos=3,
          num_train=20000,
          num_eval=1000,
          data_seed=0,
        )
      ),
    )
  )
  c.rollout = mlc.ConfigDict(dict(temperature=1.0, top_p=1.0, top_k=0, sync_every=32))

  c.optim = mlc.ConfigDict(
    dict(
      lr=2e-3, warmup_steps=20, weight_decay=0.01, clip_norm=1.0, b1=0.9, b2=0.98, end_lr_frac=0.1
    )
  )
  # horizon: the response length trained on (rollout cap and loss mask, DESIGN §6) when
  # the curriculum is off; 0 = data.max_response_len. Distinct from steps.
  # length_bucket: the train step's rows are cut to the batch's longest row rounded up to
  # a multiple of this (one compile per bucket met); 0 = always max_prompt_len + max_response_len.
  c.train = mlc.ConfigDict(
    dict(
      steps=600,
      log_every=10,
      ckpt_every=100,
      kl_chunk=256,
      max_ckpts=2,
      horizon=0,
      length_bucket=64,
    )
  )
  # slots: engine decode slots for evaluation (0 = data.batch_size); kl_problems: how
  # many held-out problems get the one fixed set of teacher responses for held-out KL;
  # teacher: also evaluate the teacher (a study evaluates its shared teacher once).
  # at_steps: also evaluate at these steps along the trajectory (0 = the starting student)
  # into WORKDIR/evals.jsonl, on the first curve_problems held-out problems (0 = all).
  c.eval = mlc.ConfigDict(
    dict(
      k=4,
      num_problems=64,
      temperature=0.7,
      max_response_len=48,
      datasets=("arithmetic",),
      data_dir="",
      slots=0,
      kl_problems=64,
      teacher=True,
      at_steps=(),
      curve_problems=0,
    )
  )
  # at_end: the run ends by writing its student as a HF directory to WORKDIR/export/hf
  # (python -m dkd_jax.export does the same, and GGUF, for any checkpoint).
  c.export = mlc.ConfigDict(dict(at_end=False))

  if "chain" in chosen:
    use_chain_task(c)
  if "tiny" in chosen:
    c.teacher.model = tiny_model(d_model=64, n_layers=2)
    c.teacher.bootstrap_steps = 150
    c.student.model = tiny_model(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, scan_layers=False)
    c.student.warm_start.update(steps=30, num_problems=512)
    c.data.batch_size = 8
    c.curriculum.lengths = (24, 48)
    c.train.steps = 40
    c.train.ckpt_every = 20
    c.eval.num_problems = 16
    c.eval.k = 2
    c.eval.kl_problems = 16
    if "chain" in chosen:
      c.data.chain.num_train, c.data.chain.num_eval = 2000, 64
      c.data.max_response_len = c.eval.max_response_len = 64
      c.curriculum.lengths = (32, 64)
  return c


def use_chain_task(c: mlc.ConfigDict) -> None:
  """The study's task (DESIGN §8): chains with self-checks and redos, where response
  length is up to the policy; teacher prefixes are the teacher's own (cached) rollouts;
  1,000 held-out problems x k=8 under a 112-token budget."""
  c.data.task = "chain"
  c.data.teacher_source = "rollout_cached"
  c.data.max_prompt_len = 16
  c.data.max_response_len = 112
  c.curriculum.lengths = (40, 72, 112)
  c.eval.update(
    dict(
      datasets=("chain",),
      k=8,
      num_problems=1000,
      max_response_len=112,
      slots=128,
      kl_problems=256,
      temperature=1.0,
    )
  )
