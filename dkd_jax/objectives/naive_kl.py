"""The naive materialised token-KL loss: the oracle for `kl.distill_loss`.

`reference_loss` builds the full [N, V] student and teacher logits and differentiates
with plain autodiff: no chunking, no sharding, no custom_vjp. It states the definitions
of the `kl` module docstring as directly as possible, so the tests compare the chunked,
fused, vocab-sharded kernel against it (value and gradient) and `benchmarks/kl_bench.py`
uses it as the baseline. Never use it in training: it is the [tokens, V] tensor the
kernel exists to avoid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dkd_jax.objectives.kl import KLSpec


def _dot32(a, b) -> jax.Array:
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def reference_loss(
  hidden_s_NxD,
  head_s_DxV,
  hidden_t_NxE,
  head_t_ExV,
  mask_N,
  spec: KLSpec,
  *,
  tokens_N=None,
  alpha=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Naive materialised [N, V] reference (plain autodiff): the tests' oracle and the
  benchmark's baseline. Same definitions as `distill_loss`, no chunking, no sharding."""
  spec.validate()
  tau, k = spec.temperature, spec.teacher_top_k
  z = _dot32(hidden_s_NxD, head_s_DxV)
  traw = lax.stop_gradient(_dot32(hidden_t_NxE, head_t_ExV))
  s, t = z / tau, traw / tau
  lq, lp = jax.nn.log_softmax(s), jax.nn.log_softmax(t)
  q, (lqr, lpr, valid) = jnp.exp(lq), (lq, lp, None)
  if 0 < k < t.shape[-1]:  # restricted pair; double where keeps autodiff nan-free
    valid = t >= lax.top_k(t, k)[0][:, -1:]
    restrict = lambda x: jnp.where(valid, jax.nn.log_softmax(jnp.where(valid, x, -jnp.inf)), 0.0)
    lqr, lpr = restrict(s), restrict(t)
  qr, pr = [jnp.exp(x) if valid is None else jnp.where(valid, jnp.exp(x), 0.0) for x in (lqr, lpr)]
  terms = spec.weights()
  use_f, use_r, use_j = terms.forward, terms.reverse, terms.jsd
  if use_j:
    b = spec.beta
    lM = jnp.log(b * pr + (1 - b) * q)
    per_tok = b * jnp.sum(pr * (lpr - lM), -1) + (1 - b) * jnp.sum(q * (lq - lM), -1)
  else:
    a = (spec.alpha if alpha is None else alpha) if (use_f and use_r) else float(use_f)
    per_tok = a * jnp.sum(pr * (lpr - lq), -1) if use_f else 0.0
    if use_r and spec.estimator == "sampled_token":
      at_y = lambda x: jnp.take_along_axis(x, tokens_N[:, None], -1)[:, 0]
      q_S = lambda: lax.stop_gradient(jnp.sum(jnp.where(valid, q, 0.0), -1))
      w = 1.0 if valid is None else at_y(valid) / q_S()
      r = lax.stop_gradient(at_y(lpr) - at_y(lqr))
      per_tok = per_tok + (1 - a) * (-w * r - w * r * (at_y(lqr) - lax.stop_gradient(at_y(lqr))))
    elif use_r:
      per_tok = per_tok + (1 - a) * jnp.sum(qr * (lqr - lpr), -1)
  mask = mask_N.astype(jnp.float32)
  loss = tau**2 * jnp.sum(mask * per_tok) / jnp.maximum(jnp.sum(mask), 1.0)
  return loss, _reference_metrics(z, traw, tokens_N)


def _reference_metrics(z_NxV, t_NxV, tokens_N) -> dict[str, jax.Array]:
  lq, lp = jax.nn.log_softmax(lax.stop_gradient(z_NxV)), jax.nn.log_softmax(t_NxV)
  q, p = jnp.exp(lq), jnp.exp(lp)
  out = dict(
    fkl=jnp.sum(p * (lp - lq), -1),
    rkl=jnp.sum(q * (lq - lp), -1),
    ent_s=-jnp.sum(q * lq, -1),
    ent_t=-jnp.sum(p * lp, -1),
  )
  if tokens_N is not None:
    out["logp_s"] = jnp.take_along_axis(lq, tokens_N[:, None], -1)[:, 0]
  return out
