"""Generation engine for the dkd_jax decoder, with the JetStream engine API.

prefill (one prompt, padded to a length bucket) -> insert (into a decode slot,
traced slot index) -> generate (one token for every slot) — the accelerator
half of continuous batching; `rollout.py` is the host loop that drives it.

Contracts:
- params are an argument of every call, jitted with `in_shardings` = the params'
  own shardings: never copied, resharded or donated (a mis-sharded params tree is
  an error, not a silent transfer). Only the decode state is donated. Every call also
  takes `DecodeParams` (`Engine.decode_params(params)`: the blocks split per layer once,
  which a rollout does once); given plain params, a call splits them itself.
- One compile per prefill bucket (prefill, insert; batched prefill and its inserts:
  per bucket and number of prompts), one per sampler (generate, generate_steps: its step
  count is traced);
  slot indices, true lengths, seeds and per-request length limits are traced. A
  sampler is a `sampling.Sampler` or a hashable function of the logits (upstream's
  `Callable`); either is a static argument, so the compile cache is keyed by it.
- Prefix caching and chunked prefill share one pure function (`extend_fn`): more
  tokens prefilled on top of an earlier prefix's cache, one compile per (existing
  cache length, new-token bucket, result bucket).
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
import os
from collections.abc import Callable
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from dkd_jax.core import sharding as sharding_lib
from dkd_jax.data.protocols import Tokenizer
from dkd_jax.generate import requests
from dkd_jax.generate import sampling

# The pytrees and pure functions live in generate.decode_state; re-exported here for callers.
from dkd_jax.generate.decode_state import STATS
from dkd_jax.generate.decode_state import DecodeParams
from dkd_jax.generate.decode_state import DecodeState
from dkd_jax.generate.decode_state import ExistingPrefix  # noqa: F401
from dkd_jax.generate.decode_state import Prefix
from dkd_jax.generate.decode_state import ResultTokens
from dkd_jax.generate.decode_state import SlotData  # noqa: F401
from dkd_jax.generate.decode_state import decode_params_fn
from dkd_jax.generate.decode_state import decode_step  # noqa: F401
from dkd_jax.generate.decode_state import default_buckets
from dkd_jax.generate.decode_state import extend_fn
from dkd_jax.generate.decode_state import generate_fn
from dkd_jax.generate.decode_state import generate_steps_fn
from dkd_jax.generate.decode_state import init_state_fn
from dkd_jax.generate.decode_state import insert_fn
from dkd_jax.generate.decode_state import insert_many_fn
from dkd_jax.generate.decode_state import prefill_batch_fn
from dkd_jax.generate.decode_state import prefill_fn
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import hf
from dkd_jax.models import kv_cache


def _import_jetstream() -> tuple[ModuleType | None, str | None]:
  """(engine_api module or None, error string). google-jetstream 0.2.2 sets the root
  logger to DEBUG on import; the previous level is restored."""
  root_level = logging.getLogger().level
  try:
    from jetstream.engine import engine_api

    return engine_api, None
  except ImportError as e:
    return None, f"{type(e).__name__}: {e}"
  finally:
    logging.getLogger().setLevel(root_level)


jetstream_api, JETSTREAM_IMPORT_ERROR = _import_jetstream()
_EngineBase = jetstream_api.Engine if jetstream_api is not None else object


# ----------------------------------------------------------------------------- the engine

# Jitted functions by (name, static arguments, Engine._identity()): shared by every engine
# of one configuration, so a second engine (a second evaluation) compiles nothing.
_SHARED_JITS: dict[tuple, Any] = {}

# (path, model config, mesh, param shardings, step or None) -> params in those shardings.
CheckpointLoader = Callable[[Any, model_lib.ModelConfig, Any, Any, "int | None"], Any]


class Engine(_EngineBase):
  """Continuous-batching engine: `max_concurrent_decodes` slots over one KV cache of
  length max_prefill_length + max_decode_length. Stateless apart from compiled
  functions; the decode state is a pytree the caller threads through.

  tokenizer: optional (`dkd_jax.data.protocols.Tokenizer`), returned by get_tokenizer.
  prefill_chunk_size: None = one-shot prefill; n = prompts longer than n tokens are
  prefilled n tokens at a time, each chunk extending the cache (same results).
  decode_phases: `generate_steps` attends over growing views of the cache, in this many
  phases (`kv_cache.view_lengths`): same tokens, fewer cache reads while the
  sequences are short, one more copy of the decode loop to compile per phase. At
  SmolLM2-135M shapes (B=16, 160 slots) 2 phases decode 2.9% faster per token than 1 and
  4 phases 4.8%, for 2.9 s and 8.9 s more compile (BUILD_NOTES, issue 21, session 7)."""

  def __init__(
    self,
    cfg: model_lib.ModelConfig,
    graphdef,
    *,
    max_concurrent_decodes: int,
    max_prefill_length: int,
    max_decode_length: int,
    mesh=None,
    eos_ids: Sequence[int] = (),
    prefill_buckets: Sequence[int] | None = None,
    param_shardings=None,
    sampler: sampling.Sampler | Callable = sampling.GREEDY,
    tokenizer=None,
    prefill_chunk_size: int | None = None,
    checkpoint_loader: CheckpointLoader | None = None,
    decode_phases: int = 2,
  ):
    self.cfg, self.graphdef = cfg.validate(), graphdef
    self.checkpoint_loader = checkpoint_loader
    for name, v in (
      ("max_concurrent_decodes", max_concurrent_decodes),
      ("max_prefill_length", max_prefill_length),
      ("max_decode_length", max_decode_length),
    ):
      if int(v) < 1:
        raise ValueError(f"Engine.{name}={v} must be >= 1")
    self._B, self._P, self.max_decode_length = (
      int(max_concurrent_decodes),
      int(max_prefill_length),
      int(max_decode_length),
    )
    if self._P + self.max_decode_length > cfg.max_seq_len:
      raise ValueError(
        f"max_prefill_length + max_decode_length = "
        f"{self._P + self.max_decode_length} exceeds model.max_seq_len="
        f"{cfg.max_seq_len}"
      )
    self.buckets = tuple(sorted(set(prefill_buckets or default_buckets(self._P))))
    if self.buckets[-1] != self._P or self.buckets[0] < 1:
      raise ValueError(
        f"prefill_buckets={self.buckets} must be >= 1 and end at max_prefill_length={self._P}"
      )
    self.eos_ids = tuple(int(e) for e in eos_ids)
    self.default_sampler = sampling.check_sampler(sampler)
    self.tokenizer = tokenizer
    if prefill_chunk_size is not None and not 1 <= int(prefill_chunk_size) <= self._P:
      raise ValueError(
        f"prefill_chunk_size={prefill_chunk_size} must be in [1, "
        f"max_prefill_length={self._P}] (None turns chunking off)"
      )
    self._chunk = None if prefill_chunk_size is None else int(prefill_chunk_size)
    if not isinstance(decode_phases, int) or decode_phases < 1:
      raise ValueError(f"Engine.decode_phases={decode_phases!r} must be an int >= 1")
    self.decode_phases = decode_phases
    self._mesh = mesh if mesh is not None else sharding_lib.make_mesh((1, 1, 1))
    self.param_shardings = (
      param_shardings if param_shardings is not None else model_lib.param_shardings(self._mesh, cfg)
    )
    self._build_shardings()
    self._jits: dict[tuple, Any] = {}

  # -- shardings -------------------------------------------------------------------------
  def _build_shardings(self) -> None:
    mesh, B, S = self._mesh, self._B, self._P + self.max_decode_length
    rep = sharding_lib.replicated(mesh)
    b1, b2 = sharding_lib.batch_sharding(mesh, 1), sharding_lib.batch_sharding(mesh, 2)
    self.state_shardings = DecodeState(
      cache=kv_cache.cache_shardings(mesh, self.cfg, B, S, per_layer=True),
      tokens_B=b1,
      pos_B=b1,
      num_B=b1,
      limit_B=b1,
      done_B=b1,
      keys_Bx2=b2,
      out={k: b2 for k in STATS},
    )
    # A prefix (one prompt, or N from prefill_batch): replicated over the batch axes, kv
    # heads still over 'tensor'.
    kv = kv_cache.cache_shardings(mesh, self.cfg, 1, self.buckets[0], shard_batch=False)
    self.prefix_shardings = Prefix(
      cache=kv, true_length=rep, first={k: rep for k in STATS}, keys_Nx2=rep, max_new=rep
    )
    self._rep = rep
    # DecodeParams' per-layer weights: the stacked sharding minus the 'layers' axis and
    # minus FSDP, so a rollout gathers the FSDP shards once (in `decode_params`) instead
    # of every token all-gathering every layer's weights; 'tensor' sharding stays.
    per_layer = {
      n: sharding_lib.without_axis(s, "fsdp", drop_leading=True)
      for n, s in self.param_shardings["layers"].items()
    }
    self.decode_param_shardings = DecodeParams(
      self.param_shardings, (per_layer,) * self.cfg.n_layers
    )
    self._result_shardings = ResultTokens(b2, b2, b2, b2)
    self._result_rep = ResultTokens(rep, rep, rep, rep)

  # -- compiled functions (cached per static configuration) -------------------------------
  def _jit(self, name: str, *static, params=None) -> Callable:
    """The jitted `name` for these static arguments and this kind of params (plain or
    `DecodeParams`: their shardings differ)."""
    decode = isinstance(params, DecodeParams)
    key = (name,) + static + (("decode_params",) if decode else ())
    if key not in self._jits:
      # Engines of one configuration share their jitted functions (a run's evaluation
      # builds an engine per call: it would otherwise compile everything again).
      shared = key + self._identity()
      if shared not in _SHARED_JITS:
        _SHARED_JITS[shared] = self._make_jit(name, *static, decode=decode)
      self._jits[key] = _SHARED_JITS[shared]
    return self._jits[key]

  def _identity(self) -> tuple:
    """Everything the compiled functions depend on besides their static arguments."""
    leaves, tree = jax.tree.flatten(self.param_shardings)
    return (
      self.cfg,
      self.graphdef,
      self.eos_ids,
      self._B,
      self._P,
      self.max_decode_length,
      self.buckets,
      self.decode_phases,
      self._mesh,
      tuple(leaves),
      tree,
    )

  def _make_jit(self, name, *static, decode=False) -> Callable:
    ps = self.decode_param_shardings if decode else self.param_shardings
    cfg, gd, eos, ss, rep = (self.cfg, self.graphdef, self.eos_ids, self.state_shardings, self._rep)
    if name == "prefill":
      sampler, n = static
      return jax.jit(
        functools.partial(prefill_fn, cfg, gd, sampler, n),
        in_shardings=(ps, rep, rep, rep, rep),
        out_shardings=(self.prefix_shardings, self._result_rep),
      )
    if name == "prefill_batch":
      return jax.jit(
        functools.partial(prefill_batch_fn, cfg, gd, static[0]),
        in_shardings=(ps, rep, rep, rep, rep),
        out_shardings=(self.prefix_shardings, self._result_rep),
      )
    if name == "extend":
      sampler, n, out_len = static
      return jax.jit(
        functools.partial(extend_fn, cfg, gd, sampler, n, out_len),
        in_shardings=(ps, self.prefix_shardings.cache, rep, rep, rep, rep, rep),
        out_shardings=(self.prefix_shardings, self._result_rep),
      )
    if name == "insert":
      return jax.jit(
        functools.partial(insert_fn, eos),
        in_shardings=(self.prefix_shardings, ss, rep, rep),
        out_shardings=ss,
        donate_argnums=1,
      )
    if name == "insert_many":
      return jax.jit(
        functools.partial(insert_many_fn, eos),
        in_shardings=(self.prefix_shardings, ss, rep, rep, rep),
        out_shardings=ss,
        donate_argnums=1,
      )
    if name == "generate":
      return jax.jit(
        functools.partial(generate_fn, cfg, gd, static[0], eos),
        in_shardings=(ps, ss),
        out_shardings=(ss, self._result_shardings),
        donate_argnums=1,
      )
    if name == "generate_steps":  # the step count is traced: one compile per sampler
      sampler = static[0]
      return jax.jit(
        lambda params, state, n, stop: generate_steps_fn(
          cfg, gd, sampler, eos, n, params, state, stop, self.decode_phases
        ),
        in_shardings=(ps, ss, rep, rep),
        out_shardings=ss,
        donate_argnums=1,
      )
    if name == "decode_params":  # only the split is computed: params pass through as is
      return jax.jit(
        lambda p: decode_params_fn(cfg, gd, p).layers_L,
        in_shardings=(ps,),
        out_shardings=self.decode_param_shardings.layers_L,
      )
    if name == "init":
      return jax.jit(
        functools.partial(
          init_state_fn, cfg, self._B, self._P + self.max_decode_length, self.max_decode_length
        ),
        out_shardings=ss,
      )
    raise KeyError(name)

  def compile_counts(self) -> dict[str, int]:
    """Number of compiled executables per jitted function (for recompilation checks)."""
    return {"/".join(map(str, k)): f._cache_size() for k, f in self._jits.items()}

  # -- JetStream API -----------------------------------------------------------------------
  def bucket_for(self, n: int) -> int:
    """Smallest prefill bucket >= n; a prompt longer than max_prefill_length is an error."""
    if n > self._P:
      raise ValueError(
        f"prompt of {n} tokens exceeds max_prefill_length={self._P}; "
        "raise it or truncate the prompt (rollout(truncate_prompts=True))"
      )
    return next(b for b in self.buckets if b >= n)

  def pad_to_bucket(self, tokens, pad_id: int = 0) -> tuple[np.ndarray, int]:
    """(padded_tokens [Pb] int32, true_length) for one unpadded prompt."""
    tokens = np.asarray(tokens, np.int32).reshape(-1)
    out = np.full((self.bucket_for(len(tokens)),), pad_id, np.int32)
    out[: len(tokens)] = tokens
    return out, len(tokens)

  def decode_params(self, params) -> DecodeParams:
    """`params` laid out for generation (the blocks split per layer, one copy of them):
    make them once per weights version and pass them to prefill/insert/generate in place
    of the params, so no call re-slices the stacked weights. Plain params work too."""
    if isinstance(params, DecodeParams):
      return params
    return DecodeParams(params, self._jit("decode_params")(params))

  def init_decode_state(self, *args, **kwargs) -> DecodeState:
    del args, kwargs
    return self._jit("init")()

  def prefill(
    self,
    *,
    params,
    existing_prefix=None,
    padded_tokens,
    true_length: int,
    sampler=None,
    request_id=None,
    rng=None,
    max_new_tokens: int | None = None,
  ) -> tuple[Prefix, ResultTokens]:
    """Prefills one prompt -> (Prefix, first token's ResultTokens).

    existing_prefix: a `Prefix` (or upstream-style `ExistingPrefix`) of earlier tokens;
    padded_tokens then holds only the tokens that follow them (upstream: "logically
    appended"), prefilled on top of its cache. rng: int seed, raw uint32[2] key or typed
    jax.random.key (default 0). max_new_tokens: this request's response limit (default
    max_decode_length). request_id is accepted for upstream callers and unused."""
    del request_id
    return self._prefill(
      params, existing_prefix, padded_tokens, true_length, sampler, rng, max_new_tokens, 1
    )

  def prefill_multisampling(
    self,
    *,
    params,
    existing_prefix=None,
    padded_tokens,
    true_length: int,
    sampler=None,
    num_samples: int,
    request_id=None,
    rng=None,
    max_new_tokens=None,
  ) -> tuple[Prefix, ResultTokens]:
    """One prefill, `num_samples` first tokens (sample i uses fold_in(rng key, i));
    put them in slots with `bulk_insert`."""
    del request_id
    return self._prefill(
      params,
      existing_prefix,
      padded_tokens,
      true_length,
      sampler,
      rng,
      max_new_tokens,
      int(num_samples),
    )

  def prefill_batch(
    self, *, params, padded_tokens, true_lengths, sampler=None, rngs=None, max_new_tokens=None
  ) -> tuple[Prefix, ResultTokens]:
    """N prompts in one call -> (Prefix of N rows, their first tokens' ResultTokens).

    padded_tokens [N, Pb]: each row right-padded to one prefill bucket Pb; true_lengths
    [N]; rngs: N per-request keys (uint32 [N, 2], or None: request_key(i)); max_new_tokens
    an int or [N] (default max_decode_length). Row i's first token and everything after
    it equal `prefill(padded_tokens[i], rng=rngs[i])`'s; put row i in a slot with
    `insert(prefix, state, slot, sample_index=i)`. One forward of N rows uses the
    machine better than N one-row forwards; the compile is per (N, Pb)."""
    tokens, lens = requests.batch_rows(padded_tokens, true_lengths, self.buckets)
    N = len(lens)
    keys = (
      np.stack([sampling.request_key(i) for i in range(N)])
      if rngs is None
      else np.asarray(rngs, np.uint32).reshape(N, 2)
    )
    max_new = requests.response_limits(max_new_tokens, self.max_decode_length, N)
    sampler = sampling.check_sampler(sampler or self.default_sampler)
    fn = self._jit("prefill_batch", sampler, params=params)
    return fn(params, tokens, lens, keys, max_new)

  def _prefill(
    self,
    params,
    existing_prefix,
    padded_tokens,
    true_length,
    sampler,
    rng,
    max_new_tokens,
    num_samples,
  ) -> tuple[Prefix, ResultTokens]:
    tokens = requests.new_tokens(padded_tokens, true_length)
    base = requests.existing(existing_prefix)  # None or (cache, length already in it)
    total = (0 if base is None else base[1]) + len(tokens)
    if total > self._P:
      raise ValueError(
        f"existing prefix + new tokens = {total} tokens exceeds max_prefill_length={self._P}"
      )
    max_new = int(requests.response_limits(max_new_tokens, self.max_decode_length))
    key = sampling.as_request_key(rng)
    sampler = sampling.check_sampler(sampler or self.default_sampler)
    step = self._chunk or len(tokens)
    pieces = [tokens[i : i + step] for i in range(0, len(tokens), step)]
    for piece in pieces[:-1]:
      # Intermediate chunks only extend the cache: their first token is discarded, so
      # they draw greedily (one compile whatever the request's sampler).
      prefix, _ = self._prefill_piece(params, base, piece, sampling.GREEDY, 1, key, max_new)
      base = (prefix.cache, (0 if base is None else base[1]) + len(piece))
    return self._prefill_piece(params, base, pieces[-1], sampler, num_samples, key, max_new)

  def _prefill_piece(
    self, params, base, tokens, sampler, num_samples, key, max_new
  ) -> tuple[Prefix, ResultTokens]:
    """One jitted call: a fresh prefill (base None) or an extension of base's cache."""
    padded, n = self.pad_to_bucket(tokens)
    if base is None:
      fn = self._jit("prefill", sampler, num_samples, params=params)
      return fn(params, padded[None], np.int32(n), key, np.int32(max_new))
    cache, old = base
    fn = self._jit("extend", sampler, num_samples, self.bucket_for(old + n), params=params)
    return fn(params, cache, np.int32(old), padded[None], np.int32(n), key, np.int32(max_new))

  def insert(
    self,
    prefix: Prefix,
    decode_state: DecodeState,
    slot: int,
    request_id=None,
    *,
    sample_index: int = 0,
  ) -> DecodeState:
    """Sample `sample_index` of `prefix` into `slot`. request_id (upstream's request
    handle) is accepted and unused: a dense cache keeps no per-request bookkeeping."""
    del request_id
    if not 0 <= int(slot) < self._B:
      raise ValueError(f"slot={slot} out of range [0, {self._B})")
    return self._jit("insert")(prefix, decode_state, np.int32(slot), np.int32(sample_index))

  def bulk_insert(
    self, prefix: Prefix, decode_state: DecodeState, slots: Sequence[int]
  ) -> DecodeState:
    """Sample i of a (multisampling) prefix goes to slots[i] (one call)."""
    return self.insert_many(prefix, decode_state, slots, range(len(slots)))

  def insert_many(
    self, prefix: Prefix, decode_state: DecodeState, slots: Sequence[int], samples: Sequence[int]
  ) -> DecodeState:
    """Sample samples[i] of `prefix` into slots[i] for every i, in one jitted call (the
    same state as `insert` one at a time). The index lists are padded to a power of two
    (>= the prefix's rows): one compile per prefix shape."""
    slots, samples = [int(x) for x in slots], [int(x) for x in samples]
    if len(slots) != len(samples):
      raise ValueError(f"{len(slots)} slots for {len(samples)} samples")
    if any(not 0 <= s < self._B for s in slots) or len(set(slots)) != len(slots):
      raise ValueError(f"slots={slots} must be distinct and in [0, {self._B})")
    N = prefix.keys_Nx2.shape[0]
    if any(not 0 <= j < N for j in samples):
      raise ValueError(f"sample indices {samples} out of range [0, {N})")
    if not slots:
      return decode_state
    M = 1 << (max(len(slots), N) - 1).bit_length()
    pad = lambda xs: np.asarray(xs + [0] * (M - len(xs)), np.int32)
    fn = self._jit("insert_many")
    return fn(prefix, decode_state, pad(slots), pad(samples), np.int32(len(slots)))

  def generate(
    self, params, decode_state: DecodeState, sampler=None
  ) -> tuple[DecodeState, ResultTokens]:
    """One token for every slot; sampler: a `Sampler` or a function (upstream's
    `Callable`, see generate.sampling), default the engine's."""
    sampler = sampling.check_sampler(sampler or self.default_sampler)
    return self._jit("generate", sampler, params=params)(params, decode_state)

  def generate_steps(
    self,
    params,
    decode_state: DecodeState,
    num_steps: int,
    sampler=None,
    stop_when_free: int | None = None,
  ) -> DecodeState:
    """num_steps decode steps in one call (host sync only after); exits early once
    `stop_when_free` slots are done (default: all of them)."""
    sampler = sampling.check_sampler(sampler or self.default_sampler)
    stop = self._B if stop_when_free is None else int(stop_when_free)
    fn = self._jit("generate_steps", sampler, params=params)
    return fn(params, decode_state, np.int32(num_steps), np.int32(stop))

  def free_resource(self, slot: int) -> None:
    del slot  # a dense cache: nothing to free; the next insert overwrites the slot

  def load_params(
    self, checkpoint: str | os.PathLike | None = None, *, seed: int = 0, step: int | None = None
  ) -> dict:
    """Params in the engine's shardings: from `checkpoint`, else a random init from `seed`.

    A checkpoint is read by the `checkpoint_loader` the engine was built with
    (`runs.workdir.load_params` reads run directories and HF directories); without one, a
    local HF directory. The engine's ModelConfig must describe the stored model."""
    if checkpoint is not None:
      if self.checkpoint_loader is not None:
        return self.checkpoint_loader(checkpoint, self.cfg, self._mesh, self.param_shardings, step)
      if step is not None:
        raise ValueError(
          f"step={step} needs a checkpoint_loader that reads run directories "
          "(Engine(..., checkpoint_loader=runs.workdir.load_params))"
        )
      return hf.load_hf_params(os.fspath(checkpoint), self.cfg, self.param_shardings)
    params = model_lib.init_params(self.cfg, self._mesh, seed)[1]
    return jax.device_put(params, self.param_shardings)

  def get_prefix_destination_sharding(self) -> Prefix:
    return self.prefix_shardings

  def get_tokenizer(self) -> Tokenizer:
    """The tokenizer given at construction (our Tokenizer protocol, not upstream's
    TokenizerParameters proto: `build_tokenizer` hands it back unchanged)."""
    if self.tokenizer is None:
      raise ValueError(
        "this Engine has no tokenizer: pass Engine(..., tokenizer=...) "
        "(a dkd_jax.data.protocols.Tokenizer)"
      )
    return self.tokenizer

  def build_tokenizer(self, metadata) -> Tokenizer:
    """Upstream builds a SentencePiece tokenizer from get_tokenizer()'s proto; ours
    already is the tokenizer, so the orchestrator's build_tokenizer(get_tokenizer())
    gets it back."""
    return metadata

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
  def mesh(self) -> Mesh:
    return self._mesh

  @property
  def colocated_cpus(self) -> None:
    return None

  @property
  def use_chunked_prefill(self) -> bool:
    return self._chunk is not None

  @property
  def prefill_chunk_size(self) -> int:
    """The chunk size when chunking is on; max_prefill_length (one chunk) when off."""
    return self._chunk or self._P
