"""One step's loss against one or several teachers, each with its own tokenizer.

The train step (`step.distill_loss_fn`) runs the student once; for every teacher of
`StepStatic.teachers` this module runs that teacher and returns the (numerator,
denominator) of its share of the loss, so the step's loss is Σ num / Σ den. Which rows a
teacher scores, and with what weight, is data: `batch['teacher_w']` [B, K] (one-hot rows
route each sequence to one teacher; fractional rows mix their losses with fixed weights).

A teacher with the student's vocabulary goes through the fused token-KL kernel (its mask
scaled by the row weights). A teacher with another tokenizer reads its own tokens of the
same text (`xtok_tokens_k`) and the chunk alignment (`xtok_seg_s_k`, `xtok_seg_t_k`) that
the batch builder made (`data.alignment`); its loss is `objectives.xtok`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dkd_jax.data import alignment
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import xtok


@dataclasses.dataclass(frozen=True)
class TeacherStatic:
  """One teacher, static. vocab_map None: it shares the student's vocabulary. Otherwise
  vocab_map[v] is the student id of teacher id v's string, or -1 (`alignment.vocab_map`)."""

  graphdef: Any
  vocab_map: tuple[int, ...] | None = None
  token_level: bool = False  # teacher rows: add the mapped forward term to sequence KD
  uld_weight: float = 1.0  # weight of the sorted-probability L1 on unshared tokens
  credit: int = 0  # student rows: later chunks in each chunk's weight (`xtok.chunk_reverse`)

  @property
  def cross(self) -> bool:
    return self.vocab_map is not None


def forward_weights(spec: kl_lib.KLSpec, alpha) -> tuple[Any, Any]:
  """(forward, reverse) weights: α and 1 − α for 'mixed', else 1/0 by kind."""
  terms = spec.weights()
  if terms.forward and terms.reverse:
    return alpha, 1.0 - alpha
  return float(terms.forward), float(terms.reverse)


def _same_vocab(
  spec, mesh, ts, hidden_s_NxD, head_s, t_params, batch, targets_N, w_B
) -> tuple[jax.Array, jax.Array, dict]:
  tokens_BxT = batch["tokens"]
  B, T = tokens_BxT.shape
  hidden_t, _ = model_lib.apply(ts.graphdef, t_params, tokens_BxT)
  head_t = model_lib.head(ts.graphdef, t_params)
  mask_N = (batch["loss_mask"].astype(jnp.float32) * w_B[:, None]).reshape(-1)
  loss, tok = kl_lib.distill_loss(
    hidden_s_NxD,
    head_s,
    jax.lax.stop_gradient(hidden_t.reshape(B * T, -1)),
    jax.lax.stop_gradient(head_t),
    mask_N,
    spec,
    tokens_N=targets_N,
    alpha=batch["alpha"],
    mesh=mesh,
  )
  den = jnp.sum(mask_N)
  metrics = {k: jnp.sum(jnp.where(mask_N > 0, tok[k] * mask_N, 0.0)) for k in kl_lib.METRICS}
  return loss * den, den, metrics


def _cross(
  spec, ts, k, hidden_s_BxTxD, head_s, t_params, batch, w_B
) -> tuple[jax.Array, jax.Array, dict]:
  tokens_t = batch[f"xtok_tokens_{k}"]
  seg_s, seg_t = batch[f"xtok_seg_s_{k}"], batch[f"xtok_seg_t_{k}"]
  B, T = batch["tokens"].shape
  U = tokens_t.shape[1]
  tau, chunk = spec.temperature, spec.chunk
  hidden_t, _ = model_lib.apply(ts.graphdef, t_params, tokens_t)
  hidden_t = jax.lax.stop_gradient(hidden_t)
  head_t = jax.lax.stop_gradient(model_lib.head(ts.graphdef, t_params))
  logq, ent_s = xtok.token_logprobs(
    hidden_s_BxTxD.reshape(B * T, -1),
    head_s,
    jnp.roll(batch["tokens"], -1, axis=1).reshape(-1),
    temperature=tau,
    chunk=chunk,
  )
  logp, ent_t = xtok.token_logprobs(
    hidden_t.reshape(B * U, -1),
    head_t,
    jnp.roll(tokens_t, -1, axis=1).reshape(-1),
    temperature=tau,
    chunk=chunk,
  )
  a_f, a_r = forward_weights(spec, batch["alpha"])
  fwd_BxC = None
  if spec.weights().forward:  # the token-level term at chunk starts (both see the same text)
    start_s, _ = xtok.chunk_starts(seg_s, T)
    start_t, _ = xtok.chunk_starts(seg_t, T)
    fwd = xtok.mapped_forward(
      xtok.at_chunk_starts(hidden_s_BxTxD, head_s, start_s),
      xtok.at_chunk_starts(hidden_t, head_t, start_t),
      np.asarray(ts.vocab_map),
      temperature=tau,
      uld_weight=ts.uld_weight,
    )
    fwd_BxC = fwd.reshape(B, T)
  num, den, m = xtok.loss_sums(
    logq.reshape(B, T),
    logp.reshape(B, U),
    seg_s,
    seg_t,
    batch["student_row"],
    w_B,
    n_chunks=T,
    a_f=a_f,
    a_r=a_r,
    fwd_BxC=fwd_BxC,
    token_level=ts.token_level,
    pen_B=batch[f"xtok_pen_{k}"],
    logp_floor=alignment.LOGP_FLOOR,
    credit=ts.credit,
  )
  live_s = (seg_s >= 0).reshape(-1) * jnp.repeat(w_B, T)
  live_t = (seg_t >= 0).reshape(-1) * jnp.repeat(w_B, U)
  metrics = {
    "rkl": m["rkl"] * den,
    "fkl": m["fkl"] * den,
    "ent_s": jnp.sum(jnp.where(live_s > 0, ent_s * live_s, 0.0)),
    "ent_t": jnp.sum(jnp.where(live_t > 0, ent_t * live_t, 0.0))
    * den
    / jnp.maximum(jnp.sum(live_t), 1.0),
    "chunks_per_token": m["chunks"],
    "teacher_logp": m["teacher_logp"] * den,
  }
  return tau**2 * num, den, metrics


def teacher_sums(
  spec, mesh, ts: TeacherStatic, k: int, student, t_params, batch, targets_N
) -> tuple[jax.Array, jax.Array, dict]:
  """(numerator, denominator, metric sums weighted like the denominator) of teacher k.
  `student` = (hidden [B, T, D], head [D, V]); targets_N: the kernel's token targets."""
  hidden_s_BxTxD, head_s = student
  w_B = batch["teacher_w"][:, k].astype(jnp.float32)
  if ts.cross:
    return _cross(spec, ts, k, hidden_s_BxTxD, head_s, t_params, batch, w_B)
  B, T = batch["tokens"].shape
  return _same_vocab(
    spec, mesh, ts, hidden_s_BxTxD.reshape(B * T, -1), head_s, t_params, batch, targets_N, w_B
  )
