"""Rotary position embeddings (RoPE) for the decoder family: inverse frequencies (with
Llama 3's long-context scaling), the cos/sin tables for given positions, and their
application to query/key heads in the HF half-split layout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def inv_freq(cfg) -> jax.Array:
  """[Dh/2] inverse frequencies of a ModelConfig (rope_theta, rope_scaling)."""
  Dh = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, Dh, 2, dtype=jnp.float32) / Dh))
  if cfg.rope_scaling is None:
    return inv
  # Llama 3: long wavelengths slowed by `factor`, short kept, smooth ramp between.
  factor, low, high, orig = cfg.rope_scaling
  wavelen = 2 * math.pi / inv
  smooth = (orig / wavelen - low) / (high - low)
  scaled = jnp.where(wavelen > orig / low, inv / factor, inv)
  mid = (1 - smooth) * inv / factor + smooth * inv
  is_mid = (wavelen <= orig / low) & (wavelen >= orig / high)
  return jnp.where(is_mid, mid, scaled)


def tables(cfg, positions_BxT) -> tuple[jax.Array, jax.Array]:
  """(cos, sin) of every position's angles."""
  angles = positions_BxT.astype(jnp.float32)[..., None] * inv_freq(cfg)
  return jnp.cos(angles), jnp.sin(angles)  # [B, T, Dh/2] each


def apply(x_BxTxNxDh, rope) -> jax.Array:
  """x's heads rotated by the (cos, sin) tables, computed in fp32, returned in x's dtype."""
  cos, sin = (r[:, :, None, :] for r in rope)
  x = x_BxTxNxDh.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)  # HF half-split layout
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxDh.dtype)
