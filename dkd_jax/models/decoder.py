"""The decoder family (Llama 3 / SmolLM2, Qwen2/2.5, Qwen3) as one Flax NNX module.

The model returns final (normed) hidden states and exposes the LM-head weight
separately (`head_DxV`): training never asks it for full logits, the KL kernel
consumes hidden states + head. Layer weights are stored stacked on a leading
'layers' axis, so `scan_layers` only changes how they are applied, never the
checkpoint layout. A KV cache (prefill + single-token decode over a fixed-size
cache) serves the generation engine.

Functional use (what jit/optax/orbax see): `graphdef, params = split(model)`
gives a pure dict of fp32 arrays; `apply(graphdef, params, tokens, ...)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dkd_jax.models import kv_cache
from dkd_jax.models import rope as rope_lib

ARCHS = ("llama", "qwen2", "qwen3")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of one decoder. Letters: V vocab, D model, F mlp, L layers,
  H query heads, K kv heads, Dh head dim."""

  arch: str = "llama"
  vocab_size: int = 256
  d_model: int = 64
  d_ff: int = 128
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 16
  rope_theta: float = 10000.0
  # Llama-3 scaling: (factor, low_freq_factor, high_freq_factor, original_max_position).
  rope_scaling: tuple[float, float, float, int] | None = None
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_seq_len: int = 2048
  dtype: str = "float32"  # compute dtype; params are always fp32
  scan_layers: bool = True
  remat: str = "none"

  @property
  def qkv_bias(self) -> bool:
    return self.arch == "qwen2"

  @property
  def qk_norm(self) -> bool:
    return self.arch == "qwen3"

  def validate(self) -> ModelConfig:
    if self.arch not in ARCHS:
      raise ValueError(f"model.arch={self.arch!r} is not supported; allowed: {ARCHS}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat={self.remat!r}; allowed: {REMAT_POLICIES}")
    if self.dtype not in DTYPES:
      raise ValueError(f"model.dtype={self.dtype!r}; allowed: {DTYPES}")
    for f in ("vocab_size", "d_model", "d_ff", "n_layers", "n_heads", "n_kv_heads", "head_dim"):
      if getattr(self, f) < 1:
        raise ValueError(f"model.{f} must be >= 1, got {getattr(self, f)}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
        f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}"
      )
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim={self.head_dim} must be even for RoPE")
    return self


# Logical axes per parameter name (mapped to the mesh by sharding.LOGICAL_RULES).
PARAM_AXES = {
  "embedding": ("vocab", "embed"),
  "lm_head": ("embed", "vocab"),
  "final_norm": ("norm",),
  "attn_norm": ("layers", "norm"),
  "mlp_norm": ("layers", "norm"),
  "wq": ("layers", "embed", "heads", "head_dim"),
  "wk": ("layers", "embed", "kv_heads", "head_dim"),
  "wv": ("layers", "embed", "kv_heads", "head_dim"),
  "bq": ("layers", "heads", "head_dim"),
  "bk": ("layers", "kv_heads", "head_dim"),
  "bv": ("layers", "kv_heads", "head_dim"),
  "q_norm": ("layers", "head_dim"),
  "k_norm": ("layers", "head_dim"),
  "wo": ("layers", "heads", "head_dim", "embed"),
  "w_gate": ("layers", "embed", "mlp"),
  "w_up": ("layers", "embed", "mlp"),
  "w_down": ("layers", "mlp", "embed"),
}


def layer_param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Per-layer weight shapes (without the leading L)."""
  D, F, H, K, Dh = cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  shapes = {
    "attn_norm": (D,),
    "mlp_norm": (D,),
    "wq": (D, H, Dh),
    "wk": (D, K, Dh),
    "wv": (D, K, Dh),
    "wo": (H, Dh, D),
    "w_gate": (D, F),
    "w_up": (D, F),
    "w_down": (F, D),
  }
  if cfg.qkv_bias:
    shapes.update(bq=(H, Dh), bk=(K, Dh), bv=(K, Dh))
  if cfg.qk_norm:
    shapes.update(q_norm=(Dh,), k_norm=(Dh,))
  return shapes


def param_shapes(cfg: ModelConfig) -> dict[str, Any]:
  """The full parameter tree's shapes, the contract for every checkpoint loader."""
  L = cfg.n_layers
  out: dict[str, Any] = {
    "embedding": (cfg.vocab_size, cfg.d_model),
    "final_norm": (cfg.d_model,),
    "layers": {k: (L,) + s for k, s in layer_param_shapes(cfg).items()},
  }
  if not cfg.tie_embeddings:
    out["lm_head"] = (cfg.d_model, cfg.vocab_size)
  return out


def param_logical_axes(params) -> Any:
  """Logical axes tree matching a params (or shapes) tree, by leaf name."""

  def axes(path, _) -> tuple[str | None, ...]:
    return PARAM_AXES[path[-1].key]

  return jax.tree_util.tree_map_with_path(
    axes, params, is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
  )


def _init(key, shape, fan_in) -> jax.Array:
  return jax.random.normal(key, shape, jnp.float32) / math.sqrt(fan_in)


class Layers(nnx.Module):
  """All decoder blocks' weights, stacked on a leading 'layers' axis."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    L = cfg.n_layers
    for name, shape in layer_param_shapes(cfg).items():
      full = (L,) + shape
      if name.endswith("norm"):
        value = jnp.ones(full, jnp.float32)
      elif name.startswith("b"):
        value = jnp.zeros(full, jnp.float32)
      else:
        fan_in = shape[0] if name != "wo" else shape[0] * shape[1]
        value = _init(rngs.params(), full, fan_in)
      setattr(self, name, nnx.Param(value))

  def arrays(self) -> dict[str, jax.Array]:
    return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


class Decoder(nnx.Module):
  """Token ids -> final normed hidden states (and an updated KV cache)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg.validate()
    # std 1/sqrt(D): with a tied head the initial logits then have unit scale, so a
    # fresh student starts near-uniform instead of collapsed (reverse KL needs that).
    self.embedding = nnx.Param(_init(rngs.params(), (cfg.vocab_size, cfg.d_model), cfg.d_model))
    self.layers = Layers(cfg, rngs)
    self.final_norm = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))
    if not cfg.tie_embeddings:
      self.lm_head = nnx.Param(_init(rngs.params(), (cfg.d_model, cfg.vocab_size), cfg.d_model))

  def head_DxV(self) -> jax.Array:
    """The LM-head weight [D, V] (the transposed embedding when tied)."""
    return self.embedding[...].T if self.cfg.tie_embeddings else self.lm_head[...]

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, layers_L=None):
    """Returns (hidden_BxTxD in compute dtype, cache or None).

    With `layers_L` (per-layer weights from `layer_list`) the blocks run as a Python loop
    and `cache` is a per-layer list [(k, v)] * L (the decode loop's form, same numbers).

    Without a cache: causal attention over the T given tokens (right padding is
    harmless: padded positions only see earlier tokens and are masked in the loss).
    With a cache (`kv_cache.init_cache`: k [L,B,K,Dh,S], v [L,B,K,S,Dh]): the new
    keys/values are written at `positions_BxT` and queries attend to cache slots <= their
    own position.
    """
    cfg = self.cfg
    B, T = tokens_BxT.shape
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    dtype = jnp.dtype(cfg.dtype)
    x_BxTxD = self.embedding[...].astype(dtype)[tokens_BxT]
    rope = rope_lib.tables(cfg, positions_BxT)
    if layers_L is None:
      x_BxTxD, cache = apply_layers(cfg, self.layers.arrays(), x_BxTxD, rope, positions_BxT, cache)
    else:
      x_BxTxD, cache = apply_layer_list(cfg, layers_L, x_BxTxD, rope, positions_BxT, cache)
    return rms_norm(x_BxTxD, self.final_norm[...], cfg.norm_eps), cache


def rms_norm(x, w, eps) -> jax.Array:
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (y * w.astype(jnp.float32)).astype(x.dtype)


def dense(x_BxTxD, w_DxF_) -> jax.Array:
  """x @ w over x's last axis as one 2-D GEMM, [B*T, D] x [D, F] (w's trailing axes
  merged, then split again). The same product as einsum('btd,df->btf'), but its weight
  gradient is one GEMM too: XLA:CPU lowered the 3-d einsum's ('btd,btf->df', two
  contracting axes) through a transposed copy of the activations, and the student's
  backward ran 7x its forward (BUILD_NOTES, "Train step at study sizes")."""
  D = x_BxTxD.shape[-1]
  w_DxF = w_DxF_.reshape(D, -1)
  y = jnp.dot(x_BxTxD.reshape(-1, D), w_DxF)
  return y.reshape(*x_BxTxD.shape[:-1], *w_DxF_.shape[1:])


def attention(
  cfg, p, x_BxTxD, rope, positions_BxT, kv=None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
  """GQA self-attention; kv=(keys_BxKxDhxS, values_BxKxSxDh) is this layer's cache or
  None."""
  dtype = x_BxTxD.dtype
  B, T, _ = x_BxTxD.shape
  H, K, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  w = lambda n: p[n].astype(dtype)
  q, k, v = (dense(x_BxTxD, w(n)) for n in ("wq", "wk", "wv"))
  if cfg.qkv_bias:
    q, k, v = q + w("bq"), k + w("bk"), v + w("bv")
  if cfg.qk_norm:
    q, k = rms_norm(q, p["q_norm"], cfg.norm_eps), rms_norm(k, p["k_norm"], cfg.norm_eps)
  q, k = rope_lib.apply(q, rope), rope_lib.apply(k, rope)
  if kv is None:
    keys, values = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
  else:
    kv = keys, values = kv_cache.write(kv, k, v, positions_BxT[:, 0])
  G, S = H // K, values.shape[2]
  key_pos_S = jnp.arange(S)
  # Plain batched matmuls over (b, k) with the G query heads of a group folded into the
  # rows: XLA:CPU ran the 5-d einsums 'btkgd,bskd->bkgts' up to 80x slower (a cliff
  # between T=128 and 256, measured in BUILD_NOTES); same contractions, same numerics.
  q_BxKxNxDh = q.reshape(B, T, K, G, Dh).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, Dh)
  k_BxKxDhxS, v_BxKxSxDh = keys.astype(dtype), values.astype(dtype)
  scores = jnp.einsum("bknd,bkds->bkns", q_BxKxNxDh, k_BxKxDhxS).astype(jnp.float32)
  scores = scores / math.sqrt(Dh)
  positions_BxN = jnp.tile(positions_BxT, (1, G))  # row n = g * T + t
  visible_BxNxS = key_pos_S[None, None, :] <= positions_BxN[:, :, None]
  scores = jnp.where(visible_BxNxS[:, None], scores, -1e30)
  probs_BxKxNxS = jax.nn.softmax(scores, axis=-1).astype(dtype)
  out = jnp.einsum("bkns,bksd->bknd", probs_BxKxNxS, v_BxKxSxDh)
  out_BxTxHDh = out.reshape(B, K, G, T, Dh).transpose(0, 3, 1, 2, 4).reshape(B, T, H * Dh)
  # One contraction over the merged (head, head_dim) axis: with two contracting dims
  # XLA:CPU transposed the [H, Dh, D] weight itself on every decode step.
  return dense(out_BxTxHDh, w("wo").reshape(H * Dh, -1)), kv


def block(
  cfg, p, x_BxTxD, rope, positions_BxT, kv=None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
  """One pre-norm decoder block: attention + SwiGLU MLP, both residual."""
  h, kv = attention(
    cfg, p, rms_norm(x_BxTxD, p["attn_norm"], cfg.norm_eps), rope, positions_BxT, kv
  )
  x_BxTxD = x_BxTxD + h
  y = rms_norm(x_BxTxD, p["mlp_norm"], cfg.norm_eps)
  dtype = y.dtype
  gate, up = (dense(y, p[n].astype(dtype)) for n in ("w_gate", "w_up"))
  down = dense(jax.nn.silu(gate) * up, p["w_down"].astype(dtype))
  return x_BxTxD + down, kv


def _remat(cfg, fn) -> Callable:
  if cfg.remat == "none":
    return fn
  policy = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }[cfg.remat]
  return jax.checkpoint(fn, policy=policy)


def apply_layers(
  cfg, layers, x_BxTxD, rope, positions_BxT, cache
) -> tuple[jax.Array, dict[str, jax.Array] | None]:
  """Runs the L stacked blocks by lax.scan or a Python loop (same params either way)."""

  from dkd_jax.core import sharding

  def body(x, xs) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    p, kv = xs
    x, kv = block(cfg, p, sharding.constrain_batch(x), rope, positions_BxT, kv)
    return x, kv

  body = _remat(cfg, body)
  kv_all = None if cache is None else (cache["k"], cache["v"])
  if cfg.scan_layers:
    x_BxTxD, kv_all = jax.lax.scan(body, x_BxTxD, (layers, kv_all))
  else:
    outs = []
    for i in range(cfg.n_layers):
      sl = jax.tree.map(lambda a, i=i: a[i], (layers, kv_all))
      x_BxTxD, kv = body(x_BxTxD, sl)
      outs.append(kv)
    if cache is not None:
      kv_all = jax.tree.map(lambda *a: jnp.stack(a), *outs)
  new_cache = None if cache is None else {"k": kv_all[0], "v": kv_all[1]}
  return x_BxTxD, new_cache


def layer_list(layers: dict[str, jax.Array], n_layers: int) -> list[dict[str, jax.Array]]:
  """The stacked [L, ...] block weights as L per-layer dicts (one copy, made once).

  For decode loops: XLA:CPU copies a layer's slices out of the stacked arrays on every
  scan iteration (every layer of every token); split once per `generate_steps` call and
  passed as separate buffers, the per-token loop reads the weights in place.
  """
  return [{k: a[i] for k, a in layers.items()} for i in range(n_layers)]


def apply_layer_list(cfg, layers_L, x_BxTxD, rope, positions_BxT, kv_L) -> tuple[jax.Array, list]:
  """The blocks as a Python loop over per-layer weights and per-layer caches
  kv_L = [(k_BxSxKxDh, v_BxSxKxDh)] * L: each cache is updated in place (when its buffer
  is donated or loop-carried) instead of being restacked, so a decode step writes the
  new rows only, not a fresh [L, B, S, K, Dh] cache."""
  out_L = []
  for p, kv in zip(layers_L, kv_L):
    x_BxTxD, kv = block(cfg, p, x_BxTxD, rope, positions_BxT, kv)
    out_L.append(kv)
  return x_BxTxD, out_L


def stacked_layers(graphdef, params) -> dict[str, jax.Array]:
  return nnx.merge(graphdef, params).layers.arrays()


# ----------------------------------------------------------------------------- functional API


def create(cfg: ModelConfig, seed: int = 0) -> Decoder:
  return Decoder(cfg, rngs=nnx.Rngs(seed))


def split(model: Decoder) -> tuple[nnx.GraphDef, dict]:
  """(graphdef, params) with params a pure nested dict of arrays."""
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def abstract(cfg: ModelConfig) -> tuple[nnx.GraphDef, dict]:
  """(graphdef, params ShapeDtypeStructs) without allocating weights."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: create(cfg)))
  return graphdef, nnx.to_pure_dict(state)


def apply(
  graphdef, params, tokens_BxT, positions_BxT=None, cache=None, layers_L=None
) -> tuple[jax.Array, Any]:
  """Pure forward: (hidden_BxTxD, cache)."""
  return nnx.merge(graphdef, params)(tokens_BxT, positions_BxT, cache, layers_L)


def head(graphdef, params) -> jax.Array:
  return nnx.merge(graphdef, params).head_DxV()


def logits(
  graphdef, params, tokens_BxT, positions_BxT=None, cache=None, layers_L=None
) -> tuple[jax.Array, Any]:
  """Full logits (fp32) — for generation, tests and eval only, never the training loss."""
  hidden, cache = apply(graphdef, params, tokens_BxT, positions_BxT, cache, layers_L)
  w = head(graphdef, params)
  return jnp.einsum(
    "btd,dv->btv", hidden, w.astype(hidden.dtype), preferred_element_type=jnp.float32
  ), cache


def param_shardings(mesh, cfg: ModelConfig) -> dict:
  """NamedShardings for the params tree, from PARAM_AXES and the rules table."""
  from dkd_jax.core import sharding

  shapes = param_shapes(cfg)
  return sharding.tree_shardings(mesh, param_logical_axes(shapes), shapes)


def init_params(cfg: ModelConfig, mesh=None, seed: int = 0) -> tuple[nnx.GraphDef, dict]:
  """(graphdef, params) initialised directly into their shardings (no host copy)."""
  graphdef, _ = abstract(cfg)
  init = lambda: split(create(cfg, seed))[1]
  if mesh is None:
    return graphdef, jax.jit(init)()
  return graphdef, jax.jit(init, out_shardings=param_shardings(mesh, cfg))()
