"""Turns an ml_collections experiment config into validated typed pieces.

Every bad value fails here, before anything is traced or compiled, with a message
naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses

import ml_collections as mlc

from dkd_jax.core import paths
from dkd_jax.evals import harness
from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import curriculum as curriculum_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import prefixes
from dkd_jax.objectives import routing
from dkd_jax.objectives import schedules
from dkd_jax.train import grpo

PREFIXES = prefixes.PREFIXES
KLS = kl_lib.KINDS
ESTIMATORS = kl_lib.ESTIMATORS
TEACHER_SOURCES = prefixes.TEACHER_SOURCES
TASKS = ("arithmetic", "chain", "gsm8k", "math", "aime", "amc")
READERS = ("tfds", "plain")
STUDENT_INITS = ("random", "warm_start", "teacher_layers", "checkpoint")
ALPHA_SCHEDULES = ("constant", "linear", "cosine", "entropy_adaptive")


def _one_of(field: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"config.{field}={value!r} is not allowed; choose one of {allowed}")


def _in_unit(field: str, value) -> None:
  if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
    raise ValueError(f"config.{field}={value!r} must be a number in [0, 1]")


def _positive(field: str, value, allow_zero=False) -> None:
  ok = value >= 0 if allow_zero else value > 0
  if not ok:
    raise ValueError(f"config.{field}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def model_config(d: mlc.ConfigDict | dict, field: str) -> model_lib.ModelConfig:
  """A validated ModelConfig from config.<field> (e.g. config.student.model), naming the
  full field on error."""
  d = dict(d.to_dict()) if hasattr(d, "to_dict") else dict(d)
  known = {f.name for f in dataclasses.fields(model_lib.ModelConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"config.{field}: unknown fields {unknown}; known: {sorted(known)}")
  if d.get("rope_scaling") is not None:
    d["rope_scaling"] = tuple(d["rope_scaling"])
  try:
    return model_lib.ModelConfig(**d).validate()
  except ValueError as e:
    raise ValueError(f"config.{field}: {e}") from None


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """config.data, typed: the task, where its records come from, the batch and lengths."""

  task: str  # one of TASKS
  path: str  # a local file (tasks other than the built-in ones)
  reader: str  # READERS: 'tfds' (prepared once into WORKDIR/tfds) or 'plain'
  teacher_source: str  # one of TEACHER_SOURCES
  batch_size: int
  max_prompt_len: int
  max_response_len: int
  truncate_prompts: bool


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """config.rollout, typed: how the loops sample their rollouts."""

  temperature: float  # >= 0 (0: greedy)
  top_p: float  # (0, 1]
  top_k: int  # >= 0 (0: off)
  sync_every: int  # decode steps per host sync

  def sampler(self) -> sampling.Sampler:
    return sampling.Sampler(self.temperature, self.top_p, self.top_k)


def _bool(field: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"config.{field}={value!r} must be True or False")


def data_settings(c: mlc.ConfigDict) -> DataSettings:
  """config.data as a validated DataSettings (every bad field named, with what is allowed)."""
  d = c.data
  _one_of("data.task", d.task, TASKS)
  _one_of("data.teacher_source", d.teacher_source, TEACHER_SOURCES)
  _one_of("data.reader", d.reader, READERS)
  for f in ("batch_size", "max_prompt_len", "max_response_len"):
    _positive(f"data.{f}", d[f])
  _bool("data.truncate_prompts", d.truncate_prompts)
  if d.task not in ("arithmetic", "chain") and not d.path:
    raise ValueError(
      f"config.data.path is empty but data.task={d.task!r} reads a local "
      "file; set --config.data.path=/path/to/file or use data.task='arithmetic'"
    )
  return DataSettings(
    task=d.task,
    path=d.path,
    reader=d.reader,
    teacher_source=d.teacher_source,
    batch_size=int(d.batch_size),
    max_prompt_len=int(d.max_prompt_len),
    max_response_len=int(d.max_response_len),
    truncate_prompts=d.truncate_prompts,
  )


def rollout_settings(c: mlc.ConfigDict) -> RolloutSettings:
  """config.rollout as a validated RolloutSettings."""
  r = c.rollout
  if not (isinstance(r.temperature, (int, float)) and r.temperature >= 0):
    raise ValueError(f"config.rollout.temperature={r.temperature!r} must be a number >= 0")
  if not (isinstance(r.top_p, (int, float)) and 0 < r.top_p <= 1):
    raise ValueError(f"config.rollout.top_p={r.top_p!r} must be in (0, 1]")
  _positive("rollout.top_k", r.top_k, allow_zero=True)
  _positive("rollout.sync_every", r.sync_every)
  return RolloutSettings(float(r.temperature), float(r.top_p), int(r.top_k), int(r.sync_every))


def eval_spec(c: mlc.ConfigDict) -> harness.EvalSpec:
  """config.eval (plus the prompt length, the KL chunk and the seed it uses) as the
  validated `harness.EvalSpec` the evaluation takes."""
  e = c.eval
  for f in ("k", "num_problems", "max_response_len"):
    _positive(f"eval.{f}", e[f])
  _positive("eval.kl_problems", e.kl_problems, allow_zero=True)
  _positive("eval.slots", e.slots, allow_zero=True)
  _positive("eval.temperature", e.temperature, allow_zero=True)
  _bool("eval.teacher", e.teacher)
  datasets = tuple(e.datasets)
  if not datasets or not all(isinstance(n, str) and n for n in datasets):
    raise ValueError(
      f"config.eval.datasets={datasets!r} must name at least one eval set: the task's "
      f"own ({TASKS}) or a shared benchmark file in config.eval.data_dir"
    )
  return harness.EvalSpec(
    datasets=datasets,
    k=int(e.k),
    num_problems=int(e.num_problems),
    kl_problems=int(e.kl_problems),
    temperature=float(e.temperature),
    max_response_len=int(e.max_response_len),
    max_prompt_len=int(c.data.max_prompt_len),
    slots=int(e.slots) or int(c.data.batch_size),
    kl_chunk=int(c.train.kl_chunk),
    seed=int(c.seed),
    data_dir=e.data_dir or None,
  )


def validate_objective(o: mlc.ConfigDict) -> None:
  _one_of("objective.prefix", o.prefix, PREFIXES)
  _one_of("objective.kl", o.kl, KLS)
  _one_of("objective.estimator", o.estimator, ESTIMATORS)
  _in_unit("objective.student_prefix_frac", o.student_prefix_frac)
  _in_unit("objective.alpha", o.alpha)
  _in_unit("objective.beta", o.beta)
  _positive("objective.temperature", o.temperature)
  _positive("objective.teacher_top_k", o.teacher_top_k, allow_zero=True)
  if o.estimator == "sampled_token" and o.kl not in ("reverse", "mixed"):
    raise ValueError(
      "config.objective.estimator='sampled_token' applies to the reverse part; "
      f"use objective.kl in ('reverse', 'mixed'), not {o.kl!r}"
    )
  s = o.alpha_schedule
  _one_of("objective.alpha_schedule.kind", s.kind, ALPHA_SCHEDULES)
  for f in ("alpha_end", "alpha_min", "alpha_max"):
    _in_unit(f"objective.alpha_schedule.{f}", s[f])


def alpha_can_change(c: mlc.ConfigDict) -> bool:
  """True when α moves during the run: a non-constant schedule or the curriculum's
  collapse response raising the forward weight."""
  cur = c.curriculum
  raises = cur.enabled and cur.on_collapse == "raise_forward" and cur.alpha_step > 0
  return raises or c.objective.alpha_schedule.kind != "constant"


def base_alpha(c: mlc.ConfigDict) -> float:
  """The forward weight α the objective starts from: 0 for reverse KL, 1 for forward
  KL, objective.alpha for mixed (DESIGN §6: a reverse run whose α is raised becomes a
  mixed run from α = 0)."""
  return {"reverse": 0.0, "forward": 1.0}.get(c.objective.kl, float(c.objective.alpha))


def _validate_alpha_use(c: mlc.ConfigDict) -> None:
  """α must change the loss wherever it is logged: refuse what would ignore it."""
  o, cur = c.objective, c.curriculum
  if o.alpha_schedule.kind != "constant" and o.kl != "mixed":
    raise ValueError(
      f"config.objective.alpha_schedule.kind={o.alpha_schedule.kind!r} moves "
      f"α, which config.objective.kl={o.kl!r} ignores; use "
      "objective.kl='mixed' (α is the forward weight) or kind='constant'"
    )
  if cur.enabled and cur.on_collapse == "raise_forward" and cur.alpha_step > 0 and o.kl == "jsd":
    raise ValueError(
      "config.curriculum.on_collapse='raise_forward' raises the forward-KL "
      "weight α, which config.objective.kl='jsd' has not; use "
      "on_collapse='hold' or objective.kl in ('forward', 'reverse', 'mixed')"
    )


def _validate_sampler(c: mlc.ConfigDict) -> None:
  """The sampled-token estimator assumes y ~ softmax(z/τ) with τ = objective.temperature:
  student rollouts drawn otherwise would bias it (DESIGN §3), so refuse them."""
  o, r = c.objective, c.rollout
  if o.estimator != "sampled_token" or o.prefix == "teacher":
    return
  if r.temperature != o.temperature or r.top_p < 1.0 or r.top_k > 0:
    raise ValueError(
      f"config.objective.estimator='sampled_token' on student prefixes needs rollouts "
      f"drawn from the loss distribution softmax(z/τ), τ=config.objective.temperature="
      f"{o.temperature}; got config.rollout.temperature={r.temperature}, "
      f"rollout.top_p={r.top_p}, rollout.top_k={r.top_k}. Set rollout.temperature="
      f"{o.temperature}, top_p=1.0, top_k=0, or use objective.estimator='full_vocab'"
    )


def _validate_cached_topk(c: mlc.ConfigDict) -> None:
  """cached_topk trains on dataset responses against the teacher's cached top-k."""
  o = c.objective
  if o.prefix != "teacher":
    raise ValueError(
      "config.data.teacher_source='cached_topk' needs objective.prefix="
      f"'teacher' (student prefixes need a live teacher), not {o.prefix!r}"
    )
  if o.teacher_top_k < 1:
    raise ValueError(
      "config.data.teacher_source='cached_topk' needs objective.teacher_top_k"
      f" >= 1 (how many teacher tokens to cache), not {o.teacher_top_k}"
    )
  cur = c.curriculum
  if cur.enabled and cur.reference == "teacher":
    raise ValueError(
      "config.data.teacher_source='cached_topk' trains without the teacher "
      "on device, so config.curriculum.reference='teacher' cannot measure "
      "its entropy; use curriculum.reference in ('student_start', 'absolute')"
    )
  if o.kl == "jsd" or o.estimator != "full_vocab":
    raise ValueError(
      "config.data.teacher_source='cached_topk' supports objective.kl in "
      "('forward', 'reverse', 'mixed') with estimator='full_vocab', not "
      f"kl={o.kl!r} estimator={o.estimator!r}"
    )


def _validate_warm_start(c: mlc.ConfigDict) -> None:
  """student.init='warm_start': SFT on a split of the task's own problem stream (built-in
  tasks) or on the last problems of its file (`tasks.file_split`)."""
  w = c.student.get("warm_start")
  if w is None:
    raise ValueError(
      "config.student.init='warm_start' needs config.student.warm_start "
      "(steps, lr, batch_size, num_problems; see configs/common.py)"
    )
  for f in ("steps", "batch_size", "num_problems"):
    v = w.get(f)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ValueError(f"config.student.warm_start.{f}={v!r} must be an int > 0")
  lr = w.get("lr")
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise ValueError(f"config.student.warm_start.lr={lr!r} must be a number > 0")
  if w.num_problems < w.batch_size:
    raise ValueError(
      f"config.student.warm_start.num_problems={w.num_problems} cannot fill one batch of "
      f"student.warm_start.batch_size={w.batch_size}"
    )


def length_bucket(c: mlc.ConfigDict) -> int:
  """config.train.length_bucket; runs saved before it existed padded every row (0)."""
  return c.train.get("length_bucket", 0)


def validate(c: mlc.ConfigDict) -> None:
  """Raises ValueError naming the first bad field. Call before any compile."""
  validate_objective(c.objective)
  _validate_alpha_use(c)
  _validate_sampler(c)
  data_settings(c)
  rollout_settings(c)
  eval_spec(c)
  _one_of("student.init", c.student.init, STUDENT_INITS)
  if c.student.init == "warm_start":
    _validate_warm_start(c)
  if (
    c.data.teacher_source in ("dataset", "cached_topk")
    and c.objective.prefix != "student"
    and c.data.task in ("aime", "amc")
  ):
    raise ValueError(
      f"config.data.teacher_source='dataset' needs worked solutions, which "
      f"data.task={c.data.task!r} lacks; use 'rollout' or 'rollout_cached'"
    )
  if c.data.teacher_source == "cached_topk":
    _validate_cached_topk(c)
  for f in ("steps", "log_every", "ckpt_every", "kl_chunk"):
    _positive(f"train.{f}", c.train[f])
  _positive("train.length_bucket", length_bucket(c), allow_zero=True)
  for f in ("lr", "clip_norm"):
    _positive(f"optim.{f}", c.optim[f])
  # Runs saved before export existed have no `export` section; they never export at end.
  if "export" in c and not isinstance(c.export.at_end, bool):
    raise ValueError(f"config.export.at_end={c.export.at_end!r} must be True or False")
  if len(tuple(c.mesh)) != 3:
    raise ValueError(f"config.mesh={tuple(c.mesh)} must be (data, fsdp, tensor)")
  student = model_config(c.student.model, "student.model")
  teacher = model_config(c.teacher.model, "teacher.model")
  if cross_tokenizer(c):
    _validate_cross_tokenizer(c, student)
  elif (
    not c.teacher.checkpoint
    and not c.student.checkpoint
    and student.vocab_size != teacher.vocab_size
  ):
    raise ValueError(
      f"teacher/student vocabulary mismatch: config.teacher.model.vocab_size="
      f"{teacher.vocab_size} vs config.student.model.vocab_size="
      f"{student.vocab_size}; distillation needs one shared vocabulary"
    )
  _validate_extra_teachers(c, student)
  curriculum_config(c, student.vocab_size)
  if c.curriculum.enabled and max(c.curriculum.lengths) > c.data.max_response_len:
    raise ValueError(
      f"config.curriculum.lengths={tuple(c.curriculum.lengths)} exceeds "
      f"config.data.max_response_len={c.data.max_response_len}"
    )
  _validate_horizon_and_curve(c)
  alpha_schedule(c)
  kl_spec(c)
  if "rl" in c:
    validate_rl(c)


def cross_tokenizer(c: mlc.ConfigDict) -> bool:
  """True when the student has its own tokenizer (config.student.tokenizer set)."""
  return bool(c.student.get("tokenizer", ""))


def bpe_size(spec: str) -> int | None:
  """N of a 'bpe:N' student tokenizer, None for a path."""
  if not spec.startswith("bpe:"):
    return None
  n = spec[4:]
  if not n.isdigit() or int(n) < 32:
    raise ValueError(
      f"config.student.tokenizer={spec!r}: 'bpe:N' needs an integer N >= 32 (the vocabulary "
      "size to train on the task's text)"
    )
  return int(n)


XTOK_KLS = ("forward", "reverse", "mixed")


def _validate_extra_teachers(c: mlc.ConfigDict, student: model_lib.ModelConfig) -> None:
  """config.extra_teachers and config.routing (multi-teacher runs)."""
  extra = c.get("extra_teachers", None) or {}
  for name in sorted(extra):
    t = extra[name]
    unknown = sorted(set(t) - set(c.teacher))
    if unknown:
      raise ValueError(
        f"config.extra_teachers.{name}: unknown fields {unknown}; known: {sorted(c.teacher)}"
      )
    m = model_config(t.get("model", c.teacher.model), f"extra_teachers.{name}.model")
    if not t.get("checkpoint") and not cross_tokenizer(c) and m.vocab_size != student.vocab_size:
      raise ValueError(
        f"config.extra_teachers.{name}.model.vocab_size={m.vocab_size} differs from the "
        f"student's {student.vocab_size}; one tokenizer needs one vocabulary"
      )
  if extra and c.data.teacher_source == "cached_topk":
    raise ValueError(
      "config.extra_teachers needs live teachers; config.data.teacher_source='cached_topk' "
      f"caches one; choose one of {tuple(t for t in TEACHER_SOURCES if t != 'cached_topk')}"
    )
  r = c.get("routing", None)
  if r is not None:
    routing.check(r.kind, 1 + len(extra), tuple(r.weights), tuple(r.sources))


def _validate_cross_tokenizer(c: mlc.ConfigDict, student: model_lib.ModelConfig) -> None:
  """A student with its own tokenizer (BUILD_NOTES: cross-tokenizer): what the chunk
  estimator, the mapped forward term and sequence-level KD can and cannot express."""
  o, x = c.objective, c.objective.xtok
  n = bpe_size(c.student.tokenizer)
  if n is None and not paths.as_path(c.student.tokenizer).exists():
    raise ValueError(
      f"config.student.tokenizer={c.student.tokenizer!r} is neither 'bpe:N' (train one on "
      "the task's text) nor an existing HF tokenizer directory / tokenizer.json"
    )
  if n is not None and not c.student.checkpoint and student.vocab_size < n:
    raise ValueError(
      f"config.student.model.vocab_size={student.vocab_size} is smaller than the student "
      f"tokenizer's {n} tokens (config.student.tokenizer={c.student.tokenizer!r})"
    )
  if c.student.init == "teacher_layers":
    raise ValueError(
      "config.student.init='teacher_layers' copies the teacher's embedding, which another "
      "tokenizer cannot use; with config.student.tokenizer choose one of "
      f"{('random', 'warm_start', 'checkpoint')}"
    )
  _one_of("objective.kl (with config.student.tokenizer)", o.kl, XTOK_KLS)
  if o.kl != "forward" and o.estimator != "sampled_token":
    raise ValueError(
      "config.objective.estimator must be 'sampled_token' with config.student.tokenizer: "
      "across tokenizers the reverse part is the chunk-level sampled estimator (there is no "
      "shared vocabulary to sum over)"
    )
  if o.teacher_top_k:
    raise ValueError("config.objective.teacher_top_k must be 0 with config.student.tokenizer")
  if o.prefix != "student":
    _one_of(
      "data.teacher_source (with config.student.tokenizer)",
      c.data.teacher_source,
      tuple(t for t in TEACHER_SOURCES if t != "cached_topk"),
    )
    if o.kl == "reverse":
      raise ValueError(
        "config.objective.kl='reverse' on teacher prefixes has no cross-tokenizer signal; "
        "with config.student.tokenizer use kl in ('forward', 'mixed') or prefix='student'"
      )
  if c.curriculum.enabled and c.curriculum.reference == "teacher":
    raise ValueError(
      "config.curriculum.reference='teacher' measures the teacher's rollouts in the "
      "student's tokens; with config.student.tokenizer use one of ('student_start', 'absolute')"
    )
  _bool("objective.xtok.token_level", x.token_level)
  credit = x.get("credit", 0)
  if isinstance(credit, bool) or not isinstance(credit, int) or credit < -1:
    raise ValueError(
      f"config.objective.xtok.credit={credit!r} must be an int >= -1 (0: each chunk's own "
      "log ratio; k > 0: plus the next k chunks'; -1: the whole rest of the row)"
    )
  _positive("objective.xtok.uld_weight", x.uld_weight, allow_zero=True)
  _positive("objective.xtok.teacher_len", x.teacher_len, allow_zero=True)


def horizon(c: mlc.ConfigDict) -> int:
  """The response length trained on without the curriculum (config.train.horizon; 0 =
  data.max_response_len): the cap on rollouts and on the loss mask (DESIGN §6)."""
  return int(c.train.get("horizon", 0) or c.data.max_response_len)


def _validate_horizon_and_curve(c: mlc.ConfigDict) -> None:
  h = c.train.get("horizon", 0)
  if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= c.data.max_response_len:
    raise ValueError(
      f"config.train.horizon={h!r} must be an int in [0, data.max_response_len="
      f"{c.data.max_response_len}] (0 = data.max_response_len)"
    )
  if c.curriculum.enabled and max(c.curriculum.lengths) > horizon(c):
    raise ValueError(
      f"config.curriculum.lengths={tuple(c.curriculum.lengths)} exceeds the horizon "
      f"config.train.horizon={horizon(c)}: the last stage is the long horizon"
    )
  steps = tuple(c.eval.get("at_steps", ()))
  bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or s < 0]
  if bad or any(s > c.train.steps for s in steps):
    raise ValueError(
      f"config.eval.at_steps={steps} must be ints in [0, train.steps={c.train.steps}]"
    )
  _positive("eval.curve_problems", c.eval.get("curve_problems", 0), allow_zero=True)


def validate_rl(c: mlc.ConfigDict) -> None:
  """The GRPO block (configs/grpo.py); same rules: name the field, list what is allowed."""
  r = c.rl
  _one_of("rl.advantage", r.advantage, grpo.ADVANTAGES)
  _one_of("rl.kl_ref", r.kl_ref, grpo.KL_REFS)
  _one_of("rl.behavior_logp", r.behavior_logp, grpo.BEHAVIOR_LOGPS)
  _one_of("rl.dynamic_sampling", r.get("dynamic_sampling", "off"), grpo.DYNAMIC_SAMPLING)
  _positive("rl.max_draws", r.get("max_draws", 1))
  if not 0 <= r.get("min_informative", 0) <= r.prompts_per_batch:
    raise ValueError(
      f"config.rl.min_informative={r.min_informative!r} must be in [0, rl.prompts_per_batch="
      f"{r.prompts_per_batch}] (0 = prompts_per_batch)"
    )
  for f in ("prompts_per_batch", "updates_per_batch", "eval_every"):
    _positive(f"rl.{f}", r[f])
  for f in ("max_response_len", "eval_problems", "eval_k"):
    _positive(f"rl.{f}", r[f], allow_zero=True)
  _positive("rl.adv_eps", r.adv_eps)
  if r.group_size < 2:
    raise ValueError(
      f"config.rl.group_size={r.group_size!r} must be >= 2: advantages are "
      "relative to the other samples of the same prompt"
    )
  if c.rollout.top_p != 1.0 or c.rollout.top_k != 0:
    raise ValueError(
      f"config.rollout.top_p={c.rollout.top_p} / top_k={c.rollout.top_k}: "
      "GRPO's ratio needs the full-support policy softmax(logits / "
      "temperature); set rollout.top_p=1.0 and rollout.top_k=0"
    )
  rl_spec(c)


def rl_spec(c: mlc.ConfigDict) -> grpo.GRPOSpec:
  r = c.rl
  return grpo.GRPOSpec(
    eps_low=r.eps_low,
    eps_high=r.eps_high,
    aggregation=r.aggregation,
    kl_coef=r.kl_coef,
    kl_estimator=r.kl_estimator,
    temperature=c.rollout.temperature,
    chunk=c.train.kl_chunk,
  ).validate()


def kl_spec(c: mlc.ConfigDict) -> kl_lib.KLSpec:
  """The step's static KLSpec. A reverse run whose α can rise is run as 'mixed' from
  α = 0 (the same loss until α moves; without this the raise would be a silent no-op)."""
  o = c.objective
  kind = "mixed" if o.kl == "reverse" and alpha_can_change(c) else o.kl
  spec = kl_lib.KLSpec(
    kind=kind,
    alpha=base_alpha(c),
    beta=o.beta,
    temperature=o.temperature,
    estimator=o.estimator,
    teacher_top_k=o.teacher_top_k,
    chunk=c.train.kl_chunk,
  )
  spec.validate()
  return spec


def alpha_schedule(c: mlc.ConfigDict) -> schedules.AlphaSchedule:
  s = c.objective.alpha_schedule
  sched = schedules.AlphaSchedule(
    kind=s.kind,
    alpha=base_alpha(c),
    alpha_end=s.alpha_end,
    steps=c.train.steps,
    target_entropy=s.target_entropy,
    rate=s.rate,
    alpha_min=s.alpha_min,
    alpha_max=s.alpha_max,
  )
  sched.validate()
  return sched


def curriculum_config(c: mlc.ConfigDict, vocab_size: int) -> curriculum_lib.CurriculumConfig:
  cur = c.curriculum
  cfg = curriculum_lib.CurriculumConfig(
    lengths=tuple(cur.lengths),
    check_every=cur.check_every,
    window=cur.window,
    min_steps=cur.min_steps,
    gate_entropy=cur.gate_entropy,
    floor_entropy=cur.floor_entropy,
    max_truncation=cur.max_truncation,
    stage_max_truncation=tuple(cur.get("stage_max_truncation", ())),
    on_collapse=cur.on_collapse,
    alpha_step=cur.alpha_step,
    alpha_max=cur.alpha_max,
    enabled=cur.enabled,
    reference=cur.reference,
  )
  cfg.validate(vocab_size)
  return cfg
