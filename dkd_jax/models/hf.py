"""Hugging Face checkpoint I/O: HF directories <-> our params dict.

Every path goes through one HF-name table (`hf_tensor_specs`): a HF state dict is
checked against it (missing, unexpected and wrong-shaped tensors are errors, all
listed at once) and converted leaf by leaf into the stacked layout of
`decoder.param_shapes`. A GGUF file is first turned into a HF state dict (dequantized,
Q/K rows un-permuted from llama.cpp's interleaved RoPE layout to HF's half-split
one), so the GGUF path reuses the same checks and conversion.

GGUF files live in `models.gguf`, which builds on this module (never the reverse).

Safetensors are read with a small header parser (not `safetensors.numpy`) because
numpy has no bfloat16 and most released checkpoints are bf16; `ml_dtypes` (a jax
dependency) supplies it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np

from dkd_jax.models import decoder as model_lib
from dkd_jax.models.architectures import config_from_hf
from dkd_jax.models.architectures import config_to_hf
from dkd_jax.models.decoder import ModelConfig

# Tokenizer files a HF directory may carry; export copies whichever exist.
TOKENIZER_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "added_tokens.json",
  "generation_config.json",
)

# Our layer leaf -> (HF name under model.layers.{i}., layout). Layouts: "copy" (same
# array), "flat" (HF flattens our trailing dims), int n (a Linear: our first n dims
# are its inputs; HF stores [outputs, inputs]).
_LAYER_HF = {
  "attn_norm": ("input_layernorm.weight", "copy"),
  "mlp_norm": ("post_attention_layernorm.weight", "copy"),
  "wq": ("self_attn.q_proj.weight", 1),
  "wk": ("self_attn.k_proj.weight", 1),
  "wv": ("self_attn.v_proj.weight", 1),
  "wo": ("self_attn.o_proj.weight", 2),
  "bq": ("self_attn.q_proj.bias", "flat"),
  "bk": ("self_attn.k_proj.bias", "flat"),
  "bv": ("self_attn.v_proj.bias", "flat"),
  "q_norm": ("self_attn.q_norm.weight", "copy"),
  "k_norm": ("self_attn.k_norm.weight", "copy"),
  "w_gate": ("mlp.gate_proj.weight", 1),
  "w_up": ("mlp.up_proj.weight", 1),
  "w_down": ("mlp.down_proj.weight", 1),
}
_GLOBAL_HF = {
  "embedding": ("model.embed_tokens.weight", "copy"),
  "final_norm": ("model.norm.weight", "copy"),
  "lm_head": ("lm_head.weight", 1),
}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """Where one HF tensor goes: params[key] (row `layer` of a stacked leaf)."""

  key: str
  layer: int | None
  layout: str | int
  shape: tuple[int, ...]  # our shape (without the leading L)
  hf_shape: tuple[int, ...]


def _hf_shape(shape, layout) -> tuple[int, ...]:
  if layout == "copy":
    return tuple(shape)
  if layout == "flat":
    return (math.prod(shape),)
  return (math.prod(shape[layout:]), math.prod(shape[:layout]))


def _to_ours(a, spec: TensorSpec) -> np.ndarray:
  if isinstance(spec.layout, int):
    return a.T.reshape(spec.shape)
  return a.reshape(spec.shape)


def _to_hf(a, spec: TensorSpec) -> np.ndarray:
  if isinstance(spec.layout, int):
    return np.ascontiguousarray(a.reshape(math.prod(spec.shape[: spec.layout]), -1).T)
  return a.reshape(spec.hf_shape)


def hf_tensor_specs(cfg: ModelConfig) -> dict[str, TensorSpec]:
  """Every HF tensor name `cfg` needs -> how it maps onto our params."""
  shapes = model_lib.param_shapes(cfg)
  specs = {}
  for key, (name, layout) in _GLOBAL_HF.items():
    if key in shapes:
      specs[name] = TensorSpec(key, None, layout, shapes[key], _hf_shape(shapes[key], layout))
  for key, shape in model_lib.layer_param_shapes(cfg).items():
    suffix, layout = _LAYER_HF[key]
    for i in range(cfg.n_layers):
      specs[f"model.layers.{i}.{suffix}"] = TensorSpec(
        key, i, layout, shape, _hf_shape(shape, layout)
      )
  return specs


def _listing(names, limit=20) -> str:
  names = sorted(names)
  more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def check_hf_tensors(
  cfg: ModelConfig, shapes: Mapping[str, tuple[int, ...]], where: str = "checkpoint"
) -> None:
  """Raises one ValueError listing every missing, unexpected or wrong-shaped tensor."""
  specs = hf_tensor_specs(cfg)
  present = set(shapes)
  # A tied model may still ship lm_head.weight; load_hf checks it equals the embedding.
  allowed = {"lm_head.weight"} if cfg.tie_embeddings else set()
  # Old Llama checkpoints store RoPE inv_freq buffers; they are recomputed from config.
  derived = {n for n in present if n.endswith("rotary_emb.inv_freq")}
  problems = []
  if missing := set(specs) - present:
    problems.append(f"missing tensors: {_listing(missing)}")
  if unexpected := present - set(specs) - allowed - derived:
    problems.append(f"unexpected tensors: {_listing(unexpected)}")
  wrong = [
    f"{n} has shape {tuple(shapes[n])}, expected {specs[n].hf_shape}"
    for n in sorted(set(specs) & present)
    if tuple(shapes[n]) != specs[n].hf_shape
  ]
  if "lm_head.weight" in allowed & present:
    want = shapes.get("model.embed_tokens.weight")
    if tuple(shapes["lm_head.weight"]) != tuple(want or ()):
      wrong.append(
        f"lm_head.weight has shape {tuple(shapes['lm_head.weight'])}, expected "
        f"{tuple(want or ())} (tied to the embedding)"
      )
  if wrong:
    problems.append("wrong shapes: " + "; ".join(wrong))
  if problems:
    raise ValueError(
      f"{where} does not match the {cfg.arch} config ({cfg.n_layers} layers, "
      f"d_model {cfg.d_model}): " + " | ".join(problems)
    )


def _check_tied(cfg: ModelConfig, shapes, get, where: str) -> None:
  if cfg.tie_embeddings and "lm_head.weight" in shapes:
    if not np.array_equal(get("lm_head.weight"), get("model.embed_tokens.weight")):
      raise ValueError(
        f"{where}: config ties the embeddings but lm_head.weight differs from "
        "model.embed_tokens.weight; set tie_word_embeddings=false"
      )


def params_from_hf(
  cfg: ModelConfig,
  shapes: Mapping[str, tuple[int, ...]],
  get: Callable[[str], np.ndarray],
  where: str = "checkpoint",
) -> dict:
  """A HF state dict (names, shapes and a getter) -> our params tree of fp32 numpy."""
  check_hf_tensors(cfg, shapes, where)
  specs = hf_tensor_specs(cfg)
  _check_tied(cfg, shapes, get, where)
  layers = {
    k: np.empty((cfg.n_layers,) + s, np.float32)
    for k, s in model_lib.layer_param_shapes(cfg).items()
  }
  params: dict[str, Any] = {"layers": layers}
  for name, spec in specs.items():
    value = _to_ours(np.asarray(get(name), np.float32), spec)
    if spec.layer is None:
      params[spec.key] = value
    else:
      layers[spec.key][spec.layer] = value
  return params


def params_to_hf(cfg: ModelConfig, params, dtype: str = "float32") -> dict[str, np.ndarray]:
  """Our params tree -> a HF state dict of numpy arrays (fp32 unless `dtype`)."""
  host = jax.device_get(params)
  out = {}
  for name, spec in hf_tensor_specs(cfg).items():
    leaf = host[spec.key] if spec.layer is None else host["layers"][spec.key][spec.layer]
    out[name] = _to_hf(np.asarray(leaf, np.float32), spec).astype(dtype)
  return out


def param_readers(
  cfg: ModelConfig,
  shapes: Mapping[str, tuple[int, ...]],
  get: Callable[[str], np.ndarray],
  where: str = "checkpoint",
) -> dict:
  """Our params tree with a reader per leaf: reader(index) -> fp32 numpy of that slice
  only. With a memory-mapped `get` (safetensors) a host reads just the bytes of the
  shards it holds: the layout change (`_to_ours`) is a view, the slice comes first and
  the fp32 copy last."""
  check_hf_tensors(cfg, shapes, where)
  _check_tied(cfg, shapes, get, where)
  names: dict[str, dict[int | None, tuple[str, TensorSpec]]] = {}
  for name, spec in hf_tensor_specs(cfg).items():
    names.setdefault(spec.key, {})[spec.layer] = (name, spec)

  def view(name, spec) -> np.ndarray:
    return _to_ours(get(name), spec)

  def reader(key) -> Callable[[tuple[slice, ...]], np.ndarray]:
    by_layer = names[key]
    if None in by_layer:
      return lambda idx: np.asarray(view(*by_layer[None])[idx], np.float32)
    return lambda idx: np.stack(
      [np.asarray(view(*by_layer[j])[idx[1:]], np.float32) for j in range(cfg.n_layers)[idx[0]]]
    )

  shapes_ours = model_lib.param_shapes(cfg)
  return {
    k: ({kk: reader(kk) for kk in v} if k == "layers" else reader(k))
    for k, v in shapes_ours.items()
  }


def place_readers(cfg: ModelConfig, readers, mesh=None, shardings=None) -> dict:
  """Leaf readers -> device arrays, each process reading only its devices' slices;
  `shardings` (a params tree of them) overrides the mesh's default param shardings."""
  shapes = model_lib.param_shapes(cfg)
  is_shape = lambda x: isinstance(x, tuple)
  if mesh is None and shardings is None:
    full = lambda r, shape: jax.numpy.asarray(r(tuple(slice(None) for _ in shape)))
    return jax.tree.map(full, readers, shapes, is_leaf=is_shape)
  if shardings is None:
    shardings = model_lib.param_shardings(mesh, cfg)
  return jax.tree.map(
    lambda r, shape, s: jax.make_array_from_callback(shape, s, r),
    readers,
    shapes,
    shardings,
    is_leaf=is_shape,
  )


def place(cfg: ModelConfig, params, mesh=None) -> dict:
  """Host params -> device arrays, each leaf straight into its mesh sharding."""
  if mesh is None:
    return jax.tree.map(jax.numpy.asarray, params)
  shardings = model_lib.param_shardings(mesh, cfg)
  return jax.tree.map(lambda a, s: jax.device_put(a, s), params, shardings)


# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}


def _safetensors_header(file: str) -> dict[str, dict]:
  """name -> {dtype, shape, data_offsets, file, base} for one .safetensors file."""
  with open(file, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return {k: dict(v, file=file, base=8 + n) for k, v in header.items()}


def _read_tensor(entry: dict) -> np.ndarray:
  if entry["dtype"] not in _ST_DTYPES:
    raise ValueError(
      f"{entry['file']}: dtype {entry['dtype']} unsupported; supported: {sorted(_ST_DTYPES)}"
    )
  start, end = entry["data_offsets"]
  raw = np.memmap(entry["file"], np.uint8, "r", offset=entry["base"] + start, shape=(end - start,))
  return raw.view(_ST_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def _hf_entries(path: str) -> dict[str, dict]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.exists(os.path.join(path, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    raise FileNotFoundError(
      f"{path} has neither model.safetensors nor model.safetensors.index.json"
    )
  entries = {}
  for name in files:
    entries.update(_safetensors_header(os.path.join(path, name)))
  return entries


def read_config(path: str, **overrides) -> ModelConfig:
  """The ModelConfig of a local HF directory (its config.json only; no weights read)."""
  with open(os.path.join(path, "config.json")) as f:
    return config_from_hf(json.load(f), **overrides)


def load_hf(
  path: str, *, mesh=None, dtype: str = "float32", **overrides
) -> tuple[ModelConfig, dict]:
  """A local HF directory -> (ModelConfig, params), params placed into their shardings,
  read shard by shard from the memory-mapped safetensors (no host holds more than the
  slices of its own devices).

  `dtype` is the compute dtype (params stay fp32); `overrides` replace config fields
  such as scan_layers or remat."""
  cfg = read_config(path, dtype=dtype, **overrides)
  entries = _hf_entries(path)
  shapes = {k: tuple(v["shape"]) for k, v in entries.items()}
  readers = param_readers(cfg, shapes, lambda n: _read_tensor(entries[n]), where=path)
  return cfg, place_readers(cfg, readers, mesh)


def load_hf_params(path: str, cfg: ModelConfig, shardings) -> dict:
  """The params of a local HF directory for an existing `cfg` (every tensor's shape is
  checked against it), read shard by shard straight into `shardings`."""
  entries = _hf_entries(path)
  shapes = {k: tuple(v["shape"]) for k, v in entries.items()}
  readers = param_readers(cfg, shapes, lambda n: _read_tensor(entries[n]), where=path)
  return place_readers(cfg, readers, shardings=shardings)


def _replace_dir(tmp: str, path: str) -> None:
  """Moves a finished tmp dir onto `path`; a reader never sees a half-written one."""
  if os.path.exists(path):
    old = tmp + ".old"
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old)
  else:
    os.rename(tmp, path)


def write_hf(
  path: str,
  cfg: ModelConfig,
  params,
  extra_config: dict | None,
  write_extra: Callable[[str], None] | None,
  dtype: str = "float32",
) -> None:
  """config.json + model.safetensors (+ whatever `write_extra(tmp_dir)` adds), replacing
  `path` as a whole once everything is written."""
  from safetensors.numpy import save_file

  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path))
  try:
    # transformers 5 reads "dtype", 4.x "torch_dtype"; both name the stored precision.
    precision = {"torch_dtype": dtype, "dtype": dtype}
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump({**config_to_hf(cfg), **precision, **(extra_config or {})}, f, indent=2)
    save_file(
      params_to_hf(cfg, params, dtype),
      os.path.join(tmp, "model.safetensors"),
      metadata={"format": "pt"},
    )
    if write_extra is not None:
      write_extra(tmp)
    _replace_dir(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export_hf(path: str, cfg: ModelConfig, params, tokenizer_dir: str | None = None) -> None:
  """Writes config.json + model.safetensors (fp32) that transformers loads, atomically;
  copies the tokenizer files found in `tokenizer_dir`."""

  def copy_tokenizer(tmp) -> None:
    found = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(tokenizer_dir, n))]
    if not found:
      raise FileNotFoundError(
        f"no tokenizer files in {tokenizer_dir}; looked for {TOKENIZER_FILES}"
      )
    for n in found:
      shutil.copy2(os.path.join(tokenizer_dir, n), os.path.join(tmp, n))

  write_hf(path, cfg, params, None, copy_tokenizer if tokenizer_dir else None)
