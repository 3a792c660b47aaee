"""Token sampling for the generation engine: one frozen `Sampler` plus pure functions.

A `Sampler` is hashable, so jitted engine functions take it as a static argument
(one compile per sampling configuration, never per call). Randomness is per
request: each request owns a PRNG key and step j of that request draws from
`fold_in(key, j)`, so a request's sample does not depend on its slot, on the
other requests in the batch or on when it was scheduled.

Drawing is an inverse CDF with one uniform per row, never a sort of the vocabulary nor
B·V Gumbel draws (both cost more than the model's decode step on CPU). A small top-k
draws from its C candidates from `lax.top_k`; so does top-p off CPU, trying the top C,
and falling back to the full vocabulary only when some row's kept set might reach past
the candidates (nucleus mass not reached inside them, or a tie at the edge). On the full
vocabulary (`_sample_threshold`; on CPU every top-p draw) the top-k and top-p edges are
found without a sort: by radix selection over the values' bits on CPU (three histogram
passes), by bisection elsewhere. Then the draw walks block sums of the probabilities,
then one block. So the distribution sampled is exactly `softmax(sampling_logits(...))`.

Two log-probabilities of a sampled token are computed (see `token_stats`):
`logprob`, the model's own distribution at temperature 1 (what the trainer and
the logs need), and `sampling_logprob`, under the distribution actually sampled
from (temperature, top-k, top-p applied; 0 for greedy). Entropy is always the
model's, at temperature 1.

A sampler may also be a plain function, as upstream JetStream's `sampler` argument
(`Callable[[logits], tokens]`): `fn(logits_BxV) -> tokens [B] or [B, 1]`, or, when it
takes a second required positional argument, `fn(logits_BxV, keys_B)` with the typed
per-row keys fold_in(request key, step) (the same per-request randomness as `Sampler`).
Its `logprob` and `entropy` are computed from the logits and the chosen tokens as for
`Sampler`; its `sampling_logprob` is NaN, because the distribution it drew from is
unknown to the engine (NaN rather than a plausible number, so an importance ratio built
on it fails loudly). The function is a static jit argument: the engine keys its compile
cache by the function object, so pass the same object (not a fresh lambda) every call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.core import rng as rng_lib
from dkd_jax.generate import edges


@dataclasses.dataclass(frozen=True)
class Sampler:
  """temperature 0 = greedy (argmax); top_k 0 = off; top_p 1.0 = off.

  Filters apply in the order temperature -> top-k -> top-p (as in transformers).
  """

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0

  def __post_init__(self):
    if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
      raise ValueError(
        f"Sampler.temperature={self.temperature!r} must be a number >= 0 (0 means greedy)"
      )
    if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"Sampler.top_p={self.top_p!r} must be in (0, 1]")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"Sampler.top_k={self.top_k!r} must be an int >= 0 (0 means off)")

  @property
  def is_greedy(self) -> bool:
    return self.temperature == 0


GREEDY = Sampler(temperature=0.0)


def request_key(seed) -> jax.Array:
  """Raw uint32[2] key for one request (raw data so it can live in the decode state)."""
  return jax.random.key_data(jax.random.key(seed))


def step_keys(keys_Bx2: jax.Array, steps_B: jax.Array) -> jax.Array:
  """Per-row key for decode step `steps_B[b]` of request b."""
  fold = lambda k, s: jax.random.fold_in(jax.random.wrap_key_data(k), s)
  return jax.vmap(fold)(keys_Bx2, steps_B)


def _top_k_mask(logits_BxV, k: int) -> jax.Array:
  kth_B1 = jax.lax.top_k(logits_BxV, k)[0][:, -1:]
  return jnp.where(logits_BxV >= kth_B1, logits_BxV, -jnp.inf)


def _top_p_mask(logits_BxV, p: float) -> jax.Array:
  """Keeps the smallest set of top tokens whose probability reaches p (ties kept)."""
  sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass strictly above each token
  keep_BxV = before_BxV < p  # the top token is always kept
  cutoff_B1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV >= cutoff_B1, logits_BxV, -jnp.inf)


def sampling_logits(sampler: Sampler, logits_BxV: jax.Array) -> jax.Array:
  """The logits of the distribution actually sampled from (-inf outside the kept set)."""
  x = logits_BxV.astype(jnp.float32) / sampler.temperature
  if 0 < sampler.top_k < x.shape[-1]:
    x = _top_k_mask(x, sampler.top_k)
  if sampler.top_p < 1.0:
    x = _top_p_mask(x, sampler.top_p)
  return x


# Where the full-vocabulary edges come from, by the platform a program is lowered for. On CPU
# (B=16, V=49,152, 2 cores) a histogram is cheap and lax.top_k is not: a top-p draw costs
# ~5 ms with the radix selection alone, ~12 ms with a top_k(256) tier first and 32
# bisection passes after it (~3.4 + ~4.7 ms of that). Elsewhere, where top_k is fast
# and scatter-adds serialise, the candidate tiers and bisection stay (unmeasured here).
HISTOGRAM_BACKENDS = ("cpu",)
# Candidate counts tried, in order, for top-p without a small top-k, before the exact
# full-vocabulary path, where edges are bisected; a top-k of at most the last one is
# drawn from its candidates on every backend.
TOP_P_TIERS = (256,)
# Block width of the temperature-only inverse CDF (V is padded up to a multiple).
_BLOCK = 256


def _uniforms(keys_Bx2, steps_B) -> jax.Array:
  """u_b = jax.random.uniform(fold_in(key_b, step_b)) for every row, bit for bit (checked
  against jax.random in tests/generate/test_sampling.py), as one fused computation: the
  Threefry rounds as plain uint32 arithmetic (`rng.threefry_rounds`), since jax's CPU
  lowering of `threefry2x32_p` runs them as a 5-step while loop, two loop launches per
  key per decode step, while unrolled they fuse into one elementwise pass."""
  keys_Bx2 = jnp.asarray(keys_Bx2, jnp.uint32)
  zero_B = jnp.zeros(keys_Bx2.shape[:1], jnp.uint32)
  # fold_in(key, step): the hash of the counter pair (0, step).
  k1, k2 = rng_lib.threefry_rounds(
    keys_Bx2[:, 0], keys_Bx2[:, 1], zero_B, steps_B.astype(jnp.uint32)
  )
  # 32 random bits of that key (threefry_partitionable: the hash of (0, 0), halves xored).
  b1, b2 = rng_lib.threefry_rounds(k1, k2, zero_B, zero_B)
  mantissa = ((b1 ^ b2) >> jnp.uint32(9)) | jnp.uint32(0x3F800000)
  return jnp.maximum(0.0, jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0)


def _first_above(cum_BxN, target_B, probs_BxN) -> jax.Array:
  """First index whose cumulative mass exceeds target and whose own mass is > 0.

  Rounding can leave no such index (u near 1) or put a jump on a zero-mass entry: the
  mask and the fallback to the last positive entry make a zero-mass token impossible.
  """
  hit_BxN = (cum_BxN > target_B[:, None]) & (probs_BxN > 0)
  last_B = probs_BxN.shape[-1] - 1 - jnp.argmax(probs_BxN[:, ::-1] > 0, axis=-1)
  return jnp.where(jnp.any(hit_BxN, -1), jnp.argmax(hit_BxN, axis=-1), last_B).astype(jnp.int32)


def _block_cumsum(x_BxG) -> jax.Array:
  """Cumulative sums along a row of G = _BLOCK (a multiple of 16): the additions of
  XLA:CPU's own rewrite of `jnp.cumsum` at this length, in its order (sequential inside
  16-wide groups, plus the sequential sum of the earlier groups), so the same bits
  (checked in tests/generate/test_sampling.py), in ~1/3 of its time. A row's first n
  sums need only its first ceil(n / 16) groups."""
  B, G = x_BxG.shape
  x_BxNx16 = x_BxG.reshape(B, G // 16, 16)
  cols = [x_BxNx16[..., 0]]
  for j in range(1, 16):
    cols.append(cols[-1] + x_BxNx16[..., j])
  within_BxNx16 = jnp.stack(cols, axis=-1)
  before = [jnp.zeros((B,), x_BxG.dtype)]
  for n in range(1, G // 16):
    before.append(before[-1] + within_BxNx16[:, n - 1, 15])
  return (jnp.stack(before, axis=-1)[..., None] + within_BxNx16).reshape(B, G)


def _draw_full(probs_BxV, u_B) -> jax.Array:
  """Inverse CDF over the whole vocabulary: block sums, then one block (no [B, V] scan)."""
  B, V = probs_BxV.shape
  p_BxNxG = jnp.pad(probs_BxV, ((0, 0), (0, -V % _BLOCK))).reshape(B, -1, _BLOCK)
  block_BxN = jnp.sum(p_BxNxG, axis=-1)
  if p_BxNxG.shape[1] == 1:
    # One block (V <= _BLOCK): it is the block picked, and what precedes it is exactly
    # 0, so the general path below reduces to this (the same numbers, no gathers); the
    # padding past V holds no mass, so only the first V16 columns are scanned.
    in_BxV16 = p_BxNxG[:, 0, : -(-V // 16) * 16]
    return _first_above(_block_cumsum(in_BxV16), u_B * block_BxN[:, 0], in_BxV16)
  cum_BxN = jnp.cumsum(block_BxN, axis=-1)
  target_B = u_B * cum_BxN[:, -1]
  n_B = _first_above(cum_BxN, target_B, block_BxN)
  pick = lambda a: jnp.take_along_axis(a, n_B[:, None], axis=1)[:, 0]
  in_BxG = jnp.take_along_axis(p_BxNxG, n_B[:, None, None], axis=1)[:, 0]
  rest_B = target_B - (pick(cum_BxN) - pick(block_BxN))
  g_B = _first_above(_block_cumsum(in_BxG), rest_B, in_BxG)
  return n_B * _BLOCK + g_B


def _sample_threshold(sampler, x_BxV, u_B, histograms: bool) -> tuple[jax.Array, jax.Array]:
  """The full-vocabulary path, sort-free: the top-k edge (count) and then the top-p edge
  (mass) found by radix selection (`edges.radix_edge`, with `histograms`) or bisection
  over the values; ties at either edge are kept, as in `sampling_logits`. Then an inverse-CDF
  draw over the kept tokens, on unnormalised probabilities (one exp over [B, V])."""
  edge = edges.radix_edge if histograms else edges.bisect_edge
  key_BxV = edges.float_order(x_BxV)
  if 0 < sampler.top_k < x_BxV.shape[-1]:
    ones_BxV = jnp.ones(x_BxV.shape, jnp.float32)
    edge_B = edge(key_BxV, ones_BxV, sampler.top_k)
    x_BxV = jnp.where(key_BxV >= edge_B[:, None], x_BxV, -jnp.inf)
  max_B = jnp.max(x_BxV, axis=-1)
  e_BxV = jnp.exp(x_BxV - max_B[:, None])  # 0 outside the top-k set
  if sampler.top_p < 1.0:
    limit_B = sampler.top_p * jnp.sum(e_BxV, axis=-1)
    edge_B = edge(key_BxV, e_BxV, limit_B[:, None])
    e_BxV = jnp.where(key_BxV >= edge_B[:, None], e_BxV, 0.0)
  tokens_B = _draw_full(e_BxV, u_B)
  x_B = jnp.take_along_axis(x_BxV, tokens_B[:, None], axis=-1)[:, 0]
  return tokens_B, x_B - max_B - jnp.log(jnp.sum(e_BxV, axis=-1))


def _sample_candidates(sampler, x_BxV, u_B, C: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(tokens_B, logprob_B, exact) from the top C of x (temperature applied).

  `exact` is a scalar: True iff every row's kept set lies inside its C candidates with
  no tie at the edge, so the draw is the reference distribution.
  """
  # The outputs are used whole: XLA keeps its fast TopK call only while every use is
  # the same slice (reading a (C+1)-th value, or an optimization_barrier, brought back
  # the full sort or crashed the SPMD partitioner). Ties at the edge are counted instead.
  vals_BxC, idx_BxC = jax.lax.top_k(x_BxV, C)
  if 0 < sampler.top_k == C:  # the candidates are the top-k set: it normalises top-p
    lse_B1 = jax.nn.logsumexp(vals_BxC, axis=-1, keepdims=True)
  else:  # no top-k (or a larger one): the whole vocabulary does
    lse_B1 = jax.nn.logsumexp(x_BxV, axis=-1, keepdims=True)
  keep_BxC = jnp.ones(vals_BxC.shape, bool)
  # Inside the candidates iff the nucleus ended there (a top-k set always holds it).
  reached_B = jnp.ones(vals_BxC.shape[:1], bool)
  if sampler.top_p < 1.0:
    probs_BxC = jnp.exp(vals_BxC - lse_B1)
    cum_BxC = jnp.cumsum(probs_BxC, axis=-1)
    keep_BxC = cum_BxC - probs_BxC < sampler.top_p  # mass strictly above each candidate
    if sampler.top_k != C:
      reached_B = jnp.max(cum_BxC, axis=-1) >= sampler.top_p  # the last entry, unsliced
  cutoff_B = jnp.min(jnp.where(keep_BxC, vals_BxC, jnp.inf), axis=-1)
  keep_BxC = vals_BxC >= cutoff_B[:, None]  # ties with the cutoff are kept
  # A value outside equal to the edge would belong to the kept (or top-k) set too.
  edge_B = jnp.min(vals_BxC, axis=-1) if sampler.top_k == C else cutoff_B
  inside_B = jnp.sum(vals_BxC >= edge_B[:, None], axis=-1)
  tie_B = jnp.sum(x_BxV >= edge_B[:, None], axis=-1) > inside_B
  exact = jnp.all(reached_B & ~tie_B)
  kept_BxC = jnp.where(keep_BxC, vals_BxC, -jnp.inf)
  logp_BxC = jax.nn.log_softmax(kept_BxC, axis=-1)
  probs_BxC = jnp.exp(logp_BxC)
  j_B = _first_above(jnp.cumsum(probs_BxC, axis=-1), u_B, probs_BxC)
  pick = lambda a: jnp.take_along_axis(a, j_B[:, None], axis=-1)[:, 0]
  return pick(idx_BxC).astype(jnp.int32), pick(logp_BxC), exact


def _candidate_tiers(sampler: Sampler, V: int, histograms: bool) -> tuple[int, ...]:
  """Candidate counts to try before the full path (each < V, so an edge value exists)."""
  if 0 < sampler.top_k < V:
    return (sampler.top_k,) if sampler.top_k <= TOP_P_TIERS[-1] else ()
  if sampler.top_p < 1.0 and not histograms:
    return tuple(c for c in TOP_P_TIERS if c < V)
  return ()


def sample(
  sampler: Sampler, logits_BxV: jax.Array, keys_Bx2: jax.Array, steps_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(tokens_B int32, sampling_logprob_B) for one decode step."""
  if sampler.is_greedy:
    tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return tokens_B, jnp.zeros(tokens_B.shape, jnp.float32)
  u_B = _uniforms(keys_Bx2, steps_B)
  x_BxV = logits_BxV.astype(jnp.float32) / sampler.temperature

  def draw(tiers, histograms) -> tuple[jax.Array, jax.Array]:
    if not tiers:
      return _sample_threshold(sampler, x_BxV, u_B, histograms)
    tokens_B, logp_B, exact = _sample_candidates(sampler, x_BxV, u_B, tiers[0])
    # lax.cond runs one branch on CPU/GPU: the wider tiers and the sort run only when
    # some row needs them.
    return jax.lax.cond(exact, lambda: (tokens_B, logp_B), lambda: draw(tiers[1:], histograms))

  def plan(histograms: bool) -> Callable[[], tuple[jax.Array, jax.Array]]:
    return lambda: draw(_candidate_tiers(sampler, x_BxV.shape[-1], histograms), histograms)

  # Chosen when the program is lowered for its platform (an AOT compile for a TPU from
  # a CPU host gets the TPU's plan), not by the host's default backend.
  return jax.lax.platform_dependent(
    default=plan(False), **{name: plan(True) for name in HISTOGRAM_BACKENDS}
  )


def token_stats(logits_BxV: jax.Array, tokens_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(logprob_B, entropy_B) of the model's temperature-1 distribution, with one exp over
  [B, V] (a log-softmax and then exp(log p) took two): with d = x - max, e = exp(d) and
  Z = Σe, log p = d - log Z and H = log Z - Σ e·d / Z, two terms >= 0 (no cancellation)."""
  x_BxV = logits_BxV.astype(jnp.float32)
  d_BxV = x_BxV - jnp.max(x_BxV, axis=-1, keepdims=True)
  e_BxV = jnp.exp(d_BxV)
  z_B = jnp.sum(e_BxV, axis=-1)
  log_z_B = jnp.log(z_B)
  logprob_B = jnp.take_along_axis(d_BxV, tokens_B[:, None], axis=-1)[:, 0] - log_z_B
  # e·d is 0 where e underflows (d = -inf would make it NaN).
  ed_B = jnp.sum(jnp.where(e_BxV > 0, e_BxV * d_BxV, 0.0), axis=-1)
  return logprob_B, log_z_B - ed_B / z_B


def check_sampler(sampler) -> Sampler | Callable:
  """The sampler itself, if it is a `Sampler` or a hashable callable; else a TypeError."""
  if isinstance(sampler, Sampler):
    return sampler
  if not callable(sampler):
    raise TypeError(
      f"sampler={sampler!r} must be a sampling.Sampler or a function "
      "fn(logits_BxV[, keys_B]) -> tokens_B"
    )
  try:
    hash(sampler)
  except TypeError as e:
    raise TypeError(
      f"sampler {sampler!r} must be hashable: the engine keys its compile cache by it"
    ) from e
  return sampler


def takes_keys(fn) -> bool:
  """True iff fn has two or more required positional parameters (then it gets keys)."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # some builtins have no signature: logits only
    return False
  positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
  return sum(p.kind in positional and p.default is p.empty for p in params) >= 2


def call_sampler(fn, logits_BxV, keys_Bx2, steps_B) -> jax.Array:
  """tokens_B int32 from a function sampler (see the module docstring)."""
  B = logits_BxV.shape[0]
  out = fn(logits_BxV, step_keys(keys_Bx2, steps_B)) if takes_keys(fn) else fn(logits_BxV)
  tokens = jnp.asarray(out)
  if tokens.size != B or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(
      f"sampler {fn!r} returned {tokens.dtype}{list(tokens.shape)} for logits "
      f"{list(logits_BxV.shape)}; it must return {B} integer token ids"
    )
  return tokens.reshape(B).astype(jnp.int32)


def sample_with_stats(sampler, logits_BxV, keys_Bx2, steps_B) -> dict:
  """Sampled tokens and all three per-token statistics, as one dict of [B] arrays."""
  if isinstance(sampler, Sampler):
    tokens_B, sampling_logprob_B = sample(sampler, logits_BxV, keys_Bx2, steps_B)
  else:  # a function: its distribution is unknown (module docstring)
    tokens_B = call_sampler(sampler, logits_BxV, keys_Bx2, steps_B)
    sampling_logprob_B = jnp.full(tokens_B.shape, jnp.nan, jnp.float32)
  logprob_B, entropy_B = token_stats(logits_BxV, tokens_B)
  return {
    "token": tokens_B,
    "logprob": logprob_B,
    "sampling_logprob": sampling_logprob_B,
    "entropy": entropy_B,
  }


def as_request_key(rng) -> np.ndarray:
  """Raw uint32[2] request key from an int seed (None = 0), a typed threefry key
  (jax.random.key) or raw key data (jax.random.PRNGKey / uint32[2])."""
  if rng is None:
    rng = 0
  if isinstance(rng, jax.Array) and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    if rng.shape != ():
      raise ValueError(f"rng must be one typed key, got a key array of shape {rng.shape}")
    rng = jax.random.key_data(rng)
  elif np.ndim(rng) == 0:
    rng = request_key(int(rng))
  key = np.asarray(rng)
  if key.shape != (2,) or not np.issubdtype(key.dtype, np.integer):
    raise ValueError(
      f"rng key data must be uint32[2] (a threefry key); got {key.dtype}{list(key.shape)}"
    )
  return key.astype(np.uint32)
