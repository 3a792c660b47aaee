"""Host-side checks of the engine's requests, before anything is traced or compiled:
the real tokens of a padded prompt, an existing prefix's cache and length, a batch of
padded prompts, and response-length limits. Each bad input is a ValueError naming it."""

from __future__ import annotations

import numpy as np

from dkd_jax.generate.decode_state import Prefix
from dkd_jax.models import kv_cache


def new_tokens(padded_tokens, true_length) -> np.ndarray:
  """The real tokens of one padded row, int32 [true_length] (at least one)."""
  tokens = np.asarray(padded_tokens, np.int32).reshape(-1)
  n = int(true_length)
  if n < 1:
    raise ValueError(
      "empty prompt (true_length=0): a prompt needs at least one token "
      "(with existing_prefix: at least one new token)"
    )
  if n > len(tokens):
    raise ValueError(f"true_length={n} > len(padded_tokens)={len(tokens)}")
  return tokens[:n]


def existing(existing_prefix) -> tuple[dict, int] | None:
  """(cache, number of tokens in it) of an existing prefix, or None. A `Prefix` tells its
  length on device (one scalar read); an upstream `ExistingPrefix` by its tokens."""
  if existing_prefix is None:
    return None
  if hasattr(existing_prefix, "common_prefix_tokens"):
    n = int(np.asarray(existing_prefix.common_prefix_tokens).size)
  elif isinstance(existing_prefix, Prefix):
    n = int(existing_prefix.true_length)
  else:
    raise TypeError(
      f"existing_prefix must be a Prefix or an ExistingPrefix, got {type(existing_prefix).__name__}"
    )
  cache = existing_prefix.cache
  if not 1 <= n <= kv_cache.cache_length(cache):
    raise ValueError(
      f"existing prefix holds {n} tokens but its cache has {kv_cache.cache_length(cache)} positions"
    )
  return cache, n


def batch_rows(padded_tokens, true_lengths, buckets) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [N, Pb], true lengths int32 [N]) of a batch of prompts right-padded to
  one prefill bucket Pb."""
  tokens = np.asarray(padded_tokens, np.int32)
  if tokens.ndim != 2 or tokens.shape[0] < 1:
    raise ValueError(f"padded_tokens must be [N, Pb] with N >= 1, got {tokens.shape}")
  N, width = tokens.shape
  if width not in buckets:
    raise ValueError(f"padded_tokens width {width} is not a prefill bucket {tuple(buckets)}")
  lens = np.asarray(true_lengths, np.int32).reshape(-1)
  if lens.shape != (N,) or lens.min() < 1 or lens.max() > width:
    raise ValueError(f"true_lengths must be N={N} values in [1, {width}], got {lens}")
  return tokens, lens


def response_limits(max_new_tokens, limit: int, n: int | None = None) -> np.ndarray:
  """int32 response-length limit(s): [] for one request (n None) or [n]; default `limit`
  (the engine's max_decode_length); each must lie in [1, limit]."""
  value = np.asarray(limit if max_new_tokens is None else max_new_tokens, np.int32)
  value = value.reshape(()) if n is None else np.broadcast_to(value, (n,))
  if value.min() < 1 or value.max() > limit:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be in [1, max_decode_length={limit}]")
  return value.copy()  # broadcast_to gives a read-only strided view
