"""The pure decode-state functions the engine jits, and the pytrees they pass.

`prefill_fn` (one padded prompt -> a `Prefix` and its first sampled token(s)),
`prefill_batch_fn` (N padded prompts in one forward -> a `Prefix` of N rows),
`extend_fn` (more tokens on top of an earlier prefix's cache: prefix caching and
chunked prefill),
`insert_fn` (a prefix sample into a slot of the `DecodeState`; `insert_many_fn` several
in one call), `decode_step` /
`generate_fn` (one token for every slot), `generate_steps_fn` (several steps in one
`lax.while_loop`) and `init_state_fn` (all slots empty). Each takes the params as given
or as `DecodeParams` (their blocks split per layer once, `decode_params_fn`). None of them
knows about shardings, buckets or compile caches: `engine.Engine` binds the static
arguments with `functools.partial` and jits them with explicit shardings and donation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dkd_jax.generate import sampling
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import kv_cache

STATS = ("token", "logprob", "sampling_logprob", "entropy")


@struct.dataclass
class DecodeParams:
  """Params laid out for generation: the model's params plus its blocks as L per-layer
  dicts (`decoder.layer_list`). Made once per weights version (`Engine.decode_params`;
  a rollout makes one), they let every prefill and decode step read each layer's weights
  in place: XLA:CPU otherwise copies every layer's slices out of the stacked [L, ...]
  arrays on each call (a full copy of the weights; BUILD_NOTES, issue 11)."""

  params: Any
  layers_L: tuple


def decode_params_fn(cfg, graphdef, params) -> DecodeParams:
  """`params` as DecodeParams (unchanged if they already are)."""
  if isinstance(params, DecodeParams):
    return params
  layers = model_lib.stacked_layers(graphdef, params)
  return DecodeParams(params, tuple(model_lib.layer_list(layers, cfg.n_layers)))


def _forward(
  graphdef, dp: DecodeParams, tokens_BxT, positions_BxT, caches, head=False
) -> tuple[jax.Array, dict[str, tuple[jax.Array, ...]]]:
  """(hidden or fp32 logits, caches) through the per-layer blocks; caches are
  {'k','v': L-tuples} of one layer's buffers each (updated in place when loop-carried)."""
  kv_L = list(zip(caches["k"], caches["v"]))
  fn = model_lib.logits if head else model_lib.apply
  out, kv_L = fn(graphdef, dp.params, tokens_BxT, positions_BxT, kv_L, list(dp.layers_L))
  return out, {"k": tuple(k for k, _ in kv_L), "v": tuple(v for _, v in kv_L)}


def _unstack(cache) -> dict:
  return {n: tuple(c) for n, c in cache.items()}


def _stack(caches) -> dict:
  return {n: jnp.stack(c) for n, c in caches.items()}


@struct.dataclass
class Prefix:
  """Prefilled prompts and N sampled first tokens: either one prompt (cache batch 1,
  true_length and max_new scalars) whose N samples share its cache, or N prompts (cache
  batch N, true_length and max_new [N]) of one sample each. The cache is stacked, length
  Pb (layouts in `kv_cache.cache_shapes`); sample i goes into a slot by `insert_fn`."""

  cache: dict
  true_length: jax.Array  # int32 [] (one prompt) or [N] (N prompts)
  first: dict  # STATS -> [N]
  keys_Nx2: jax.Array  # per-sample request keys (uint32)
  max_new: jax.Array  # int32 [] or [N]: the response-length limit(s)

  def __getitem__(self, name: str):
    """prefix["cache"]: upstream drivers (JetStream's chunked prefill) read a prefix as a
    dict when they wrap its cache into an `ExistingPrefix`."""
    return getattr(self, name)


@struct.dataclass
class ExistingPrefix:
  """Upstream JetStream's prefix-cache handle: a prefix's KV cache and the tokens it holds
  (their count is the cache's true length). `Engine.prefill(existing_prefix=...)` takes
  this or a `Prefix`."""

  cache: dict
  common_prefix_tokens: Any


@struct.dataclass
class DecodeState:
  """Everything `generate` transforms, indexed by slot b. cache holds L per-layer buffers
  ({'k','v': L-tuples}, `kv_cache.init_layer_caches`), so a decode step writes each layer's
  new rows in place; tokens_B is the last sampled token (not yet in the cache) and pos_B
  its position; out[k] are [B, R] buffers indexed by response step; done_B is True for
  finished and empty slots."""

  cache: dict
  tokens_B: jax.Array
  pos_B: jax.Array
  num_B: jax.Array
  limit_B: jax.Array
  done_B: jax.Array
  keys_Bx2: jax.Array
  out: dict


@struct.dataclass
class SlotData:
  tokens: Any
  valid: Any
  lengths: Any
  log_prob: Any = None


@struct.dataclass
class ResultTokens:
  """JetStream's result layout: data [B, 3] int32 = (token, valid, length so far)."""

  data: jax.Array
  log_prob: jax.Array  # [B, 1] model log-prob at temperature 1
  sampling_log_prob: jax.Array  # [B, 1] under the sampling distribution used
  entropy: jax.Array  # [B, 1] model entropy at temperature 1
  tokens_idx: tuple = struct.field(pytree_node=False, default=(0, 1))
  valid_idx: tuple = struct.field(pytree_node=False, default=(1, 2))
  length_idx: tuple = struct.field(pytree_node=False, default=(2, 3))
  samples_per_slot: int = struct.field(pytree_node=False, default=1)

  def copy_to_host_async(self) -> None:
    for x in (self.data, self.log_prob, self.sampling_log_prob, self.entropy):
      if isinstance(x, jax.Array):
        x.copy_to_host_async()

  def convert_to_numpy(self) -> ResultTokens:
    return jax.tree.map(np.asarray, self)

  def get_result_at_slot(self, slot: int) -> SlotData:
    rows = slice(slot * self.samples_per_slot, (slot + 1) * self.samples_per_slot)
    col = lambda idx: self.data[rows, idx[0] : idx[1]]
    return SlotData(
      tokens=col(self.tokens_idx),
      valid=col(self.valid_idx),
      lengths=col(self.length_idx)[:, 0],
      log_prob=self.log_prob[rows],
    )

  def get_result_at_slots(self, slots) -> SlotData:
    """The rows of several slots at once (one gather per field, as upstream): tokens and
    valid [n, 1], lengths [n], log_prob [n, 1]; row i is slots[i]."""
    rows_n = np.asarray(slots, np.int32).reshape(-1)
    col = lambda idx: self.data[rows_n, idx[0] : idx[1]]
    return SlotData(
      tokens=col(self.tokens_idx),
      valid=col(self.valid_idx),
      lengths=col(self.length_idx)[:, 0],
      log_prob=self.log_prob[rows_n],
    )


def _result(stats: dict, valid_B, num_B) -> ResultTokens:
  data = jnp.stack([stats["token"], valid_B.astype(jnp.int32), num_B], axis=1)
  col = lambda k: stats[k][:, None].astype(jnp.float32)
  return ResultTokens(data, col("logprob"), col("sampling_logprob"), col("entropy"))


def default_buckets(max_prefill_length: int) -> tuple[int, ...]:
  """Powers of two from 16 up to, and always including, max_prefill_length."""
  out, b = [], 16
  while b < max_prefill_length:
    out.append(b)
    b *= 2
  return tuple(out) + (max_prefill_length,)


# ----------------------------------------------------------------------------- pure functions


def _finished(token, num, limit, eos_ids: tuple[int, ...]) -> jax.Array:
  hit_eos = jnp.isin(token, jnp.asarray(eos_ids, jnp.int32)) if eos_ids else False
  return hit_eos | (num >= limit)


def _first_tokens(
  cfg, graphdef, sampler, num_samples, dp, hidden_1xTxD, last, key_2
) -> tuple[dict[str, jax.Array], jax.Array]:
  """STATS of `num_samples` first tokens drawn from the logits at index `last`, and their
  keys (sample i uses fold_in(key, i) when there are several)."""
  del cfg
  # Only the last real position needs logits: never a [T, V] tensor.
  h_1xD = jax.lax.dynamic_index_in_dim(hidden_1xTxD[0], last, keepdims=True)
  logits_V = _head_logits(graphdef, dp, h_1xD)[0]
  if num_samples == 1:
    keys_Nx2 = key_2[None]
  else:
    fold = lambda i: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_2), i))
    keys_Nx2 = jax.vmap(fold)(jnp.arange(num_samples))
  logits_NxV = jnp.broadcast_to(logits_V, (num_samples,) + logits_V.shape)
  first = sampling.sample_with_stats(
    sampler, logits_NxV, keys_Nx2, jnp.zeros((num_samples,), jnp.int32)
  )
  return first, keys_Nx2


def _head_logits(graphdef, dp, h_NxD) -> jax.Array:
  w_DxV = model_lib.head(graphdef, dp.params)
  return jnp.einsum(
    "nd,dv->nv", h_NxD, w_DxV.astype(h_NxD.dtype), preferred_element_type=jnp.float32
  )


def _prefix_and_result(cache, true_length, first, keys_Nx2, max_new) -> tuple[Prefix, ResultTokens]:
  prefix = Prefix(cache, true_length, first, keys_Nx2, max_new)
  ones_N = jnp.ones((keys_Nx2.shape[0],), jnp.int32)
  return prefix, _result(first, ones_N, ones_N)


def _prefill_forward(cfg, graphdef, dp, tokens_NxT) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(hidden_NxTxD, stacked cache of batch N and length T) of N prompts padded to T."""
  N, T = tokens_NxT.shape
  positions_NxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (N, T))
  hidden_NxTxD, caches = _forward(
    graphdef, dp, tokens_NxT, positions_NxT, kv_cache.init_layer_caches(cfg, N, T)
  )
  return hidden_NxTxD, _stack(caches)


def prefill_fn(
  cfg, graphdef, sampler, num_samples, params, tokens_1xT, true_length, key_2, max_new
) -> tuple[Prefix, ResultTokens]:
  """Runs the padded prompt into a fresh length-T cache; samples the first token(s)."""
  dp = decode_params_fn(cfg, graphdef, params)
  hidden_1xTxD, cache = _prefill_forward(cfg, graphdef, dp, tokens_1xT)
  first, keys_Nx2 = _first_tokens(
    cfg, graphdef, sampler, num_samples, dp, hidden_1xTxD, true_length - 1, key_2
  )
  return _prefix_and_result(cache, true_length, first, keys_Nx2, max_new)


def prefill_batch_fn(
  cfg, graphdef, sampler, params, tokens_NxT, true_length_N, keys_Nx2, max_new_N
) -> tuple[Prefix, ResultTokens]:
  """N padded prompts (right-padded to one bucket T) in one forward into a fresh cache of
  batch N; row i's first token is drawn as `prefill_fn` draws it for prompt i alone
  (its key, step 0). Rows are independent: padding only follows each row's tokens."""
  dp = decode_params_fn(cfg, graphdef, params)
  hidden_NxTxD, cache = _prefill_forward(cfg, graphdef, dp, tokens_NxT)
  h_NxD = jnp.take_along_axis(hidden_NxTxD, (true_length_N - 1)[:, None, None], axis=1)[:, 0]
  N = tokens_NxT.shape[0]
  first = sampling.sample_with_stats(
    sampler, _head_logits(graphdef, dp, h_NxD), keys_Nx2, jnp.zeros((N,), jnp.int32)
  )
  return _prefix_and_result(cache, true_length_N, first, keys_Nx2, max_new_N)


def extend_fn(
  cfg,
  graphdef,
  sampler,
  num_samples,
  out_len,
  params,
  cache,
  old_length,
  tokens_1xT,
  true_length,
  key_2,
  max_new,
) -> tuple[Prefix, ResultTokens]:
  """Prefills `true_length` more tokens (padded to T) at positions old_length.. on top of
  an earlier prefix's cache (length Pc); the new prefix's cache has length out_len (a
  bucket >= old_length + true_length) and its true length is the sum.

  The work cache is Pc + T long (or out_len if longer), so the T padded positions always
  fit: dynamic_update_slice clamps an overflowing start, which would shift the keys.
  Stale slots past old_length are either overwritten here or lie beyond every query's
  position (the same invariant as prefill's padding)."""
  dp = decode_params_fn(cfg, graphdef, params)
  T, Pc = tokens_1xT.shape[1], kv_cache.cache_length(cache)
  work_len = max(Pc + T, out_len)
  axis = kv_cache.LENGTH_AXIS
  pad = lambda n, c: jnp.pad(
    c, [(0, work_len - Pc) if a == axis[n] else (0, 0) for a in range(c.ndim)]
  )
  positions_1xT = old_length + jnp.arange(T, dtype=jnp.int32)[None]
  hidden_1xTxD, work = _forward(
    graphdef, dp, tokens_1xT, positions_1xT, _unstack({n: pad(n, c) for n, c in cache.items()})
  )
  first, keys_Nx2 = _first_tokens(
    cfg, graphdef, sampler, num_samples, dp, hidden_1xTxD, true_length - 1, key_2
  )
  out_cache = {
    n: jax.lax.slice_in_dim(c, 0, out_len, axis=axis[n]) for n, c in _stack(work).items()
  }
  return _prefix_and_result(out_cache, old_length + true_length, first, keys_Nx2, max_new)


def insert_fn(eos_ids, prefix: Prefix, state: DecodeState, slot, sample) -> DecodeState:
  """Writes sample `sample` of `prefix` into slot `slot` (both traced: one compile)."""
  put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(
    buf, jnp.asarray(x).astype(buf.dtype), slot, 0
  )
  pick = lambda x: jax.lax.dynamic_index_in_dim(x, sample, keepdims=False)
  N = prefix.keys_Nx2.shape[0]
  per_row = lambda x: pick(jnp.broadcast_to(x, (N,)))  # scalar (one prompt) or [N]
  first = {k: pick(v) for k, v in prefix.first.items()}
  # A one-prompt prefix shares cache row 0 among its samples; a batched one has a row each.
  row = sample if prefix.cache["k"].shape[1] > 1 else 0
  take = lambda p: jax.lax.dynamic_slice_in_dim(p, row, 1, axis=0)
  # Stale entries past the prompt need no clearing: queries never see slots > position.
  cache = {
    n: tuple(
      jax.lax.dynamic_update_slice(c, take(p).astype(c.dtype), (slot, 0, 0, 0))
      for c, p in zip(state.cache[n], prefix.cache[n])
    )
    for n in ("k", "v")
  }
  max_new, true_length = per_row(prefix.max_new), per_row(prefix.true_length)
  out = {
    k: put(state.out[k], jnp.zeros(state.out[k].shape[1:], state.out[k].dtype).at[0].set(first[k]))
    for k in STATS
  }
  done = _finished(first["token"], 1, max_new, eos_ids)
  return DecodeState(
    cache=cache,
    tokens_B=put(state.tokens_B, first["token"]),
    pos_B=put(state.pos_B, true_length),
    num_B=put(state.num_B, 1),
    limit_B=put(state.limit_B, max_new),
    done_B=put(state.done_B, done),
    keys_Bx2=put(state.keys_Bx2, pick(prefix.keys_Nx2)),
    out=out,
  )


def insert_many_fn(
  eos_ids, prefix: Prefix, state: DecodeState, slots_M, samples_M, count
) -> DecodeState:
  """`insert_fn` for i < count: sample samples_M[i] of `prefix` into slot slots_M[i], in
  one call (a loop over the traced count: one compile per prefix shape and M)."""
  body = lambda i, s: insert_fn(eos_ids, prefix, s, slots_M[i], samples_M[i])
  return jax.lax.fori_loop(0, count, body, state)


def decode_step(
  cfg, graphdef, sampler, eos_ids, params, state: DecodeState
) -> tuple[DecodeState, ResultTokens]:
  """One token for every slot; finished/empty slots compute but change nothing."""
  dp = decode_params_fn(cfg, graphdef, params)
  tokens_Bx1, pos_Bx1 = state.tokens_B[:, None], state.pos_B[:, None]
  logits_Bx1xV, cache = _forward(graphdef, dp, tokens_Bx1, pos_Bx1, state.cache, head=True)
  stats = sampling.sample_with_stats(sampler, logits_Bx1xV[:, 0], state.keys_Bx2, state.num_B)
  active_B = ~state.done_B
  # Each active row writes its column num_B (a select over the small [B, R] buffers:
  # one fused pass, where a gather + scatter per buffer cost more on CPU).
  R = state.out["token"].shape[1]
  write_BxR = active_B[:, None] & (jnp.arange(R)[None] == jnp.minimum(state.num_B, R - 1)[:, None])
  out = {
    k: jnp.where(write_BxR, stats[k].astype(buf.dtype)[:, None], buf)
    for k, buf in state.out.items()
  }
  num_B = state.num_B + active_B
  done_B = state.done_B | _finished(stats["token"], num_B, state.limit_B, eos_ids)
  new = state.replace(
    cache=cache,
    tokens_B=jnp.where(active_B, stats["token"], state.tokens_B),
    pos_B=state.pos_B + active_B,
    num_B=num_B,
    done_B=done_B,
    out=out,
  )
  return new, _result(stats, active_B, num_B)


def generate_fn(cfg, graphdef, sampler, eos_ids, params, state) -> tuple[DecodeState, ResultTokens]:
  return decode_step(cfg, graphdef, sampler, eos_ids, params, state)


def generate_steps_fn(
  cfg, graphdef, sampler, eos_ids, num_steps, params, state, stop_free=None, phases=1
) -> DecodeState:
  """Up to num_steps decode steps in one jit; stops early once `stop_free` slots (traced;
  default all) are done, so the host can refill freed slots without waiting for the rest.
  num_steps may be traced (the engine passes it so: one compile for every count). Given
  plain params, the blocks are split per layer once here, not per token.

  phases > 1 runs the loop in phases over growing views of the cache
  (`kv_cache.view_lengths`): while every active slot's position is below a phase's length n, the
  steps attend over the first n slots only, so early tokens do not read the cache's empty
  tail. A phase copies its n slots out of the cache and back once (lossless: slots past n
  are untouched, and a finished slot's stale entries are never read); a phase no active
  slot fits runs no step. Each phase is a copy of the loop body in the program."""
  dp = decode_params_fn(cfg, graphdef, params)
  B = state.done_B.shape[0]
  stop_free = B if stop_free is None else stop_free

  def cond_within(n=None) -> Callable:
    def cond(carry) -> jax.Array:
      i, s = carry
      go = (i < num_steps) & (jnp.sum(s.done_B) < stop_free)
      if n is None:  # the whole cache: every position fits
        return go
      return go & (jnp.max(jnp.where(s.done_B, 0, s.pos_B)) < n)  # the active slots

    return cond

  def body(carry) -> tuple[jax.Array, DecodeState]:
    i, s = carry
    return i + 1, decode_step(cfg, graphdef, sampler, eos_ids, dp, s)[0]

  S = state.cache["v"][0].shape[kv_cache.LENGTH_AXIS["v"] - 1]
  i = jnp.int32(0)
  for n in kv_cache.view_lengths(S, phases)[:-1]:
    i, part = jax.lax.while_loop(
      cond_within(n), body, (i, state.replace(cache=kv_cache.first_slots(state.cache, n)))
    )
    state = part.replace(cache=kv_cache.put_first_slots(state.cache, part.cache))
  return jax.lax.while_loop(cond_within(), body, (i, state))[1]


def init_state_fn(cfg, batch: int, cache_len: int, max_decode: int) -> DecodeState:
  """All slots empty (done), zeroed cache and buffers."""
  zeros = lambda shape, dt=jnp.int32: jnp.zeros(shape, dt)
  out = {k: zeros((batch, max_decode), jnp.int32 if k == "token" else jnp.float32) for k in STATS}
  return DecodeState(
    cache=kv_cache.init_layer_caches(cfg, batch, cache_len),
    tokens_B=zeros(batch),
    pos_B=zeros(batch),
    num_B=zeros(batch),
    limit_B=zeros(batch),
    done_B=jnp.ones((batch,), bool),
    keys_Bx2=zeros((batch, 2), jnp.uint32),
    out=out,
  )
