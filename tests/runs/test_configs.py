"""Every config file builds and validates; bad values fail naming the field."""

import dataclasses
import glob
import importlib.util
import os

import ml_collections as mlc
import pytest

from dkd_jax.runs import configuration

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = sorted(
  p
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if not os.path.basename(p).startswith(("_", "common"))
)


def load(path, arg=""):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", ["", "tiny"])
def test_every_config_builds_and_validates(path, arg):
  c = load(path, arg)
  configuration.validate(c)
  assert c.objective.prefix in configuration.PREFIXES


def test_quadrants_set_both_axes():
  seen = {}
  for name in ("fwd_teacher", "fwd_student", "rev_teacher", "rev_student"):
    c = load(os.path.join(ROOT, "configs", f"{name}.py"), "tiny")
    seen[name] = (c.objective.prefix, c.objective.kl)
  assert seen == {
    "fwd_teacher": ("teacher", "forward"),
    "fwd_student": ("student", "forward"),
    "rev_teacher": ("teacher", "reverse"),
    "rev_student": ("student", "reverse"),
  }


BAD = [
  ("objective.prefix", "teachr", "objective.prefix"),
  ("objective.kl", "kl", "objective.kl"),
  ("objective.estimator", "mc", "objective.estimator"),
  ("objective.alpha", 1.5, "objective.alpha"),
  ("objective.student_prefix_frac", -0.1, "objective.student_prefix_frac"),
  ("objective.beta", 2.0, "objective.beta"),
  ("objective.temperature", 0.0, "objective.temperature"),
  ("data.task", "imagenet", "data.task"),
  ("data.teacher_source", "web", "data.teacher_source"),
  ("rollout.top_p", 0.0, "rollout.top_p"),
  ("rollout.temperature", -1.0, "rollout.temperature"),
  ("student.model.arch", "gpt2", "arch"),
  ("objective.alpha_schedule.kind", "step", "alpha_schedule.kind"),
  ("train.horizon", 10_000, "train.horizon"),
  ("train.horizon", -1, "train.horizon"),
  ("eval.at_steps", (0, 10_000), "eval.at_steps"),
  ("eval.at_steps", (-1,), "eval.at_steps"),
  ("eval.curve_problems", -5, "eval.curve_problems"),
  ("curriculum.stage_max_truncation", (0.5, 0.5, 0.5), "stage_max_truncation"),
]


# The typed settings at the boundary: each builder names the field and what it allows
# (a bool field given another type is already refused by the locked ConfigDict).
BAD_SETTINGS = [
  ("data_settings", "data.reader", "csv", r"config\.data\.reader='csv'.*\('tfds', 'plain'\)"),
  ("data_settings", "data.batch_size", 0, r"config\.data\.batch_size=0 must be > 0"),
  ("rollout_settings", "rollout.top_k", -1, r"config\.rollout\.top_k=-1 must be >= 0"),
  ("rollout_settings", "rollout.sync_every", 0, r"config\.rollout\.sync_every=0"),
  ("eval_spec", "eval.k", 0, r"config\.eval\.k=0 must be > 0"),
  ("eval_spec", "eval.slots", -2, r"config\.eval\.slots=-2 must be >= 0"),
  ("eval_spec", "eval.datasets", (), r"config\.eval\.datasets=\(\) must name"),
]


@pytest.mark.parametrize(
  "builder,field,value,needle", BAD_SETTINGS, ids=[b[1] for b in BAD_SETTINGS]
)
def test_bad_setting_names_field_and_allowed_values(builder, field, value, needle):
  c = load(os.path.join(ROOT, "configs", "rev_teacher.py"), "tiny")
  section, leaf = field.split(".")
  c[section][leaf] = value
  for fn in (getattr(configuration, builder), configuration.validate):
    with pytest.raises(ValueError, match=needle):
      fn(c)


def test_settings_are_typed_and_frozen():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  data, rollout = configuration.data_settings(c), configuration.rollout_settings(c)
  spec = configuration.eval_spec(c)
  assert (data.batch_size, spec.slots) == (c.data.batch_size, c.data.batch_size)  # slots=0
  assert spec.datasets == tuple(c.eval.datasets) and spec.max_prompt_len == data.max_prompt_len
  assert rollout.sampler().temperature == c.rollout.temperature
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.k = 3


@pytest.mark.parametrize("field,value,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_value_names_field(field, value, needle):
  c = load(os.path.join(ROOT, "configs", "rev_teacher.py"), "tiny")
  node = c
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
    configuration.validate(c)


def test_curriculum_lengths_must_increase():
  c = load(os.path.join(ROOT, "configs", "curriculum.py"), "tiny")
  c.curriculum.lengths = (64, 32)
  with pytest.raises(ValueError, match="lengths"):
    configuration.validate(c)


def test_vocab_mismatch_refused():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  c.student.model.vocab_size = 40
  with pytest.raises(ValueError, match="vocabulary mismatch"):
    configuration.validate(c)


def test_math_task_needs_path():
  c = load(os.path.join(ROOT, "configs", "fwd_teacher.py"), "tiny")
  c.data.task = "gsm8k"
  with pytest.raises(ValueError, match="data.path"):
    configuration.validate(c)


def test_alpha_schedule_on_a_non_mixed_kl_is_refused():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  c.objective.alpha_schedule.kind = "cosine"
  with pytest.raises(ValueError, match=r"alpha_schedule\.kind.*objective\.kl='reverse'"):
    configuration.validate(c)


def test_reverse_run_with_alpha_raise_runs_as_mixed_from_zero():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  assert configuration.kl_spec(c).kind == "reverse"
  c.curriculum.enabled = True
  spec = configuration.kl_spec(c)
  assert spec.kind == "mixed" and spec.alpha == 0.0
  assert configuration.alpha_schedule(c).alpha == 0.0


def test_jsd_with_alpha_raise_is_refused():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  c.objective.kl, c.curriculum.enabled = "jsd", True
  with pytest.raises(ValueError, match="on_collapse"):
    configuration.validate(c)


@pytest.mark.parametrize("field,value", [("temperature", 2.0), ("top_p", 0.9), ("top_k", 5)])
def test_sampled_token_with_a_different_rollout_sampler_is_refused(field, value):
  """y must be drawn from softmax(z/τ) with the loss's τ: a mismatch biases the estimator."""
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  c.objective.estimator = "sampled_token"
  configuration.validate(c)
  c.rollout[field] = value
  with pytest.raises(ValueError, match=f"rollout\\.{field}"):
    configuration.validate(c)


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"tinny.*'tiny'"):
    load(os.path.join(ROOT, "configs", "rev_student.py"), "tinny")


EMBEDDED = [p for p in CONFIGS if load(p, "tiny").data.task == "arithmetic"]


@pytest.mark.parametrize("path", EMBEDDED, ids=os.path.basename)
def test_every_embedded_config_builds_on_the_chain_task(path):
  c = load(path, "chain,tiny")
  configuration.validate(c)
  assert c.data.task == "chain"


def test_real_model_configs_export_at_end():
  on = {
    n: load(os.path.join(ROOT, "configs", f"{n}.py"), "").export.at_end
    for n in ("smollm2_self", "qwen3_pair", "rev_student", "fwd_teacher")
  }
  assert on == {
    "smollm2_self": True,
    "qwen3_pair": True,
    "rev_student": False,
    "fwd_teacher": False,
  }
  bad = load(os.path.join(ROOT, "configs", "rev_student.py"), "tiny")
  bad = mlc.ConfigDict(dict(bad.to_dict(), export={"at_end": "yes"}))  # as a JSON load gives
  with pytest.raises(ValueError, match=r"config\.export\.at_end"):
    configuration.validate(bad)


def test_horizon_is_the_training_cap_and_distinct_from_steps():
  c = load(os.path.join(ROOT, "configs", "rev_student.py"), "chain")
  assert configuration.horizon(c) == c.data.max_response_len  # 0 = the data's window
  c.train.horizon = 48
  configuration.validate(c)
  assert configuration.horizon(c) == 48 and c.train.steps != 48
  c.curriculum.enabled = True
  c.curriculum.lengths = (40, 72)  # the last stage is the long horizon: at most 48 here
  with pytest.raises(ValueError, match="exceeds the horizon"):
    configuration.validate(c)
