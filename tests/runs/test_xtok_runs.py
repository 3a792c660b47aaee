"""Cross-tokenizer and multi-teacher runs end to end on the chain task (tiny sizes): a BPE
student learns from the character-level teacher, and two teachers share one run."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from dkd_jax.models import tokenizer as tok_lib
from dkd_jax.runs import configuration
from dkd_jax.runs import distill_loop as run_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAST = {
  "teacher.bootstrap_steps": 30,
  "eval.num_problems": 4,
  "eval.k": 2,
  "eval.teacher": False,
  "data.chain.num_train": 500,
  "optim.warmup_steps": 5,
}


def config(arg, **overrides):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", "xtok.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  for key, value in {**FAST, **overrides}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _rows(work):
  with open(os.path.join(work, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "loss" in r]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """The bootstrapped character teacher, made once (the run caches it in its workdir)."""
  work = str(tmp_path_factory.mktemp("xtok_teacher"))
  run_lib.run(config("tiny", **{"train.steps": 1}), work)
  return os.path.join(work, "teacher")


def _work(tmp_path, teacher_dir):
  work = str(tmp_path / "run")
  shutil.copytree(teacher_dir, os.path.join(work, "teacher"))
  return work


def test_bpe_student_learns_from_the_char_teacher_on_policy(tmp_path, teacher_dir):
  """Student prefixes, chunk-level sampled reverse KL: loss finite and falling."""
  work = _work(tmp_path, teacher_dir)
  summary = run_lib.run(config("tiny", **{"train.steps": 40, "export.at_end": True}), work)
  rows = _rows(work)
  loss = np.array([r["loss"] for r in rows])
  assert len(loss) == 40 and np.isfinite(loss).all()
  assert loss[-10:].mean() < 0.85 * loss[:10].mean(), loss
  assert os.path.exists(os.path.join(work, "student_tokenizer", "tokenizer.json"))
  assert summary["eval"]["chain"]["k"] == 2
  assert np.isnan(summary["eval"]["chain"]["fkl"])  # no token KL across tokenizers
  assert all(r["chunks_per_token"] > 0 for r in rows)
  # the export carries the student's own tokenizer, which transformers loads
  from transformers import AutoTokenizer

  hf_tok = AutoTokenizer.from_pretrained(os.path.join(work, "export", "hf"))
  own = tok_lib.HFTokenizer(os.path.join(work, "student_tokenizer"))
  text = "3*4=12\n#### 12"
  assert hf_tok(text, add_special_tokens=False)["input_ids"] == own.encode(text)


@pytest.mark.parametrize("arg", ["tiny,mixed", "tiny,teacher,token_level"])
def test_mixed_and_teacher_prefix_presets_run(arg, tmp_path, teacher_dir):
  work = _work(tmp_path, teacher_dir)
  run_lib.run(config(arg, **{"train.steps": 3}), work)
  rows = _rows(work)
  assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
  assert all(r["fkl"] > 0 for r in rows)  # the mapped forward term is on


def test_two_teachers_run_end_to_end(tmp_path, teacher_dir):
  work = _work(tmp_path, teacher_dir)
  run_lib.run(config("tiny,two", **{"train.steps": 4}), work)
  rows = _rows(work)
  assert len(rows) == 4
  for r in rows:
    assert np.isfinite([r["loss"], r["loss_teacher0"], r["loss_teacher1"]]).all()
  assert os.path.exists(os.path.join(work, "teachers", "second", "teacher", "teacher_meta.json"))


@pytest.mark.parametrize(
  "overrides,match",
  [
    ({"student.tokenizer": "bpe:x"}, "'bpe:N' needs an integer"),
    ({"student.tokenizer": "/no/such/dir"}, "neither 'bpe:N'"),
    ({"objective.estimator": "full_vocab"}, "estimator must be 'sampled_token'"),
    (
      {"objective.kl": "jsd", "objective.estimator": "full_vocab"},
      r"objective.kl \(with config.student.tokenizer\)='jsd'",
    ),
    ({"student.init": "teacher_layers"}, "choose one of"),
    ({"student.model.vocab_size": 64}, "smaller than the student tokenizer's 96"),
    ({"routing.weights": (0.5, 0.6)}, "summing to 1"),
    ({"routing.kind": "random"}, r"config.routing.kind='random' is not allowed"),
    ({"curriculum.enabled": True}, "curriculum.reference='teacher'"),
  ],
)
def test_bad_cross_tokenizer_configs_fail_before_compiling(overrides, match):
  c = config("tiny", **overrides)
  with pytest.raises(ValueError, match=match):
    configuration.validate(c)
