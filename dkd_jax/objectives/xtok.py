"""Cross-tokenizer distillation losses: chunk-level reverse KL, mapped forward KL, sequence KD.

Student and teacher read the same text under their own tokenizers. `data.alignment` cuts
both token sequences into chunks whose character boundaries coincide and hands the step
segment ids (the chunk of each target position, -1 outside the loss) and, per chunk, the
position that predicts its first token. Everything here is a pure function of per-token
log-probs, those index tensors and (for the token-level term) the two LM heads at chunk
starts; BUILD_NOTES "Cross-tokenizer and multi-teacher distillation" states what is exact.

- `chunk_reverse`: the sampled-token reverse-KL estimator of DESIGN §3 at chunk level.
  With r_c = log p(chunk c | text before c) − log q(chunk c | text before c), each side the
  sum of its token log-probs inside the chunk, the per-chunk value is −r_c and the gradient
  −r_c·∇log q(chunk c). When every chunk is one token this is the kernel's sampled-token
  path term for term.
- `mapped_forward`: forward KL over the tokens whose strings both vocabularies share, plus
  one bucket for the rest (the KL of both distributions pushed onto shared ∪ {other}), plus
  a ULD-style sorted-probability L1 distance between the unshared probabilities. With one
  vocabulary (identity map) the last two vanish and it is KL(p‖q) exactly.
- `token_logprobs`: log q(y_t) with gradient, C tokens at a time under `jax.checkpoint`,
  so no [tokens, V] tensor is kept for the backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NO_CHUNK = -1  # segment id of a position outside the loss (prompt, padding, cut chunks)


def _dot32(a, b) -> jax.Array:
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def token_logprobs(
  hidden_NxD, head_DxV, tokens_N, *, temperature: float = 1.0, chunk: int = 256
) -> tuple[jax.Array, jax.Array]:
  """(log softmax(hW/τ)[y] per token, differentiable; entropy at τ = 1, no gradient).

  The head runs C tokens at a time; each chunk is rematerialised in the backward pass,
  so memory is O(C·V) rather than O(N·V)."""
  N, D = hidden_NxD.shape
  c = max(min(chunk, N), 1)
  pad = (-N) % c
  h = jnp.pad(hidden_NxD, ((0, pad), (0, 0))).reshape(-1, c, D)
  y = jnp.pad(jnp.asarray(tokens_N, jnp.int32), (0, pad)).reshape(-1, c)

  @jax.checkpoint
  def one(args) -> tuple[jax.Array, jax.Array]:
    h_CxD, y_C = args
    z_CxV = _dot32(h_CxD, head_DxV)
    lq_CxV = jax.nn.log_softmax(z_CxV / temperature)
    lq1_CxV = jax.lax.stop_gradient(jax.nn.log_softmax(z_CxV))
    ent_C = -jnp.sum(jnp.exp(lq1_CxV) * lq1_CxV, -1)
    return jnp.take_along_axis(lq_CxV, y_C[:, None], -1)[:, 0], ent_C

  logp, ent = jax.lax.map(one, (h, y))
  return logp.reshape(-1)[:N], ent.reshape(-1)[:N]


def chunk_onehot(seg_BxT, n_chunks: int) -> jax.Array:
  """[B, C, T] float: 1 where position t belongs to chunk c (segment ids < 0 belong nowhere)."""
  return (seg_BxT[:, None, :] == jnp.arange(n_chunks)[None, :, None]).astype(jnp.float32)


def chunk_sums(x_BxT, seg_BxT, n_chunks: int) -> jax.Array:
  """Σ over each chunk's positions: [B, C]. Positions outside every chunk are dropped by
  selection, so a NaN there (a padded row) never reaches a sum."""
  onehot_BxCxT = chunk_onehot(seg_BxT, n_chunks)
  x_BxT = jnp.where(seg_BxT >= 0, x_BxT, 0.0)
  return jnp.einsum("bct,bt->bc", onehot_BxCxT, x_BxT)


def chunk_reverse(
  logq_BxT,
  logp_BxU,
  seg_s_BxT,
  seg_t_BxU,
  n_chunks: int,
  floor_BxC=None,
  live_BxC=None,
  credit: int = 0,
) -> jax.Array:
  """Per-chunk sampled reverse-KL term [B, C]: value −r_c, gradient −r_c·∇log q(chunk c),
  with r_c = log p(chunk) − log q(chunk) held fixed (stop_gradient). `floor_BxC` adds a
  fixed teacher log-prob (a penalty chunk with no teacher tokens). Chunks absent from
  either side are 0; the caller masks and normalises.

  `credit` (with `live_BxC`, the chunks in the loss) adds later chunks' log ratios to each
  chunk's gradient weight: r_c + (Σ_{0 < j ≤ credit} r_{c+j} − its mean over the batch's
  live chunks); credit < 0 takes every later chunk (the return to go: REINFORCE on the
  sequence-level KL(q‖p), unbiased up to the baseline's own sample). With credit 0 each
  state's target is q ∝ p̃, where p̃ (the teacher's probability of each student token's
  text) sums to more than one when tokens are prefixes of one another; a token that is a
  prefix of the right text ('1' of "15") then earns its credit whatever follows it."""
  lq_BxC = chunk_sums(logq_BxT, seg_s_BxT, n_chunks)
  lp_BxC = jax.lax.stop_gradient(chunk_sums(logp_BxU, seg_t_BxU, n_chunks))
  if floor_BxC is not None:
    lp_BxC = lp_BxC + floor_BxC
  r_BxC = jax.lax.stop_gradient(lp_BxC - lq_BxC)
  weight_BxC = r_BxC
  if live_BxC is not None and credit != 0:
    later_BxC = later_sums(r_BxC * live_BxC, credit)
    base = jnp.sum(later_BxC * live_BxC) / jnp.maximum(jnp.sum(live_BxC), 1.0)
    weight_BxC = r_BxC + (later_BxC - base) * live_BxC
  return -r_BxC - weight_BxC * (lq_BxC - jax.lax.stop_gradient(lq_BxC))


def later_sums(x_BxC, credit: int) -> jax.Array:
  """Σ_{0 < j ≤ credit} x[:, c + j] per chunk (every later chunk when credit < 0)."""
  if credit < 0:
    return jnp.flip(jnp.cumsum(jnp.flip(x_BxC, -1), -1), -1) - x_BxC
  C = x_BxC.shape[-1]
  out = jnp.zeros_like(x_BxC)
  for j in range(1, min(credit, C - 1) + 1):
    out = out.at[:, : C - j].add(x_BxC[:, j:])
  return out


def chunk_starts(seg_BxT, n_chunks: int) -> tuple[jax.Array, jax.Array]:
  """(index of each chunk's first position [B, C], 1.0 where the chunk exists [B, C]): the
  position that predicts the chunk's first token, the state both models share."""
  onehot_BxCxT = chunk_onehot(seg_BxT, n_chunks) > 0
  return jnp.argmax(onehot_BxCxT, -1).astype(jnp.int32), jnp.any(onehot_BxCxT, -1).astype(
    jnp.float32
  )


def shared_masks(vocab_map_Vt, vocab_s: int) -> tuple[np.ndarray, np.ndarray]:
  """(teacher ids with a student counterpart [Vt], student ids with a teacher one [Vs])."""
  m = np.asarray(vocab_map_Vt)
  shared_s = np.zeros((vocab_s,), bool)
  shared_s[m[m >= 0]] = True
  return m >= 0, shared_s


def _sorted_desc(x_NxV, width: int) -> jax.Array:
  """Each row sorted descending, zero-padded (or cut) to `width` columns."""
  s = -jnp.sort(-x_NxV, axis=-1)
  if s.shape[-1] < width:
    s = jnp.pad(s, ((0, 0), (0, width - s.shape[-1])))
  return s[:, :width]


def mapped_forward(
  z_NxVs, t_NxVt, vocab_map_Vt, *, temperature: float = 1.0, uld_weight: float = 1.0
) -> jax.Array:
  """Per-state forward term [N] across two vocabularies (see the module docstring).

  vocab_map_Vt[v] is the student id whose string equals teacher id v's, or -1; it must be
  a host array (which ids are shared is static). Terms: Σ_{v shared} p_v log(p_v/q_{m(v)})
  + P_o log(P_o/Q_o) (P_o, Q_o the unshared masses; kept only when both vocabularies have
  unshared ids, else it is infinite or empty) + uld_weight·Σ_i |p↓_i − q↓_i| over the
  unshared probabilities sorted descending. Gradient flows to the student logits only."""
  m = np.asarray(vocab_map_Vt)
  sh_t, sh_s = shared_masks(m, z_NxVs.shape[-1])
  lq = jax.nn.log_softmax(z_NxVs / temperature)
  lp = jax.lax.stop_gradient(jax.nn.log_softmax(t_NxVt / temperature))
  p = jnp.exp(lp)
  lq_at = jnp.take(lq, jnp.asarray(np.where(sh_t, m, 0)), axis=-1)
  out = jnp.sum(jnp.where(sh_t, p * (lp - lq_at), 0.0), -1)
  if (~sh_t).any() and (~sh_s).any():
    lP = jax.nn.logsumexp(jnp.where(sh_t, -jnp.inf, lp), -1)
    lQ = jax.nn.logsumexp(jnp.where(sh_s, -jnp.inf, lq), -1)
    out = out + jnp.exp(lP) * (lP - lQ)
  if uld_weight and ((~sh_t).any() or (~sh_s).any()):
    width = max(int((~sh_t).sum()), int((~sh_s).sum()))
    p_o = _sorted_desc(jnp.where(sh_t, 0.0, p), width)
    q_o = _sorted_desc(jnp.where(sh_s, 0.0, jnp.exp(lq)), width)
    out = out + uld_weight * jnp.sum(jnp.abs(p_o - q_o), -1)
  return out


def at_chunk_starts(hidden_BxTxD, head_DxV, start_BxC) -> jax.Array:
  """Logits [B·C, V] at each chunk's first position (materialised: C is one per chunk, not
  one per token, and only the token-level term needs them)."""
  B, C = start_BxC.shape
  h_BxCxD = jnp.take_along_axis(hidden_BxTxD, start_BxC[:, :, None], axis=1)
  return _dot32(h_BxCxD.reshape(B * C, -1), head_DxV)


def loss_sums(
  logq_BxT,
  logp_BxU,
  seg_s_BxT,
  seg_t_BxU,
  student_row_B,
  row_weight_B,
  *,
  n_chunks: int,
  a_f,
  a_r,
  fwd_BxC=None,
  token_level: bool = False,
  pen_B=None,
  logp_floor: float = -20.0,
  credit: int = 0,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """(numerator, denominator, metrics) of the cross-tokenizer loss: loss = num / max(den, 1).

  Student rows: Σ_c a_f·F_c + a_r·R_c (F the mapped forward term at chunk starts, given
  when a_f can be > 0; R the chunk reverse term). Teacher rows (the teacher's text
  retokenised for the student): a_f·(Σ_t −log q(y_t) + [token_level] Σ_c F_c), sequence-level
  KD. den = Σ_b w_b·(student positions in the loss), so with one token per chunk the
  student-row terms are the kernel's per-token masked mean. Weights w_b route rows to this
  teacher (0/1) or mix teachers (fixed fractions). pen_B: each row's penalty chunk (a
  textless student token; the teacher's log-prob is `logp_floor` there, no forward term).
  credit: how many later chunks' log ratios weight each chunk's gradient (`chunk_reverse`;
  < 0: all of them)."""
  live_BxT = (seg_s_BxT >= 0).astype(jnp.float32)
  _, has_s = chunk_starts(seg_s_BxT, n_chunks)
  _, has_t = chunk_starts(seg_t_BxU, n_chunks)
  pen_BxC = 0.0
  if pen_B is not None:
    pen_BxC = (jnp.arange(n_chunks)[None] == pen_B[:, None]).astype(jnp.float32)
  chunk_mask_BxC = has_s * jnp.maximum(has_t, pen_BxC)
  # student rows of this teacher only: the credit's baseline averages those
  live_rev = chunk_mask_BxC * (student_row_B * (row_weight_B > 0)).astype(jnp.float32)[:, None]
  rev_BxC = chunk_reverse(
    logq_BxT, logp_BxU, seg_s_BxT, seg_t_BxU, n_chunks, logp_floor * pen_BxC, live_rev, credit
  )
  fwd_BxC = jnp.zeros_like(rev_BxC) if fwd_BxC is None else fwd_BxC * has_t
  on_student = jnp.sum(chunk_mask_BxC * (a_f * fwd_BxC + a_r * rev_BxC), -1)
  seqkd_B = -jnp.sum(jnp.where(live_BxT > 0, logq_BxT, 0.0), -1)
  on_teacher = seqkd_B + (jnp.sum(chunk_mask_BxC * fwd_BxC, -1) if token_level else 0.0)
  s_B = student_row_B.astype(jnp.float32)
  w_B = row_weight_B.astype(jnp.float32)
  num = jnp.sum(w_B * (s_B * on_student + (1.0 - s_B) * a_f * on_teacher))
  den = jnp.sum(w_B * jnp.sum(live_BxT, -1))
  sg = jax.lax.stop_gradient
  per_chunk = jnp.maximum(jnp.sum(w_B[:, None] * chunk_mask_BxC), 1.0)
  metrics = {
    # the k1 estimate of KL(q‖p) per student token: meaningful on student rows only
    "rkl": jnp.sum((w_B * s_B)[:, None] * chunk_mask_BxC * sg(rev_BxC))
    / jnp.maximum(jnp.sum(w_B * s_B * jnp.sum(live_BxT, -1)), 1.0),
    "fkl": jnp.sum(w_B[:, None] * chunk_mask_BxC * sg(fwd_BxC)) / per_chunk,
    "chunks": jnp.sum(w_B[:, None] * chunk_mask_BxC),
    # the teacher's log-likelihood of the student's text per student token (student rows);
    # a penalty chunk (text the teacher cannot score as spelled) counts at the floor, so
    # spellings the teacher never sees cannot raise it
    "teacher_logp": jnp.sum(
      (w_B * s_B)[:, None]
      * chunk_mask_BxC
      * sg(chunk_sums(logp_BxU, seg_t_BxU, n_chunks) + logp_floor * pen_BxC)
    )
    / jnp.maximum(jnp.sum(w_B * s_B * jnp.sum(live_BxT, -1)), 1.0),
  }
  return num, den, metrics
