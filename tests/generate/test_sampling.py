"""The sampler draws from exactly softmax(sampling_logits): empirical frequencies over many
independent draws vs the filtered softmax, on every path (top-k candidates, each top-p
tier, the full-vocabulary fallback with ties or a wide nucleus, temperature only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.generate import sampling

N, V = 20_000, 64


def _logits(kind: str) -> np.ndarray:
  rng = np.random.default_rng(0)
  x = rng.standard_normal(V).astype(np.float32)
  if kind == "peaked":  # nucleus of 0.9 within 4 tokens
    x[:3] += np.float32(6.0)
  elif kind == "medium":  # nucleus of 0.9 between 4 and 16 tokens
    x[:10] += np.float32(4.0)
  elif kind == "ties":  # equal values across the top-5 edge and in the nucleus
    x[:8] = np.float32(3.0)
  return x


def _draw(sampler, logits_V):
  logits_NxV = jnp.broadcast_to(jnp.asarray(logits_V), (N, V))
  keys_Nx2 = jnp.broadcast_to(sampling.request_key(11), (N, 2))
  fn = jax.jit(sampling.sample, static_argnums=0)
  tokens_N, logp_N = fn(sampler, logits_NxV, keys_Nx2, jnp.arange(N, dtype=jnp.int32))
  return np.asarray(tokens_N), np.asarray(logp_N)


CASES = [
  (sampling.Sampler(temperature=1.0), "flat"),
  (sampling.Sampler(temperature=0.7), "medium"),
  (sampling.Sampler(temperature=1.0, top_k=5), "flat"),
  (sampling.Sampler(temperature=1.0, top_k=5), "ties"),
  (sampling.Sampler(temperature=1.0, top_p=0.9), "peaked"),
  (sampling.Sampler(temperature=1.0, top_p=0.9), "medium"),
  (sampling.Sampler(temperature=1.0, top_p=0.9), "flat"),
  (sampling.Sampler(temperature=1.0, top_p=0.9), "ties"),
  (sampling.Sampler(temperature=0.9, top_p=0.8, top_k=12), "medium"),
  (sampling.Sampler(temperature=1.3, top_p=0.5, top_k=40), "flat"),
]


@pytest.mark.parametrize("sampler,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_frequencies_match_filtered_softmax(sampler, kind, monkeypatch):
  monkeypatch.setattr(sampling, "TOP_P_TIERS", (4, 16))  # every tier reachable at V=64
  _check_frequencies(sampler, kind)


THRESHOLD_CASES = [c for c in CASES if c[0].top_p < 1.0 or c[0].top_k > 0]


@pytest.mark.parametrize(
  "sampler,kind", THRESHOLD_CASES, ids=[f"{s}-{k}" for s, k in THRESHOLD_CASES]
)
def test_sort_free_threshold_path_alone(sampler, kind, monkeypatch):
  """No candidate tiers: every top-k/top-p draw takes the bisection path."""
  monkeypatch.setattr(sampling, "TOP_P_TIERS", ())
  monkeypatch.setattr(sampling, "_candidate_tiers", lambda *_: ())
  _check_frequencies(sampler, kind)


def _check_frequencies(sampler, kind):
  logits_V = _logits(kind)
  want_logp_V = np.asarray(
    jax.nn.log_softmax(sampling.sampling_logits(sampler, jnp.asarray(logits_V)[None])[0])
  )
  want_V = np.exp(want_logp_V)
  tokens_N, logp_N = _draw(sampler, logits_V)
  assert np.all(want_V[tokens_N] > 0), "a token outside the kept set was drawn"
  np.testing.assert_allclose(logp_N, want_logp_V[tokens_N], atol=1e-5)
  freq_V = np.bincount(tokens_N, minlength=V) / N
  sigma_V = np.sqrt(want_V * (1 - want_V) / N)
  z_V = np.abs(freq_V - want_V) / np.maximum(sigma_V, 1e-12)
  assert z_V.max() < 5, (int(z_V.argmax()), freq_V[z_V.argmax()], want_V[z_V.argmax()])


def test_full_vocab_draw_never_picks_zero_mass():
  """u close to 1 and zero-mass entries across block edges (V not a block multiple)."""
  probs_BxV = np.zeros((3, 300), np.float32)
  probs_BxV[0, 5] = 1.0
  probs_BxV[1, [0, 299]] = 0.5
  probs_BxV[2, 256] = 1.0
  for u in (0.0, 0.5, 1.0 - 2**-24):
    toks = np.asarray(sampling._draw_full(jnp.asarray(probs_BxV), jnp.full((3,), u)))
    assert np.all(probs_BxV[np.arange(3), toks] > 0), (u, toks)
