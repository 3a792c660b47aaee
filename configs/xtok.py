"""Cross-tokenizer distillation on the chain task: a student with its own BPE vocabulary
(trained on the task's text) learns from the character-level teacher.

Run: python -m dkd_jax.launch --config=configs/xtok.py:tiny --workdir=/tmp/xtok
Presets (comma-separated with tiny): default on-policy reverse KL (the chunk-level
sampled estimator); `mixed` adds the mapped forward term with α = 0.5; `teacher` trains on
the teacher's text retokenised (sequence-level KD) plus, with `token_level`, the mapped
forward term at chunk starts; `two` adds a second character-level teacher (another
bootstrap seed, a smaller model) and routes each problem to one of the two by its index
(routing.kind='modulo'; 'weights' mixes both losses instead).
"""

import ml_collections as mlc

from configs import common

EXTRA = ("teacher", "mixed", "token_level", "two")
BPE_VOCAB = 96


def get_config(arg: str = "") -> mlc.ConfigDict:
  arg = ",".join(["chain"] + [a for a in (arg or "").split(",") if a.strip()])
  presets = common.presets(arg, EXTRA)
  c = common.base(arg, EXTRA)
  c.student.tokenizer = f"bpe:{BPE_VOCAB}"
  c.student.model.vocab_size = BPE_VOCAB
  c.objective.estimator = "sampled_token"
  if "teacher" in presets:
    c.objective.prefix = "teacher"
    c.objective.kl = "forward"
    c.objective.estimator = "full_vocab"
    c.data.teacher_source = "dataset"  # the teacher's text, retokenised for the student
  else:
    c.objective.prefix = "student"
    c.objective.kl = "reverse"
  if "mixed" in presets:
    c.objective.kl = "mixed"
    c.objective.estimator = "sampled_token"
    c.objective.alpha = 0.5
  c.objective.xtok.token_level = "token_level" in presets
  if "two" in presets:
    second = mlc.ConfigDict(c.teacher.to_dict())
    second.bootstrap_seed = 1
    second.model = common.tiny_model(d_model=48, n_layers=2)
    c.extra_teachers.second = second
    c.routing.kind = "modulo"
  return c
