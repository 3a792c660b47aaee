"""A trained decoder and its run's tokenizer as files other stacks load.

`write_hf_model`: a Hugging Face directory (config.json for the architecture,
model.safetensors, the tokenizer files with the chat template, generation_config.json
with the EOS), which `transformers.AutoModelForCausalLM/AutoTokenizer.from_pretrained`
and vLLM read. `write_gguf_model`: one GGUF file (f32 or f16) with the tokenizer
metadata, for llama.cpp and transformers' GGUF loader.

A run's tokenizer is either an `HFTokenizer` over the teacher's HF directory (its files
are copied) or a per-symbol tokenizer such as the arithmetic task's `CharTokenizer`,
which has no files: it is written as a byte-level BPE without merges
(`tokenizer.symbol_tokenizer_info`), which encodes every text to the same ids.
"""

from __future__ import annotations

import json
import os
import shutil

import jax

from dkd_jax.models import gguf
from dkd_jax.models import hf
from dkd_jax.models import tokenizer as tok_lib
from dkd_jax.models.decoder import ModelConfig

FORMATS = ("hf", "gguf")
DTYPES = ("float32", "float16")
GGUF_NAME = "model.gguf"


def special_ids(tok) -> dict[str, int]:
  """bos/eos/pad ids for config.json and generation_config.json (absent ones left out)."""
  ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
  return {k: v for k, v in ids.items() if v is not None}


def _write_tokenizer(tok, out_dir: str, max_len: int) -> None:
  if isinstance(tok, tok_lib.HFTokenizer):
    for name in hf.TOKENIZER_FILES:
      src = os.path.join(tok.path, name)
      if name != "generation_config.json" and os.path.exists(src):
        shutil.copy2(src, os.path.join(out_dir, name))
  else:
    tok_lib.write_gguf_tokenizer(tok_lib.export_info(tok), out_dir, max_len)


def _write_generation_config(tok, out_dir: str) -> None:
  """The teacher's generation_config.json (sampling defaults) when there is one, with
  the run's special ids: generation stops at the EOS the student was trained to emit."""
  config = {}
  if isinstance(tok, tok_lib.HFTokenizer):
    src = os.path.join(tok.path, "generation_config.json")
    if os.path.exists(src):
      with open(src) as f:
        config = json.load(f)
  eos = config.get("eos_token_id")
  config.update(special_ids(tok))
  if isinstance(eos, list):  # keep the teacher's other stop ids (e.g. <|endoftext|>)
    config["eos_token_id"] = [tok.eos_id] + [i for i in eos if i != tok.eos_id]
  with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
    json.dump(config, f, indent=2)


def write_hf_model(out_dir: str, cfg: ModelConfig, params, tok, dtype: str = "float32") -> str:
  """`out_dir` as a complete HF model directory, replaced atomically."""

  def extra(tmp) -> None:
    _write_tokenizer(tok, tmp, cfg.max_seq_len)
    _write_generation_config(tok, tmp)

  hf.write_hf(out_dir, cfg, params, special_ids(tok), extra, dtype=dtype)
  return out_dir


def gguf_path(out: str) -> str:
  """--out names the file when it ends in .gguf, else the directory that gets model.gguf."""
  return out if out.endswith(".gguf") else os.path.join(out, GGUF_NAME)


def write_gguf_model(out: str, cfg: ModelConfig, params, tok, dtype: str = "float32") -> str:
  return gguf.write_gguf(gguf_path(out), cfg, params, tok_lib.export_info(tok), dtype=dtype)


def write_model(fmt: str, out: str, cfg: ModelConfig, params, tok, dtype: str = "float32") -> str:
  """The student as `fmt` ('hf' directory or 'gguf' file); returns what was written.
  Call it on every host of a multi-host slice (they gather the params; host 0 writes)."""
  if fmt not in FORMATS:
    raise ValueError(f"export format {fmt!r}; choose one of {FORMATS}")
  if dtype not in DTYPES:
    raise ValueError(f"export dtype {dtype!r}; choose one of {DTYPES}")
  params = _on_host(params)
  if jax.process_index() != 0:  # every host gathers; one writes
    return out
  write = write_hf_model if fmt == "hf" else write_gguf_model
  return write(out, cfg, params, tok, dtype)


def _on_host(params) -> dict:
  """Params as host numpy arrays; on a multi-host slice each host holds only its shards,
  so all of them take part in gathering the full arrays."""
  if jax.process_count() == 1:
    return jax.device_get(params)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(params, tiled=True)
