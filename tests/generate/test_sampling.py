"""The sampler draws from exactly softmax(sampling_logits): empirical frequencies over many
independent draws vs the filtered softmax, on every path (top-k candidates, each top-p
tier, the full-vocabulary fallback with ties or a wide nucleus, temperature only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.generate import edges
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
  """Off CPU's plan: top-p candidate tiers, then bisected edges."""
  monkeypatch.setattr(sampling, "HISTOGRAM_BACKENDS", ())
  monkeypatch.setattr(sampling, "TOP_P_TIERS", (4, 16))  # every tier reachable at V=64
  _check_frequencies(sampler, kind)


@pytest.mark.parametrize("sampler,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_frequencies_match_filtered_softmax_cpu_plan(sampler, kind, monkeypatch):
  """CPU's plan: top-p straight to radix-selected edges (a small top-k: candidates)."""
  monkeypatch.setattr(sampling, "TOP_P_TIERS", (4, 16))
  _check_frequencies(sampler, kind)


THRESHOLD_CASES = [c for c in CASES if c[0].top_p < 1.0 or c[0].top_k > 0]


@pytest.mark.parametrize(
  "sampler,kind", THRESHOLD_CASES, ids=[f"{s}-{k}" for s, k in THRESHOLD_CASES]
)
@pytest.mark.parametrize("backends", [("cpu",), ()], ids=["radix", "bisection"])
def test_sort_free_threshold_path_alone(sampler, kind, backends, monkeypatch):
  """No candidate tiers: every top-k/top-p draw takes the full-vocabulary path."""
  monkeypatch.setattr(sampling, "HISTOGRAM_BACKENDS", backends)
  monkeypatch.setattr(sampling, "_candidate_tiers", lambda *_: ())
  _check_frequencies(sampler, kind)


def _edge_by_definition(key_V, weight_V, limit):
  """The smallest key t of the row with sum(weight[key > t]) < limit, by brute force."""
  ok = [t for t in key_V if weight_V[key_V > t].sum(dtype=np.float64) < limit]
  return min(ok)


@pytest.mark.parametrize("find", ["radix_edge", "bisect_edge"])
def test_edges_match_their_definition(find):
  """Ties, zero weights below the rest, negative and positive values, a limit above the
  total (everything kept), and counts (top-k) as well as masses (top-p)."""
  rng = np.random.default_rng(3)
  x_BxV = rng.standard_normal((6, 300)).astype(np.float32) * 3
  x_BxV[1, :40] = x_BxV[1, 0]  # a tie spanning many tokens
  x_BxV[2, :] = np.round(x_BxV[2, :])  # ties everywhere
  x_BxV[3, :100] = -np.inf  # zero mass: a top-k mask
  x_BxV[4, :] = np.abs(x_BxV[4, :]) * 1e-30  # tiny values: keys that share their top bits
  key_BxV = np.asarray(edges.float_order(jnp.asarray(x_BxV)))
  e_BxV = np.exp(x_BxV - x_BxV.max(-1, keepdims=True))
  for weight_BxV, limit in ((e_BxV, 0.9 * e_BxV.sum(-1)), (np.ones_like(e_BxV), 7.0)):
    limit_Bx1 = np.broadcast_to(np.reshape(limit, (-1, 1)), (6, 1)).astype(np.float32)
    limit_Bx1[5] = 2.0 * weight_BxV[5].sum()  # more than the row holds
    got_B = getattr(edges, find)(jnp.asarray(key_BxV), jnp.asarray(weight_BxV), limit_Bx1)
    for b in range(6):
      want = _edge_by_definition(key_BxV[b], weight_BxV[b], limit_Bx1[b, 0])
      positive = key_BxV[b][weight_BxV[b] > 0]
      if limit_Bx1[b, 0] > weight_BxV[b].sum():  # everything with weight kept
        assert int(got_B[b]) <= positive.min(), (find, b)
      else:
        assert int(got_B[b]) == want, (find, b, int(got_B[b]), want)


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


def test_uniforms_are_jax_random_bit_for_bit():
  """The unrolled Threefry draws u = uniform(fold_in(key, step)) exactly as jax.random."""
  rng = np.random.default_rng(3)
  keys = rng.integers(0, 2**32, (512, 2), dtype=np.uint64).astype(np.uint32)
  steps = rng.integers(0, 100_000, 512).astype(np.int32)
  want = jax.jit(
    jax.vmap(
      lambda k, s: jax.random.uniform(
        jax.random.fold_in(jax.random.wrap_key_data(k), s), (), jnp.float32
      )
    )
  )(keys, steps)
  got = jax.jit(sampling._uniforms)(keys, steps)
  np.testing.assert_array_equal(np.asarray(got).view(np.uint32), np.asarray(want).view(np.uint32))


@pytest.mark.skipif(
  jax.default_backend() != "cpu",
  reason="the order of XLA:CPU's cumsum rewrite (bits differ elsewhere)",
)
@pytest.mark.parametrize("width", [16, 48, 256])
def test_block_cumsum_is_jnp_cumsum_bit_for_bit(width):
  """The draw's prefix sums: those of jnp.cumsum over the padded block (the tokens drawn
  before it replaced jnp.cumsum), also when only a row's first columns are scanned."""
  rng = np.random.default_rng(width)
  p = np.zeros((64, 256), np.float32)
  p[:, :width] = rng.dirichlet(np.full(width, 0.3), 64).astype(np.float32)
  want = np.asarray(jax.jit(lambda x: jnp.cumsum(x, axis=-1))(p))[:, :width]
  got = np.asarray(jax.jit(sampling._block_cumsum)(p[:, :width]))
  np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_several_blocks_frequencies():
  """Temperature-only draws over a vocabulary of several blocks (block sums, then one)."""
  Vb = 600
  x = np.random.default_rng(1).standard_normal(Vb).astype(np.float32)
  x[::97] += np.float32(3.0)
  fn = jax.jit(sampling.sample, static_argnums=0)
  tokens, _ = fn(
    sampling.Sampler(temperature=1.0),
    jnp.broadcast_to(jnp.asarray(x), (N, Vb)),
    jnp.broadcast_to(sampling.request_key(5), (N, 2)),
    jnp.arange(N, dtype=jnp.int32),
  )
  want_V = np.asarray(jax.nn.softmax(x))
  freq_V = np.bincount(np.asarray(tokens), minlength=Vb) / N
  z_V = np.abs(freq_V - want_V) / np.sqrt(want_V * (1 - want_V) / N)
  assert z_V.max() < 5, (int(z_V.argmax()), freq_V[z_V.argmax()], want_V[z_V.argmax()])


def test_the_plan_follows_the_platform_lowered_for():
  """Radix histograms (scatter-adds) in a program lowered for CPU; for a TPU, lowered
  from this CPU host as an AOT compile is, the candidate tiers and bisection instead."""
  sampler = sampling.Sampler(temperature=1.0, top_p=0.9)
  fn = jax.jit(lambda x, k, s: sampling.sample(sampler, x, k, s))
  args = (jnp.zeros((2, 512)), jnp.zeros((2, 2), jnp.uint32), jnp.zeros((2,), jnp.int32))
  text = lambda platform: fn.trace(*args).lower(lowering_platforms=(platform,)).as_text()
  cpu, tpu = text("cpu"), text("tpu")
  assert "scatter" in cpu and "top_k" not in cpu.lower() and "while" not in cpu
  assert "scatter" not in tpu and "top_k" in tpu.lower() and "while" in tpu  # bisection
