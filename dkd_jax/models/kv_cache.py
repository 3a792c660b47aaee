"""The decoder's KV cache: its layout, shapes, shardings and writes.

A stacked cache {'k': [L, B, K, Dh, S], 'v': [L, B, K, S, Dh]} is what prefill fills and
a `Prefix` carries; the decode loop keeps the same buffers per layer ({'k','v': L-tuples},
`init_layer_caches`) so that each token updates every layer's cache in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dkd_jax.core import sharding

# Keys [L, B, K, Dh, S], values [L, B, K, S, Dh]. These are the operand
# layouts of the two attention matmuls (q·k over Dh, p·v over S) on XLA:CPU's batched-matmul
# path; a [L, B, S, K, Dh] cache made every decode step transpose each layer's whole cache
# twice (read from the compiled HLO, BUILD_NOTES issue 11). Writing one new position is a
# strided write of B·K·Dh values: negligible.
CACHE_AXES = {
  "k": ("layers", "batch", "kv_heads", "head_dim", "cache_length"),
  "v": ("layers", "batch", "kv_heads", "cache_length", "head_dim"),
}


# Where each stacked cache keeps its positions (a layer's buffer: one axis less).
LENGTH_AXIS = {n: axes.index("cache_length") for n, axes in CACHE_AXES.items()}


def cache_shapes(cfg, batch: int, length: int) -> dict[str, tuple[int, ...]]:
  """The stacked cache's shapes: k [L, B, K, Dh, S], v [L, B, K, S, Dh] (see CACHE_AXES)."""
  L, K, Dh = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
  return {"k": (L, batch, K, Dh, length), "v": (L, batch, K, length, Dh)}


def cache_length(cache) -> int:
  """S of a stacked cache (or of one layer's: counted from the end, the same axis)."""
  return cache["v"].shape[LENGTH_AXIS["v"] - len(CACHE_AXES["v"])]


def init_cache(cfg, batch: int, length: int, dtype=None) -> dict[str, jax.Array]:
  """Zeroed stacked KV cache (`cache_shapes`) in the compute dtype."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  return {n: jnp.zeros(s, dtype) for n, s in cache_shapes(cfg, batch, length).items()}


def init_layer_caches(cfg, batch: int, length: int, dtype=None) -> dict[str, tuple[jax.Array, ...]]:
  """The same zeroed cache as L per-layer buffers {'k','v': L-tuples} (the decode loop's
  form: each layer's buffer is updated in place)."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  return {
    n: tuple(jnp.zeros(s[1:], dtype) for _ in range(cfg.n_layers))
    for n, s in cache_shapes(cfg, batch, length).items()
  }


def write(kv, k_BxTxKxDh, v_BxTxKxDh, start_B) -> tuple[jax.Array, jax.Array]:
  """This layer's cache (keys [B,K,Dh,S], values [B,K,S,Dh]) with T new positions per row
  written from start_B on."""
  keys, values = kv
  put_k = lambda c, n, s: jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (0, 0, s))
  put_v = lambda c, n, s: jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (0, s, 0))
  return (
    jax.vmap(put_k)(keys, k_BxTxKxDh.transpose(0, 2, 3, 1), start_B),
    jax.vmap(put_v)(values, v_BxTxKxDh.transpose(0, 2, 1, 3), start_B),
  )


def view_lengths(cache_len: int, phases: int) -> tuple[int, ...]:
  """The cache views a phased decode loop attends over (`decode_state.generate_steps_fn`):
  `phases` even steps up to cache_len, each rounded up to a multiple of 8 (at most
  cache_len)."""
  if phases < 1:
    raise ValueError(f"decode phases={phases} must be >= 1")
  up8 = lambda n: min(cache_len, -(-n // 8) * 8)
  return tuple(sorted({up8(-(-cache_len * p // phases)) for p in range(1, phases + 1)}))


def first_slots(caches, n: int) -> dict[str, tuple[jax.Array, ...]]:
  """Per-layer caches ({'k','v': L-tuples}, `init_layer_caches`) cut to their first n
  slots (a copy of those slots: a view narrower than the buffer)."""
  return {
    k: tuple(jax.lax.slice_in_dim(c, 0, n, axis=LENGTH_AXIS[k] - 1) for c in cs)
    for k, cs in caches.items()
  }


def put_first_slots(caches, firsts) -> dict[str, tuple[jax.Array, ...]]:
  """`caches` with their first slots replaced by `firsts` (`first_slots`' shapes), in
  place when the buffers are donated or loop-carried."""
  put = lambda c, f: jax.lax.dynamic_update_slice(c, f.astype(c.dtype), (0,) * c.ndim)
  return {k: tuple(put(c, f) for c, f in zip(cs, firsts[k])) for k, cs in caches.items()}


def cache_shardings(
  mesh, cfg, batch: int, length: int, *, per_layer: bool = False, shard_batch: bool = True
) -> dict:
  """NamedShardings of the stacked cache, or (per_layer) of `init_layer_caches`' tuples.
  shard_batch=False replicates the batch axis (a one-prompt prefix)."""
  out = {}
  for n, shape in cache_shapes(cfg, batch, length).items():
    axes = CACHE_AXES[n] if shard_batch else (CACHE_AXES[n][0], None) + CACHE_AXES[n][2:]
    if per_layer:
      out[n] = (sharding.named_sharding(mesh, axes[1:], shape[1:], f"kv_cache.{n}"),) * cfg.n_layers
    else:
      out[n] = sharding.named_sharding(mesh, axes, shape, f"kv_cache.{n}")
  return out
