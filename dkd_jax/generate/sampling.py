"""Token sampling for the generation engine: one frozen `Sampler` plus pure functions.

A `Sampler` is hashable, so jitted engine functions take it as a static argument
(one compile per sampling configuration, never per call). Randomness is per
request: each request owns a PRNG key and step j of that request draws from
`fold_in(key, j)`, so a request's sample does not depend on its slot, on the
other requests in the batch or on when it was scheduled.

Two log-probabilities of a sampled token are computed (see `token_stats`):
`logprob`, the model's own distribution at temperature 1 (what the trainer and
the logs need), and `sampling_logprob`, under the distribution actually sampled
from (temperature, top-k, top-p applied; 0 for greedy). Entropy is always the
model's, at temperature 1.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


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
      raise ValueError(f"Sampler.temperature={self.temperature!r} must be a number >= 0 "
                       "(0 means greedy)")
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


def _top_k_mask(logits_BxV, k: int):
  kth_B1 = jax.lax.top_k(logits_BxV, k)[0][:, -1:]
  return jnp.where(logits_BxV >= kth_B1, logits_BxV, -jnp.inf)


def _top_p_mask(logits_BxV, p: float):
  """Keeps the smallest set of top tokens whose probability reaches p (ties kept)."""
  sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass strictly above each token
  keep_BxV = before_BxV < p                                  # the top token is always kept
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


def sample(sampler: Sampler, logits_BxV: jax.Array, keys_Bx2: jax.Array,
           steps_B: jax.Array):
  """(tokens_B int32, sampling_logprob_B) for one decode step."""
  if sampler.is_greedy:
    tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return tokens_B, jnp.zeros(tokens_B.shape, jnp.float32)
  x_BxV = sampling_logits(sampler, logits_BxV)
  keys_B = step_keys(keys_Bx2, steps_B)
  tokens_B = jax.vmap(jax.random.categorical)(keys_B, x_BxV).astype(jnp.int32)
  logp_BxV = jax.nn.log_softmax(x_BxV, axis=-1)
  return tokens_B, jnp.take_along_axis(logp_BxV, tokens_B[:, None], axis=-1)[:, 0]


def token_stats(logits_BxV: jax.Array, tokens_B: jax.Array):
  """(logprob_B, entropy_B) of the model's temperature-1 distribution."""
  logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  logprob_B = jnp.take_along_axis(logp_BxV, tokens_B[:, None], axis=-1)[:, 0]
  entropy_B = -jnp.sum(jnp.exp(logp_BxV) * logp_BxV, axis=-1)
  return logprob_B, entropy_B


def sample_with_stats(sampler: Sampler, logits_BxV, keys_Bx2, steps_B) -> dict:
  """Sampled tokens and all three per-token statistics, as one dict of [B] arrays."""
  tokens_B, sampling_logprob_B = sample(sampler, logits_BxV, keys_Bx2, steps_B)
  logprob_B, entropy_B = token_stats(logits_BxV, tokens_B)
  return {"token": tokens_B, "logprob": logprob_B, "sampling_logprob": sampling_logprob_B,
          "entropy": entropy_B}
