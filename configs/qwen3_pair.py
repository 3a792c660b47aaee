"""A local real-model pair: Qwen3-1.7B teacher -> Qwen3-0.6B student from HF directories.

Both must be local Hugging Face directories (config.json, safetensors, tokenizer.json);
nothing is downloaded. Their vocabularies must match (checked before training).
Run on a TPU VM (see launch/run_tpu_vm.sh):
  python -m dkd_jax.launch --config=configs/qwen3_pair.py \
      --config.teacher.checkpoint=/ckpt/Qwen3-1.7B --config.student.checkpoint=/ckpt/Qwen3-0.6B \
      --config.data.path=/data/gsm8k_train.jsonl --workdir=gs://bucket/qwen3_opd

Presets name other pairs (teacher <- student sizes): `:8b_1.7b` (Qwen3-8B -> Qwen3-1.7B)
and `:32b_8b` (Qwen3-32B -> Qwen3-8B); their checkpoint paths end in the hub model's name,
so `python -m dkd_jax.aot --config=configs/qwen3_pair.py:32b_8b --topology=v5p-32` sizes
them from the public config.json shapes before any weights are on disk.
"""

import ml_collections as mlc

from configs import common

PAIRS = {"8b_1.7b": ("Qwen3-8B", "Qwen3-1.7B"), "32b_8b": ("Qwen3-32B", "Qwen3-8B")}


def get_config(arg: str = "") -> mlc.ConfigDict:
  chosen = common.presets(arg, extra=tuple(PAIRS))
  c = common.base(",".join(sorted(chosen - set(PAIRS))) or "default")
  teacher, student = "Qwen3-1.7B", "Qwen3-0.6B"
  for name in chosen & set(PAIRS):
    teacher, student = PAIRS[name]
  c.mesh = (1, -1, 4)  # fsdp over hosts, vocab/heads over 4 chips
  c.teacher.checkpoint = f"/path/to/{teacher}"
  c.student.checkpoint = f"/path/to/{student}"
  c.student.init = "checkpoint"
  for m in ("teacher", "student"):
    c[m].model.dtype = "bfloat16"
    c[m].model.remat = "dots_no_batch"
  c.data.task = "gsm8k"
  c.data.path = "/data/gsm8k_train.jsonl"
  c.data.max_prompt_len = 256
  c.data.max_response_len = 1024
  c.data.batch_size = 64
  c.objective.prefix = "student"
  c.objective.kl = "reverse"
  c.optim.lr = 1e-6
  c.train.kl_chunk = 1024
  c.eval.datasets = ("gsm8k", "math500")
  c.export.at_end = True  # WORKDIR/export/hf: a model to use elsewhere
  c.eval.max_response_len = 1024
  return c
