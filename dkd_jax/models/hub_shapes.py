"""Shapes of public checkpoints without their files: the config.json fields of the
Qwen3 dense models, as published on the Hugging Face Hub (Qwen/Qwen3-0.6B, -1.7B, -4B,
-8B, -14B, -32B, config.json at their release, transformers 4.51).

What the AOT compile check (`python -m dkd_jax.aot`) needs to size a run before any
weights are downloaded: `model_config("Qwen/Qwen3-8B")` or a path whose last component
names one (`/ckpt/Qwen3-8B`) gives the ModelConfig `hf.read_config` would read from
that checkpoint's own config.json.
"""

from __future__ import annotations

import os

from dkd_jax.models import architectures
from dkd_jax.models.decoder import ModelConfig

_QWEN3_COMMON = dict(
  architectures=["Qwen3ForCausalLM"],
  model_type="qwen3",
  attention_bias=False,
  head_dim=128,
  hidden_act="silu",
  max_position_embeddings=40960,
  num_key_value_heads=8,
  rms_norm_eps=1e-6,
  rope_scaling=None,
  rope_theta=1000000,
  use_sliding_window=False,
  vocab_size=151936,
)


def _qwen3(hidden, inter, layers, heads, tie) -> dict:
  return dict(
    _QWEN3_COMMON,
    hidden_size=hidden,
    intermediate_size=inter,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    tie_word_embeddings=tie,
  )


CONFIGS: dict[str, dict] = {
  "Qwen/Qwen3-0.6B": _qwen3(1024, 3072, 28, 16, True),
  "Qwen/Qwen3-1.7B": _qwen3(2048, 6144, 28, 16, True),
  "Qwen/Qwen3-4B": _qwen3(2560, 9728, 36, 32, True),
  "Qwen/Qwen3-8B": _qwen3(4096, 12288, 36, 32, False),
  "Qwen/Qwen3-14B": _qwen3(5120, 17408, 40, 40, False),
  "Qwen/Qwen3-32B": _qwen3(5120, 25600, 64, 64, False),
}
_BY_NAME = {k.split("/")[-1].lower(): k for k in CONFIGS}


def hub_name(path: str) -> str | None:
  """The known hub name `path` refers to ('Qwen/Qwen3-8B', '/ckpt/Qwen3-8B', 'qwen3-8b'),
  or None."""
  if path in CONFIGS:
    return path
  return _BY_NAME.get(os.path.basename(os.path.normpath(path)).lower())


def model_config(path: str, **overrides) -> ModelConfig:
  """The ModelConfig of a known public checkpoint named by `path`."""
  name = hub_name(path)
  if name is None:
    raise KeyError(f"{path!r} names no known public checkpoint; known: {sorted(CONFIGS)}")
  return architectures.config_from_hf(CONFIGS[name], **overrides)
