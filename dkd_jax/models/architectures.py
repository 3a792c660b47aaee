"""Hugging Face config.json <-> ModelConfig: the architecture names we load (Llama,
Qwen2, Qwen3), RoPE settings in transformers 4 and 5 spellings, and a refusal of every
feature our decoder lacks (so such a checkpoint fails here instead of loading into a
different model)."""

from __future__ import annotations

import dataclasses

from dkd_jax.models.decoder import ModelConfig

ARCHITECTURES = {
  "LlamaForCausalLM": "llama",
  "Qwen2ForCausalLM": "qwen2",
  "Qwen3ForCausalLM": "qwen3",
}
_HF_CLASS = {v: k for k, v in ARCHITECTURES.items()}


def _rope(c: dict) -> tuple[float, tuple | None]:
  """(theta, llama3 scaling tuple or None) from a v4 (rope_theta/rope_scaling) or
  v5 (rope_parameters) config."""
  rp = c.get("rope_parameters") or c.get("rope_scaling") or {}
  theta = float(c.get("rope_theta", rp.get("rope_theta", 10000.0)))
  kind = rp.get("rope_type", rp.get("type", "default"))
  if kind == "default":
    return theta, None
  if kind == "llama3":
    return theta, (
      float(rp["factor"]),
      float(rp["low_freq_factor"]),
      float(rp["high_freq_factor"]),
      int(rp["original_max_position_embeddings"]),
    )
  raise ValueError(f"rope type {kind!r} is not supported; supported: default, llama3")


def _arch(c: dict) -> str:
  names = c.get("architectures") or []
  for name in names:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  if not names and c.get("model_type") in _HF_CLASS:
    return c["model_type"]
  raise ValueError(
    f"unsupported architecture {names or c.get('model_type')!r}; supported: {sorted(ARCHITECTURES)}"
  )


def _refuse_unsupported(c: dict, arch: str) -> None:
  """Features our decoder lacks must fail here, not load into a different model."""
  if c.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act={c['hidden_act']!r} unsupported (only silu)")
  if c.get("mlp_bias"):
    raise ValueError("mlp_bias=true unsupported")
  if arch != "qwen2" and c.get("attention_bias"):
    raise ValueError(f"attention_bias=true unsupported for {arch} (only qwen2 has q/k/v biases)")
  if c.get("use_sliding_window") or any(t != "full_attention" for t in c.get("layer_types") or ()):
    raise ValueError(
      "sliding-window attention (use_sliding_window / layer_types) unsupported; "
      "our decoder has full attention only"
    )


def config_from_hf(config_json: dict, **overrides) -> ModelConfig:
  """A HF config.json dict -> ModelConfig (missing optional keys take HF's defaults)."""
  c = config_json
  arch = _arch(c)
  _refuse_unsupported(c, arch)
  try:
    d_model, n_heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    theta, scaling = _rope(c)
    cfg = ModelConfig(
      arch=arch,
      vocab_size=int(c["vocab_size"]),
      d_model=d_model,
      d_ff=int(c["intermediate_size"]),
      n_layers=int(c["num_hidden_layers"]),
      n_heads=n_heads,
      n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
      head_dim=int(c.get("head_dim") or d_model // n_heads),
      rope_theta=theta,
      rope_scaling=scaling,
      norm_eps=float(c.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(c.get("tie_word_embeddings", False)),
      max_seq_len=int(c.get("max_position_embeddings", 2048)),
    )
  except KeyError as e:
    raise ValueError(f"config.json lacks required key {e.args[0]!r}") from None
  return dataclasses.replace(cfg, **overrides).validate()


def config_to_hf(cfg: ModelConfig) -> dict:
  """ModelConfig -> a config.json dict (legacy rope keys: read by transformers 4 and 5)."""
  c = {
    "architectures": [_HF_CLASS[cfg.arch]],
    "model_type": cfg.arch,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "intermediate_size": cfg.d_ff,
    "num_hidden_layers": cfg.n_layers,
    "num_attention_heads": cfg.n_heads,
    "num_key_value_heads": cfg.n_kv_heads,
    "head_dim": cfg.head_dim,
    "hidden_act": "silu",
    "rms_norm_eps": cfg.norm_eps,
    "rope_theta": cfg.rope_theta,
    "tie_word_embeddings": cfg.tie_embeddings,
    "max_position_embeddings": cfg.max_seq_len,
    "torch_dtype": "float32",
    "use_cache": True,
  }
  if cfg.arch != "qwen2":
    c.update(attention_bias=False, mlp_bias=False)
  else:
    c.update(use_sliding_window=False)
  if cfg.rope_scaling is not None:
    factor, low, high, orig = cfg.rope_scaling
    c["rope_scaling"] = {
      "rope_type": "llama3",
      "factor": factor,
      "low_freq_factor": low,
      "high_freq_factor": high,
      "original_max_position_embeddings": orig,
    }
  return c
