"""Cross-tokenizer losses: with one tokenizer they are today's losses, to float tolerance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import xtok

N, D, E, V = 24, 8, 12, 16


def _inputs(seed=0, vs=V, vt=V):
  r = np.random.default_rng(seed)
  return (
    jnp.asarray(r.normal(size=(N, D)), jnp.float32),
    jnp.asarray(r.normal(size=(D, vs)) * 0.7, jnp.float32),
    jnp.asarray(r.normal(size=(N, E)), jnp.float32),
    jnp.asarray(r.normal(size=(E, vt)) * 0.7, jnp.float32),
    jnp.asarray(r.integers(0, vs, N), jnp.int32),
    jnp.asarray((r.random(N) < 0.8).astype(np.float32)),
  )


def test_token_logprobs_match_log_softmax_and_grad():
  hs, Ws, _, _, y, _ = _inputs()
  f = lambda h, W: xtok.token_logprobs(h, W, y, temperature=0.7, chunk=5)[0]
  ref = lambda h, W: jnp.take_along_axis(jax.nn.log_softmax(h @ W / 0.7), y[:, None], -1)[:, 0]
  np.testing.assert_allclose(f(hs, Ws), ref(hs, Ws), rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda h, W: jnp.sum(f(h, W) ** 2), argnums=(0, 1))(hs, Ws)
  g_ref = jax.grad(lambda h, W: jnp.sum(ref(h, W) ** 2), argnums=(0, 1))(hs, Ws)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _one_token_chunks(mask_N):
  """Identical tokenizers: every loss token is its own chunk (B = 1 row of N positions)."""
  seg = np.where(np.asarray(mask_N) > 0, np.cumsum(np.asarray(mask_N) > 0) - 1, -1)
  return jnp.asarray(seg[None], jnp.int32)


@pytest.mark.parametrize(
  "kind,alpha,tau",
  [("reverse", 0.0, 1.0), ("mixed", 0.3, 1.0), ("reverse", 0.0, 0.7), ("forward", 1.0, 1.0)],
)
def test_one_tokenizer_equals_the_kernel(kind, alpha, tau):
  """Chunk reverse (+ mapped forward at chunk starts) with one token per chunk: the fused
  kernel's sampled-token path, loss and both student gradients."""
  hs, Ws, ht, Wt, y, mask = _inputs(1)
  est = "full_vocab" if kind == "forward" else "sampled_token"
  spec = kl_lib.KLSpec(kind=kind, alpha=alpha, temperature=tau, estimator=est, chunk=8)

  def kernel(h, W):
    return kl_lib.distill_loss(h, W, ht, Wt, mask, spec, tokens_N=y, alpha=alpha)[0]

  seg = _one_token_chunks(mask)
  ident = np.arange(V)

  def ours(h, W):
    lq, _ = xtok.token_logprobs(h, W, y, temperature=tau, chunk=8)
    lp, _ = xtok.token_logprobs(ht, Wt, y, temperature=tau, chunk=8)
    start, _ = xtok.chunk_starts(seg, N)
    fwd = xtok.mapped_forward(
      xtok.at_chunk_starts(h[None], W, start),
      xtok.at_chunk_starts(ht[None], Wt, start),
      ident,
      temperature=tau,
    ).reshape(1, N)
    a_f = {"reverse": 0.0, "forward": 1.0}.get(kind, alpha)
    num, den, _ = xtok.loss_sums(
      lq[None],
      lp[None],
      seg,
      seg,
      jnp.ones(1, bool),
      jnp.ones(1),
      n_chunks=N,
      a_f=a_f,
      a_r=1 - a_f,
      fwd_BxC=fwd,
    )
    return tau**2 * num / jnp.maximum(den, 1.0)

  np.testing.assert_allclose(ours(hs, Ws), kernel(hs, Ws), rtol=1e-5, atol=1e-6)
  g = jax.grad(ours, argnums=(0, 1))(hs, Ws)
  g_ref = jax.grad(kernel, argnums=(0, 1))(hs, Ws)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mapped_forward_identity_equals_forward_kl():
  hs, Ws, ht, Wt, _, mask = _inputs(2)
  z, t = hs @ Ws, ht @ Wt
  spec = kl_lib.KLSpec(kind="forward", chunk=8)
  ref = lambda h: kl_lib.distill_loss(h, Ws, ht, Wt, jnp.ones(N), spec)[0]
  ours = lambda h: jnp.mean(xtok.mapped_forward(h @ Ws, t, np.arange(V)))
  np.testing.assert_allclose(ours(hs), ref(hs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(hs), jax.grad(ref)(hs), rtol=1e-4, atol=1e-6)
  fkl = jnp.sum(jax.nn.softmax(t) * (jax.nn.log_softmax(t) - jax.nn.log_softmax(z)), -1)
  np.testing.assert_allclose(xtok.mapped_forward(z, t, np.arange(V)), fkl, rtol=1e-5, atol=1e-6)


def test_mapped_forward_partial_vocabularies_by_hand():
  """Shared ids' KL + one bucket for the rest + the sorted-probability L1 (ULD)."""
  p = np.array([0.5, 0.2, 0.2, 0.1])  # teacher ids 0..3; 0->1, 1->0 shared; 2, 3 not
  q = np.array([0.3, 0.4, 0.25, 0.05])  # student ids 0..3; 2, 3 unshared
  vmap = np.array([1, 0, -1, -1])
  got = float(xtok.mapped_forward(jnp.log(q)[None], jnp.log(p)[None], vmap)[0])
  shared = 0.5 * np.log(0.5 / 0.4) + 0.2 * np.log(0.2 / 0.3)
  bucket = 0.3 * np.log(0.3 / 0.3)
  uld = abs(0.2 - 0.25) + abs(0.1 - 0.05)
  np.testing.assert_allclose(got, shared + bucket + uld, rtol=1e-5)
  # a student vocabulary inside the teacher's: no bucket (it would be infinite), ULD only
  vmap2 = np.array([1, 0, 2, -1])
  q2 = np.array([0.3, 0.4, 0.3])
  got2 = float(xtok.mapped_forward(jnp.log(q2)[None], jnp.log(p)[None], vmap2)[0])
  want2 = 0.5 * np.log(0.5 / 0.4) + 0.2 * np.log(0.2 / 0.3) + 0.2 * np.log(0.2 / 0.3) + 0.1
  np.testing.assert_allclose(got2, want2, rtol=1e-5)


def test_chunk_reverse_sums_tokens_inside_chunks():
  """Two student tokens against three teacher tokens in one chunk: r = Σ log p − Σ log q."""
  lq = jnp.array([[-0.5, -1.0, 0.0]])
  lp = jnp.array([[-0.2, -0.3, -0.4, 0.0]])
  seg_s, seg_t = jnp.array([[0, 0, -1]]), jnp.array([[0, 0, 0, -1]])
  val = xtok.chunk_reverse(lq, lp, seg_s, seg_t, 3)
  np.testing.assert_allclose(val[0, 0], -((-0.9) - (-1.5)), rtol=1e-6)
  g = jax.grad(lambda x: xtok.chunk_reverse(x, lp, seg_s, seg_t, 3)[0, 0])(lq)
  np.testing.assert_allclose(g, [[-0.6, -0.6, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("credit", [1, 2, -1])
def test_credit_adds_later_chunks_log_ratios_to_each_chunks_weight(credit):
  """Same value; gradient −(r_c + L_c − b)·∇log q(chunk c), L_c = Σ of the next `credit`
  live chunks' r in the row (all of them for −1), b the mean of L over live chunks."""
  rng = np.random.default_rng(0)
  lq = jnp.asarray(-rng.uniform(0.1, 2.0, (2, 5)), jnp.float32)
  lp = jnp.asarray(-rng.uniform(0.1, 2.0, (2, 4)), jnp.float32)
  seg_s = jnp.array([[0, 0, 1, 2, -1], [0, 1, -1, -1, -1]])
  seg_t = jnp.array([[0, 1, 2, -1], [0, 1, -1, -1]])
  live = np.array([[1.0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  plain = xtok.chunk_reverse(lq, lp, seg_s, seg_t, 4)
  val = xtok.chunk_reverse(lq, lp, seg_s, seg_t, 4, live_BxC=live, credit=credit)
  np.testing.assert_allclose(val, plain, rtol=1e-6)
  r = np.asarray(xtok.chunk_sums(lp, seg_t, 4) - xtok.chunk_sums(lq, seg_s, 4)) * live
  span = 4 if credit < 0 else credit
  later = np.array([[r[i, c + 1 : c + 1 + span].sum() for c in range(4)] for i in range(2)])
  b = (later * live).sum() / live.sum()
  g = jax.grad(
    lambda x: jnp.sum(xtok.chunk_reverse(x, lp, seg_s, seg_t, 4, live_BxC=live, credit=credit))
  )(lq)
  want = np.zeros((2, 5), np.float32)
  for i in range(2):
    for t in range(5):
      c = int(seg_s[i, t])
      if c >= 0 and live[i, c]:
        want[i, t] = -(r[i, c] + later[i, c] - b)
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_teacher_logp_metric_counts_a_penalty_chunk_at_the_floor():
  """A spelling the teacher cannot score must not look better than one it can."""
  lq = jnp.array([[-0.5, -1.0, 0.0]])
  lp = jnp.array([[-0.7, 0.0, 0.0]])
  seg_s, seg_t = jnp.array([[0, 1, -1]]), jnp.array([[0, -1, -1]])
  one = jnp.ones((1,))
  _, den, m = xtok.loss_sums(
    lq, lp, seg_s, seg_t, one, one, n_chunks=3, a_f=0.0, a_r=1.0, pen_B=jnp.array([1])
  )
  assert float(den) == 2.0
  np.testing.assert_allclose(m["teacher_logp"], (-0.7 - 20.0) / 2, rtol=1e-6)
