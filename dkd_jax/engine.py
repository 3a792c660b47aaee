"""Generation engine for the dkd_jax decoder, with the JetStream engine API.

prefill (one prompt, padded to a length bucket) -> insert (into a decode slot,
traced slot index) -> generate (one token for every slot) — the accelerator
half of continuous batching; `rollout.py` is the host loop that drives it.

Contracts:
- params are an argument of every call, jitted with `in_shardings` = the params'
  own shardings: never copied, resharded or donated (a mis-sharded params tree is
  an error, not a silent transfer). Only the decode state is donated.
- One compile per prefill bucket (prefill, insert), one per sampler (generate);
  slot indices, true lengths, seeds and per-request length limits are traced.
- `ResultTokens.log_prob` holds the model's temperature-1 log-prob of the emitted
  token; `sampling_log_prob` the log-prob under the distribution actually sampled
  from; `entropy` the model's temperature-1 entropy at that step.
- Cache slot s of a sequence holds the token at position s. Prefill writes the
  padded bucket 0..Pb-1; decode at position true_length overwrites the padding
  before any query can see it (queries attend to slots <= their position).

When `jetstream` is importable, `Engine` subclasses `jetstream.engine.engine_api.Engine`;
`JETSTREAM_IMPORT_ERROR` says why it is not (see BUILD_NOTES.md).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding

from dkd_jax import model as model_lib
from dkd_jax import sampling
from dkd_jax import sharding as sharding_lib


def _import_jetstream():
  """(engine_api module or None, error string). google-jetstream 0.2.2 sets the root
  logger to DEBUG on import; the previous level is restored."""
  root_level = logging.getLogger().level
  try:
    from jetstream.engine import engine_api  # pylint: disable=import-outside-toplevel
    return engine_api, None
  except ImportError as e:
    return None, f"{type(e).__name__}: {e}"
  finally:
    logging.getLogger().setLevel(root_level)


jetstream_api, JETSTREAM_IMPORT_ERROR = _import_jetstream()
_EngineBase = jetstream_api.Engine if jetstream_api is not None else object
STATS = ("token", "logprob", "sampling_logprob", "entropy")


@struct.dataclass
class Prefix:
  """One prefilled prompt: its KV cache [L, 1, Pb, K, Dh] and N sampled first tokens."""
  cache: dict
  true_length: jax.Array      # int32 []
  first: dict                 # STATS -> [N]
  keys_Nx2: jax.Array         # per-sample request keys (uint32)
  max_new: jax.Array          # int32 [], this request's response-length limit


@struct.dataclass
class DecodeState:
  """Everything `generate` transforms, indexed by slot b. tokens_B is the last sampled
  token (not yet in the cache) and pos_B its position; out[k] are [B, R] buffers
  indexed by response step; done_B is True for finished and empty slots."""
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
  log_prob: jax.Array           # [B, 1] model log-prob at temperature 1
  sampling_log_prob: jax.Array  # [B, 1] under the sampling distribution used
  entropy: jax.Array            # [B, 1] model entropy at temperature 1
  tokens_idx: tuple = struct.field(pytree_node=False, default=(0, 1))
  valid_idx: tuple = struct.field(pytree_node=False, default=(1, 2))
  length_idx: tuple = struct.field(pytree_node=False, default=(2, 3))
  samples_per_slot: int = struct.field(pytree_node=False, default=1)

  def copy_to_host_async(self):
    for x in (self.data, self.log_prob, self.sampling_log_prob, self.entropy):
      if isinstance(x, jax.Array):
        x.copy_to_host_async()

  def convert_to_numpy(self) -> "ResultTokens":
    return jax.tree.map(np.asarray, self)

  def get_result_at_slot(self, slot: int) -> SlotData:
    rows = slice(slot * self.samples_per_slot, (slot + 1) * self.samples_per_slot)
    col = lambda idx: self.data[rows, idx[0]:idx[1]]
    return SlotData(tokens=col(self.tokens_idx), valid=col(self.valid_idx),
                    lengths=col(self.length_idx)[:, 0], log_prob=self.log_prob[rows])


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

def _finished(token, num, limit, eos_ids: tuple[int, ...]):
  hit_eos = jnp.isin(token, jnp.asarray(eos_ids, jnp.int32)) if eos_ids else False
  return hit_eos | (num >= limit)


def prefill_fn(cfg, graphdef, sampler, num_samples, params, tokens_1xT, true_length, key_2,
               max_new):
  """Runs the padded prompt into a fresh [L,1,T,K,Dh] cache; samples the first token(s)."""
  T = tokens_1xT.shape[1]
  positions_1xT = jnp.arange(T, dtype=jnp.int32)[None]
  hidden_1xTxD, cache = model_lib.apply(graphdef, params, tokens_1xT, positions_1xT,
                                        model_lib.init_cache(cfg, 1, T))
  # Only the last real position needs logits: never a [T, V] tensor.
  h_D = jax.lax.dynamic_index_in_dim(hidden_1xTxD[0], true_length - 1, keepdims=False)
  w_DxV = model_lib.head(graphdef, params)
  logits_V = jnp.einsum("d,dv->v", h_D, w_DxV.astype(h_D.dtype),
                        preferred_element_type=jnp.float32)
  if num_samples == 1:
    keys_Nx2 = key_2[None]
  else:
    fold = lambda i: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_2), i))
    keys_Nx2 = jax.vmap(fold)(jnp.arange(num_samples))
  logits_NxV = jnp.broadcast_to(logits_V, (num_samples,) + logits_V.shape)
  first = sampling.sample_with_stats(sampler, logits_NxV, keys_Nx2,
                                     jnp.zeros((num_samples,), jnp.int32))
  prefix = Prefix(cache, true_length, first, keys_Nx2, max_new)
  ones_N = jnp.ones((num_samples,), jnp.int32)
  return prefix, _result(first, ones_N, ones_N)


def insert_fn(eos_ids, prefix: Prefix, state: DecodeState, slot, sample) -> DecodeState:
  """Writes sample `sample` of `prefix` into slot `slot` (both traced: one compile)."""
  put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(
      buf, jnp.asarray(x).astype(buf.dtype), slot, 0)
  pick = lambda x: jax.lax.dynamic_index_in_dim(x, sample, keepdims=False)
  first = {k: pick(v) for k, v in prefix.first.items()}
  # Stale entries past the prompt need no clearing: queries never see slots > position.
  cache = {n: jax.lax.dynamic_update_slice(
      state.cache[n], prefix.cache[n].astype(state.cache[n].dtype), (0, slot, 0, 0, 0))
           for n in ("k", "v")}
  out = {k: put(state.out[k], jnp.zeros(state.out[k].shape[1:], state.out[k].dtype)
                .at[0].set(first[k])) for k in STATS}
  done = _finished(first["token"], 1, prefix.max_new, eos_ids)
  return DecodeState(cache=cache, tokens_B=put(state.tokens_B, first["token"]),
                     pos_B=put(state.pos_B, prefix.true_length), num_B=put(state.num_B, 1),
                     limit_B=put(state.limit_B, prefix.max_new), done_B=put(state.done_B, done),
                     keys_Bx2=put(state.keys_Bx2, pick(prefix.keys_Nx2)), out=out)


def decode_step(cfg, graphdef, sampler, eos_ids, params, state: DecodeState):
  """One token for every slot; finished/empty slots compute but change nothing."""
  del cfg
  logits_Bx1xV, cache = model_lib.logits(graphdef, params, state.tokens_B[:, None],
                                         state.pos_B[:, None], state.cache)
  stats = sampling.sample_with_stats(sampler, logits_Bx1xV[:, 0], state.keys_Bx2, state.num_B)
  active_B = ~state.done_B
  rows_B = jnp.arange(state.num_B.shape[0])
  idx_B = jnp.minimum(state.num_B, state.out["token"].shape[1] - 1)
  out = {k: buf.at[rows_B, idx_B].set(
      jnp.where(active_B, stats[k].astype(buf.dtype), buf[rows_B, idx_B]))
         for k, buf in state.out.items()}
  num_B = state.num_B + active_B
  done_B = state.done_B | _finished(stats["token"], num_B, state.limit_B, eos_ids)
  new = state.replace(cache=cache, tokens_B=jnp.where(active_B, stats["token"], state.tokens_B),
                      pos_B=state.pos_B + active_B, num_B=num_B, done_B=done_B, out=out)
  return new, _result(stats, active_B, num_B)


def generate_fn(cfg, graphdef, sampler, eos_ids, params, state):
  return decode_step(cfg, graphdef, sampler, eos_ids, params, state)


def generate_steps_fn(cfg, graphdef, sampler, eos_ids, num_steps, params, state):
  """Up to num_steps decode steps in one jit; stops early once every slot is done."""
  def cond(carry):
    i, s = carry
    return (i < num_steps) & ~jnp.all(s.done_B)

  def body(carry):
    i, s = carry
    return i + 1, decode_step(cfg, graphdef, sampler, eos_ids, params, s)[0]

  return jax.lax.while_loop(cond, body, (jnp.int32(0), state))[1]


def init_state_fn(cfg, batch: int, cache_len: int, max_decode: int) -> DecodeState:
  """All slots empty (done), zeroed cache and buffers."""
  zeros = lambda shape, dt=jnp.int32: jnp.zeros(shape, dt)
  out = {k: zeros((batch, max_decode), jnp.int32 if k == "token" else jnp.float32)
         for k in STATS}
  return DecodeState(cache=model_lib.init_cache(cfg, batch, cache_len), tokens_B=zeros(batch),
                     pos_B=zeros(batch), num_B=zeros(batch), limit_B=zeros(batch),
                     done_B=jnp.ones((batch,), bool), keys_Bx2=zeros((batch, 2), jnp.uint32),
                     out=out)


# ----------------------------------------------------------------------------- the engine

class Engine(_EngineBase):
  """Continuous-batching engine: `max_concurrent_decodes` slots over one KV cache of
  length max_prefill_length + max_decode_length. Stateless apart from compiled
  functions; the decode state is a pytree the caller threads through."""

  def __init__(self, cfg: model_lib.ModelConfig, graphdef, *, max_concurrent_decodes: int,
               max_prefill_length: int, max_decode_length: int, mesh=None,
               eos_ids: Sequence[int] = (), prefill_buckets: Sequence[int] | None = None,
               param_shardings=None, sampler: sampling.Sampler = sampling.GREEDY):
    self.cfg, self.graphdef = cfg.validate(), graphdef
    for name, v in (("max_concurrent_decodes", max_concurrent_decodes),
                    ("max_prefill_length", max_prefill_length),
                    ("max_decode_length", max_decode_length)):
      if int(v) < 1:
        raise ValueError(f"Engine.{name}={v} must be >= 1")
    self._B, self._P, self.max_decode_length = (int(max_concurrent_decodes),
                                                int(max_prefill_length), int(max_decode_length))
    if self._P + self.max_decode_length > cfg.max_seq_len:
      raise ValueError(f"max_prefill_length + max_decode_length = "
                       f"{self._P + self.max_decode_length} exceeds model.max_seq_len="
                       f"{cfg.max_seq_len}")
    self.buckets = tuple(sorted(set(prefill_buckets or default_buckets(self._P))))
    if self.buckets[-1] != self._P or self.buckets[0] < 1:
      raise ValueError(f"prefill_buckets={self.buckets} must be >= 1 and end at "
                       f"max_prefill_length={self._P}")
    self.eos_ids = tuple(int(e) for e in eos_ids)
    self.default_sampler = sampler
    self._mesh = mesh if mesh is not None else sharding_lib.make_mesh((1, 1, 1))
    self.param_shardings = (param_shardings if param_shardings is not None
                            else model_lib.param_shardings(self._mesh, cfg))
    self._build_shardings()
    self._jits: dict[tuple, Any] = {}

  # -- shardings -------------------------------------------------------------------------
  def _build_shardings(self):
    mesh, B, S = self._mesh, self._B, self._P + self.max_decode_length
    rep = sharding_lib.replicated(mesh)
    b1, b2 = sharding_lib.batch_sharding(mesh, 1), sharding_lib.batch_sharding(mesh, 2)
    self.state_shardings = DecodeState(
        cache=model_lib.cache_shardings(mesh, self.cfg, B, S), tokens_B=b1, pos_B=b1, num_B=b1,
        limit_B=b1, done_B=b1, keys_Bx2=b2, out={k: b2 for k in STATS})
    # A prefix has batch 1: replicated over the batch axes, kv heads still over 'tensor'.
    shape = (self.cfg.n_layers, 1, self.buckets[0], self.cfg.n_kv_heads, self.cfg.head_dim)
    kv = sharding_lib.named_sharding(
        mesh, ("layers", None, "cache_length", "kv_heads", "head_dim"), shape, "prefix_cache")
    self.prefix_shardings = Prefix(cache={"k": kv, "v": kv}, true_length=rep,
                                   first={k: rep for k in STATS}, keys_Nx2=rep, max_new=rep)
    self._rep = rep
    self._result_shardings = ResultTokens(b2, b2, b2, b2)
    self._result_rep = ResultTokens(rep, rep, rep, rep)

  # -- compiled functions (cached per static configuration) -------------------------------
  def _jit(self, name: str, *static):
    key = (name,) + static
    if key not in self._jits:
      self._jits[key] = self._make_jit(name, *static)
    return self._jits[key]

  def _make_jit(self, name, *static):
    cfg, gd, eos, ps, ss, rep = (self.cfg, self.graphdef, self.eos_ids, self.param_shardings,
                                 self.state_shardings, self._rep)
    if name == "prefill":
      sampler, n = static
      return jax.jit(functools.partial(prefill_fn, cfg, gd, sampler, n),
                     in_shardings=(ps, rep, rep, rep, rep),
                     out_shardings=(self.prefix_shardings, self._result_rep))
    if name == "insert":
      return jax.jit(functools.partial(insert_fn, eos),
                     in_shardings=(self.prefix_shardings, ss, rep, rep),
                     out_shardings=ss, donate_argnums=1)
    if name == "generate":
      return jax.jit(functools.partial(generate_fn, cfg, gd, static[0], eos),
                     in_shardings=(ps, ss), out_shardings=(ss, self._result_shardings),
                     donate_argnums=1)
    if name == "generate_steps":
      return jax.jit(functools.partial(generate_steps_fn, cfg, gd, static[0], eos, static[1]),
                     in_shardings=(ps, ss), out_shardings=ss, donate_argnums=1)
    if name == "init":
      return jax.jit(functools.partial(init_state_fn, cfg, self._B,
                                       self._P + self.max_decode_length, self.max_decode_length),
                     out_shardings=ss)
    raise KeyError(name)

  def compile_counts(self) -> dict[str, int]:
    """Number of compiled executables per jitted function (for recompilation checks)."""
    return {"/".join(map(str, k)): f._cache_size() for k, f in self._jits.items()}

  # -- JetStream API -----------------------------------------------------------------------
  def bucket_for(self, n: int) -> int:
    """Smallest prefill bucket >= n; a prompt longer than max_prefill_length is an error."""
    if n > self._P:
      raise ValueError(f"prompt of {n} tokens exceeds max_prefill_length={self._P}; "
                       "raise it or truncate the prompt (rollout(truncate_prompts=True))")
    return next(b for b in self.buckets if b >= n)

  def pad_to_bucket(self, tokens, pad_id: int = 0) -> tuple[np.ndarray, int]:
    """(padded_tokens [Pb] int32, true_length) for one unpadded prompt."""
    tokens = np.asarray(tokens, np.int32).reshape(-1)
    out = np.full((self.bucket_for(len(tokens)),), pad_id, np.int32)
    out[:len(tokens)] = tokens
    return out, len(tokens)

  def init_decode_state(self, *args, **kwargs) -> DecodeState:
    del args, kwargs
    return self._jit("init")()

  def prefill(self, *, params, existing_prefix=None, padded_tokens, true_length: int,
              sampler: sampling.Sampler | None = None, request_id=None, rng=None,
              max_new_tokens: int | None = None) -> tuple[Prefix, ResultTokens]:
    """Prefills one prompt. rng: int seed or raw uint32[2] key of this request (default 0);
    max_new_tokens: this request's response limit (default max_decode_length)."""
    return self._prefill(params, existing_prefix, padded_tokens, true_length, sampler, rng,
                         max_new_tokens, 1)

  def prefill_multisampling(self, *, params, existing_prefix=None, padded_tokens,
                            true_length: int, sampler=None, num_samples: int, request_id=None,
                            rng=None, max_new_tokens=None) -> tuple[Prefix, ResultTokens]:
    """One prefill, `num_samples` first tokens (sample i uses fold_in(rng key, i));
    put them in slots with `bulk_insert`."""
    del request_id
    return self._prefill(params, existing_prefix, padded_tokens, true_length, sampler, rng,
                         max_new_tokens, int(num_samples))

  def _prefill(self, params, existing_prefix, padded_tokens, true_length, sampler, rng,
               max_new_tokens, num_samples):
    if existing_prefix is not None:
      raise NotImplementedError("existing_prefix (prefix caching) is not supported")
    tokens = np.asarray(padded_tokens, np.int32).reshape(-1)
    true_length = int(true_length)
    if true_length < 1:
      raise ValueError("empty prompt (true_length=0): a prompt needs at least one token")
    if true_length > len(tokens):
      raise ValueError(f"true_length={true_length} > len(padded_tokens)={len(tokens)}")
    padded, _ = self.pad_to_bucket(tokens[:true_length])
    max_new = self.max_decode_length if max_new_tokens is None else int(max_new_tokens)
    if not 1 <= max_new <= self.max_decode_length:
      raise ValueError(f"max_new_tokens={max_new} must be in [1, max_decode_length="
                       f"{self.max_decode_length}]")
    key = np.asarray(sampling.request_key(0 if rng is None else rng) if np.ndim(rng) == 0
                     else rng, np.uint32)
    fn = self._jit("prefill", sampler or self.default_sampler, num_samples)
    return fn(params, padded[None], np.int32(true_length), key, np.int32(max_new))

  def insert(self, prefix: Prefix, decode_state: DecodeState, slot: int,
             sample_index: int = 0) -> DecodeState:
    if not 0 <= int(slot) < self._B:
      raise ValueError(f"slot={slot} out of range [0, {self._B})")
    return self._jit("insert")(prefix, decode_state, np.int32(slot), np.int32(sample_index))

  def bulk_insert(self, prefix: Prefix, decode_state: DecodeState,
                  slots: Sequence[int]) -> DecodeState:
    """Sample i of a (multisampling) prefix goes to slots[i]."""
    for i, slot in enumerate(slots):
      decode_state = self.insert(prefix, decode_state, slot, i)
    return decode_state

  def generate(self, params, decode_state: DecodeState, sampler=None
               ) -> tuple[DecodeState, ResultTokens]:
    return self._jit("generate", sampler or self.default_sampler)(params, decode_state)

  def generate_steps(self, params, decode_state: DecodeState, num_steps: int,
                     sampler=None) -> DecodeState:
    """num_steps decode steps in one call (host sync only after), early exit when all done."""
    return self._jit("generate_steps", sampler or self.default_sampler,
                     int(num_steps))(params, decode_state)

  def free_resource(self, slot: int) -> None:
    del slot  # a dense cache: nothing to free; the next insert overwrites the slot

  def load_params(self, *args, seed: int = 0, **kwargs):
    """Random init into the engine's shardings (checkpoints load elsewhere)."""
    del args, kwargs
    return model_lib.init_params(self.cfg, self._mesh, seed)[1]

  def get_prefix_destination_sharding(self) -> Prefix:
    return self.prefix_shardings

  def get_tokenizer(self):
    raise NotImplementedError("tokenizers live in dkd_jax.data (Tokenizer protocol), "
                              "not in the engine")

  @property
  def max_concurrent_decodes(self) -> int:
    return self._B

  @property
  def max_prefill_length(self) -> int:
    return self._P

  @property
  def samples_per_slot(self) -> int:
    return 1

  @property
  def mesh(self):
    return self._mesh

  @property
  def colocated_cpus(self):
    return None

  @property
  def use_chunked_prefill(self) -> bool:
    return False

  @property
  def prefill_chunk_size(self) -> int:
    return self._P
