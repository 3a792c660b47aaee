"""The distillation loss against a cached teacher top-k (`data.teacher_source='cached_topk'`).

The teacher is not on device: per response token the cache holds its top-k ids and
log-probs. The conventions are those of `kl.distill_loss`'s in-step `teacher_top_k`
path (tests/objectives/test_kl.py checks loss and gradients against it): forward KL(p̃‖q) with the
full student, reverse KL(q̃‖p̃) with the student renormalised on the cached set, τ².
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dkd_jax.objectives.kl import KLSpec


def _cached_topk_terms(
  logits_CxV, ids_CxK, logp_t_CxK, tau
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(forward, reverse, student entropy, teacher entropy) per token at temperature tau:
  forward KL(p̃‖q) with the full student; reverse KL(q̃‖p̃), the student renormalised on
  the cached set S (the same conventions as the in-step `teacher_top_k` path)."""
  logq_CxV = jax.nn.log_softmax(logits_CxV / tau, axis=-1)
  logq_CxK = jnp.take_along_axis(logq_CxV, ids_CxK, axis=-1)
  logp_CxK = jax.nn.log_softmax(logp_t_CxK / tau, axis=-1)
  p_CxK = jnp.exp(logp_CxK)
  fkl = jnp.sum(p_CxK * (logp_CxK - logq_CxK), axis=-1)
  logq_s_CxK = jax.nn.log_softmax(logq_CxK, axis=-1)
  rkl = jnp.sum(jnp.exp(logq_s_CxK) * (logq_s_CxK - logp_CxK), axis=-1)
  ent_s = -jnp.sum(jnp.exp(logq_CxV) * logq_CxV, axis=-1)
  ent_t = -jnp.sum(p_CxK * logp_CxK, axis=-1)
  return fkl, rkl, ent_s, ent_t


def cached_topk_loss(
  hidden_s_NxD, head_s_DxV, ids_NxK, logp_t_NxK, mask_N, spec: KLSpec, *, alpha=None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Distillation loss against cached teacher top-k (ids, log-probs) instead of a teacher
  forward: no teacher params are needed. Chunks of `spec.chunk` tokens under
  `jax.checkpoint`, so only one [C, V] student logits chunk exists at a time (forward and
  backward). Returns (masked-mean loss, per-token {fkl, rkl, ent_s, ent_t} at τ=1; fkl,
  rkl and ent_t are over the cached set, ent_s over the full vocabulary)."""
  spec.validate()
  if spec.kind == "jsd" or spec.estimator != "full_vocab":
    raise ValueError(
      "cached teacher top-k supports kind forward/reverse/mixed with "
      f"estimator='full_vocab', not kind={spec.kind!r} "
      f"estimator={spec.estimator!r}"
    )
  N, D = hidden_s_NxD.shape
  C = min(spec.chunk, N)
  pad = (-N) % C
  padded = lambda x: jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(
    (-1, C) + x.shape[1:]
  )
  w = spec.weights()
  a = jnp.asarray(spec.alpha if alpha is None else alpha, jnp.float32)

  @jax.checkpoint
  def chunk(h_CxD, ids_CxK, logp_CxK) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    logits_CxV = jnp.dot(h_CxD, head_s_DxV.astype(h_CxD.dtype), preferred_element_type=jnp.float32)
    fkl, rkl, ent_s, ent_t = _cached_topk_terms(logits_CxV, ids_CxK, logp_CxK, 1.0)
    if spec.temperature == 1:
      f_tau, r_tau = fkl, rkl
    else:
      f_tau, r_tau, _, _ = _cached_topk_terms(logits_CxV, ids_CxK, logp_CxK, spec.temperature)
    if w.forward and w.reverse:
      loss = a * f_tau + (1 - a) * r_tau
    else:
      loss = f_tau if w.forward else r_tau
    return spec.temperature**2 * loss, (fkl, rkl, ent_s, ent_t)  # τ², as the kernel

  _, (loss_N, metrics) = jax.lax.scan(
    lambda carry, xs: (carry, chunk(*xs)),
    None,
    (padded(hidden_s_NxD), padded(ids_NxK), padded(logp_t_NxK.astype(jnp.float32))),
  )
  flat = lambda x: x.reshape(-1)[:N]
  mask_N = mask_N.astype(jnp.float32)
  loss = jnp.sum(flat(loss_N) * mask_N) / jnp.maximum(jnp.sum(mask_N), 1.0)
  return loss, dict(zip(("fkl", "rkl", "ent_s", "ent_t"), map(flat, metrics)))
