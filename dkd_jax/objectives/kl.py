"""The distillation loss kernel: chunked, fused, vocab-sharded token KL.

`distill_loss` takes final hidden states and LM heads of student and teacher and never
builds a [tokens, V] logits tensor: a `lax.scan` over chunks of C tokens computes both
models' logits for one chunk, reduces them to per-token scalars and, when differentiated,
the gradient in the same pass (DESIGN §4: fusing beat a separate recomputing backward).
A `custom_vjp` returns d(hidden_s) and d(head_s) directly; teacher inputs get zeros.

With the heads sharded over mesh axis 'tensor' the kernel runs under `jax.shard_map`;
only per-token scalars cross shards (one pmax and one psum of a few floats per token,
plus one [N, D] psum of d(hidden)). Tokens may also be sharded over ('data', 'fsdp').

Definitions, per token, with q = softmax(z/τ) the student and p = softmax(t/τ) the
teacher (the loss is scaled by τ²; metrics are always at τ = 1, full vocab):

- forward  KL(p‖q);  reverse KL(q‖p);  mixed α·KL(p‖q) + (1−α)·KL(q‖p).
- jsd(β): M = βp + (1−β)q, JSD = β·KL(p‖M) + (1−β)·KL(q‖M) (the GKD / DESIGN §3 form).
  Near the ends JSD/β → KL(p‖q) and JSD/(1−β) → KL(q‖p); the unnormalised JSD is 0 at
  β ∈ {0, 1}, so we DEFINE β = 0 as forward KL and β = 1 as reverse KL (as TRL's GKD
  trainer does).
- estimator='sampled_token' (reverse part only): with y the given token (sampled from
  q), r = log p_y − log q_y, the per-token value is −r (the single-sample estimate of
  KL(q‖p), unbiased for y ∼ q) and the gradient is −r·∇log q_y, whose mean over y ∼ q
  is ∇KL(q‖p) (DESIGN §3). The metrics stay exact.
- teacher_top_k = k > 0: S = {v : t_v ≥ k-th largest teacher logit} (ties may make |S| >
  k), p̃ = p restricted to S and renormalised. forward uses KL(p̃‖q) with the FULL
  student (soft-target CE on k tokens, still pushing down mass outside S); the reverse
  term, infinite against p̃, uses the student restricted to S and renormalised, q̃:
  KL(q̃‖p̃) (S is treated as data, no gradient through it). With sampled_token the
  estimate is importance-weighted by 1{y∈S}/q(S), which keeps it unbiased for
  ∇KL(q̃‖p̃) under y ∼ q. jsd uses M = βp̃ + (1−β)q. Sharded: per-shard top-k, then an
  all_gather of k candidates per token finds the global threshold.

The naive [N, V] oracle of these definitions is `naive_kl.reference_loss`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

KINDS = ("forward", "reverse", "mixed", "jsd")
ESTIMATORS = ("full_vocab", "sampled_token")
VOCAB_AXIS = "tensor"
BATCH_AXES = ("data", "fsdp")
METRICS = ("fkl", "rkl", "ent_s", "ent_t")


def _is_number(v) -> bool:
  """A real scalar (Python or numpy: np.float32 is not a float subclass), not a bool."""
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _concrete(x) -> bool:
  """A value known on the host now (not a tracer inside jit)."""
  return x is not None and not isinstance(x, jax.core.Tracer)


def check_batch(mask_N, tokens_N=None, *, vocab: int, alpha=None) -> None:
  """Host validation of one batch's data inputs (O(N), no pass over V): raises
  ValueError naming the first bad entry. mask: finite and >= 0; tokens: ids in [0, V);
  alpha: a finite number in [0, 1] (a Python or numpy scalar, or a 0-d array).
  `distill_loss` calls it on concrete inputs; a loop whose step is jitted calls it once
  per batch before the batch goes to the device."""
  mask = np.asarray(mask_N)
  bad = ~np.isfinite(mask) | (mask < 0)
  if bad.any():
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    raise ValueError(
      f"mask_N must be finite and >= 0: mask_N[{i}] = {mask.reshape(-1)[i]} "
      f"({int(bad.sum())} bad entries); a masked position has weight 0"
    )
  if tokens_N is not None:
    tok = np.asarray(tokens_N).reshape(-1)
    out = (tok < 0) | (tok >= vocab)
    if out.any():
      i = int(np.flatnonzero(out)[0])
      raise ValueError(
        f"token ids must lie in [0, V={vocab}): tokens[{i}] = {int(tok[i])} "
        f"({int(out.sum())} out of range)"
      )
  if alpha is not None and _concrete(alpha):
    a = np.asarray(alpha)
    if a.ndim != 0 or not np.issubdtype(a.dtype, np.number) or not (0.0 <= float(a) <= 1.0):
      raise ValueError(f"alpha={alpha!r} must be a finite number in [0, 1]")


class Terms(NamedTuple):
  """Which KL terms a spec's per-token loss contains (static switches)."""

  forward: bool
  reverse: bool
  jsd: bool


@dataclasses.dataclass(frozen=True)
class KLSpec:
  """Which token KL to minimise; static (hashable) so jit closes over it."""

  kind: str = "forward"  # forward | reverse | mixed | jsd
  alpha: float = 0.5  # forward weight for kind='mixed'
  beta: float = 0.5  # jsd mixture weight on the teacher: M = βp + (1−β)q
  temperature: float = 1.0
  estimator: str = "full_vocab"  # full_vocab | sampled_token (reverse part only)
  teacher_top_k: int = 0  # 0 = off
  chunk: int = 256

  def validate(self) -> KLSpec:
    """Raises ValueError naming the field and its allowed values."""
    if self.kind not in KINDS:
      raise ValueError(f"KLSpec.kind={self.kind!r} is not allowed; choose one of {KINDS}")
    if self.estimator not in ESTIMATORS:
      raise ValueError(
        f"KLSpec.estimator={self.estimator!r} is not allowed; choose one of {ESTIMATORS}"
      )
    for name in ("alpha", "beta"):
      v = getattr(self, name)
      if not (_is_number(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"KLSpec.{name}={v!r} must be a number in [0, 1]")
    t = self.temperature
    if not (_is_number(t) and math.isfinite(t) and t > 0):
      raise ValueError(f"KLSpec.temperature={t!r} must be a finite number > 0")
    if not (isinstance(self.chunk, int) and self.chunk > 0):
      raise ValueError(f"KLSpec.chunk={self.chunk!r} must be an int > 0")
    if not (isinstance(self.teacher_top_k, int) and self.teacher_top_k >= 0):
      raise ValueError(f"KLSpec.teacher_top_k={self.teacher_top_k!r} must be an int >= 0 (0 = off)")
    if self.estimator == "sampled_token" and self.kind not in ("reverse", "mixed"):
      raise ValueError(
        "KLSpec.estimator='sampled_token' applies to the reverse part; use "
        f"kind in ('reverse', 'mixed'), not {self.kind!r}"
      )
    return self

  def weights(self) -> Terms:
    """Static switches of the loss terms; jsd's ends are forward / reverse."""
    if self.kind == "jsd" and self.beta in (0.0, 1.0):
      return Terms(forward=self.beta == 0.0, reverse=self.beta == 1.0, jsd=False)
    return Terms(
      forward=self.kind in ("forward", "mixed"),
      reverse=self.kind in ("reverse", "mixed"),
      jsd=self.kind == "jsd",
    )


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Everything static about one call (hashable: a custom_vjp nondiff argument)."""

  spec: KLSpec
  top_k: int  # 0 when off or k >= V
  has_tokens: bool
  mesh: object = None  # None: run without shard_map
  vocab_axis: str | None = None
  batch_axes: tuple | None = None


def _pmax(x, axis) -> jax.Array:
  return x if axis is None else lax.pmax(x, axis)


def _psum(x, axis) -> jax.Array:
  return x if axis is None else lax.psum(x, axis)


def _dot32(a, b) -> jax.Array:
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _log_softmax_group(xs_CxV, axis) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Log-probs, probs and log-normalisers of several vocab-sharded logit arrays.

  All arrays share one pmax and one psum of per-token scalars; entries at -inf
  (outside a restricted support) come out as log-prob -inf and prob 0.
  """
  m_CxG = _pmax(jnp.stack([jnp.max(x, -1) for x in xs_CxV], -1), axis)
  e_CxV = [jnp.exp(x - m_CxG[:, i, None]) for i, x in enumerate(xs_CxV)]
  z_CxG = _psum(jnp.stack([jnp.sum(e, -1) for e in e_CxV], -1), axis)
  lse_CxG = m_CxG + jnp.log(z_CxG)
  logp = [x - lse_CxG[:, i, None] for i, x in enumerate(xs_CxV)]
  prob = [e / z_CxG[:, i, None] for i, e in enumerate(e_CxV)]
  return logp, prob, lse_CxG


def _top_k_support(t_CxV, k, axis) -> jax.Array:
  """Boolean [C, V_local]: teacher logits at or above the global k-th largest."""
  local_C_k = lax.top_k(t_CxV, min(k, t_CxV.shape[-1]))[0]
  if axis is not None:  # only k candidates per token and shard cross devices
    local_C_k = lax.all_gather(local_C_k, axis, axis=1, tiled=True)
  theta_C = lax.top_k(local_C_k, k)[0][:, -1]
  return t_CxV >= theta_C[:, None]


def _at_token(x_CxV, idx_C, on_shard_C) -> jax.Array:
  """x at each token's local vocab index; 0 where the token lives on another shard."""
  safe = jnp.clip(idx_C, 0, x_CxV.shape[-1] - 1)[:, None]
  return jnp.where(on_shard_C, jnp.take_along_axis(x_CxV, safe, -1)[:, 0], 0.0)


class _Dists(NamedTuple):
  """One chunk's distributions. Loss terms use τ-scaled logits (lq, lp, q, p); the
  'r' fields are the top-k restricted pair (== unrestricted without top-k); the '1'
  fields are at τ = 1 for the metrics. Fields that a spec does not need are None."""

  lq_CxV: jax.Array
  lp_CxV: jax.Array
  q_CxV: jax.Array
  p_CxV: jax.Array
  lqr_CxV: jax.Array
  lpr_CxV: jax.Array
  qr_CxV: jax.Array
  pr_CxV: jax.Array
  dr_CxV: jax.Array  # log q̃ − log p̃ (0 outside the top-k support)
  lq1_CxV: jax.Array
  lp1_CxV: jax.Array
  q1_CxV: jax.Array
  p1_CxV: jax.Array
  valid_CxV: jax.Array | None = None  # top-k support S
  q_S_C: jax.Array | None = None  # q(S), the restricted student's normaliser
  lM_CxV: jax.Array | None = None  # log of the jsd mixture M


class _Sums(NamedTuple):
  """Per-token sums over the vocabulary (psummed over shards); None = not needed."""

  fkl: jax.Array
  rkl: jax.Array
  ent_s: jax.Array
  ent_t: jax.Array
  F: jax.Array | None = None  # forward loss term / τ²
  R: jax.Array | None = None  # reverse loss term / τ² (the k1 estimate if sampled)
  KLpM: jax.Array | None = None
  KLqM: jax.Array | None = None
  logp_s: jax.Array | None = None  # student log-prob of the given token (τ = 1)
  r_y: jax.Array | None = None  # log p̃_y − log q̃_y of the given token
  in_S: jax.Array | None = None  # 1 if the given token is in the top-k support


def _distributions(plan, z_CxV, traw_CxV) -> _Dists:
  """All log-prob / prob arrays the loss, its gradient and the metrics need."""
  tau, axis = plan.spec.temperature, plan.vocab_axis
  s_CxV, t_CxV = (z_CxV, traw_CxV) if tau == 1 else (z_CxV / tau, traw_CxV / tau)
  xs = [s_CxV, t_CxV]
  valid = _top_k_support(t_CxV, plan.top_k, axis) if plan.top_k else None
  if valid is not None:
    xs += [jnp.where(valid, s_CxV, -jnp.inf), jnp.where(valid, t_CxV, -jnp.inf)]
  if tau != 1:
    xs += [z_CxV, traw_CxV]
  logp, prob, lse = _log_softmax_group(xs, axis)
  if valid is not None:  # restricted pair; its log-ratio is 0 (not nan) outside S
    restricted = dict(
      lqr_CxV=logp[2],
      lpr_CxV=logp[3],
      qr_CxV=prob[2],
      pr_CxV=prob[3],
      dr_CxV=jnp.where(valid, logp[2] - logp[3], 0.0),
      q_S_C=jnp.exp(lse[:, 2] - lse[:, 0]),
    )
  else:
    restricted = dict(
      lqr_CxV=logp[0], lpr_CxV=logp[1], qr_CxV=prob[0], pr_CxV=prob[1], dr_CxV=logp[0] - logp[1]
    )
  i = (4 if valid is not None else 2) if tau != 1 else 0  # metrics: τ = 1 normalisers
  lM = None
  if plan.spec.weights().jsd:  # log M from log-probs: finite wherever q is
    b = plan.spec.beta
    lM = jnp.logaddexp(math.log(b) + restricted["lpr_CxV"], math.log(1 - b) + logp[0])
  return _Dists(
    lq_CxV=logp[0],
    lp_CxV=logp[1],
    q_CxV=prob[0],
    p_CxV=prob[1],
    lq1_CxV=logp[i],
    lp1_CxV=logp[i + 1],
    q1_CxV=prob[i],
    p1_CxV=prob[i + 1],
    valid_CxV=valid,
    lM_CxV=lM,
    **restricted,
  )


def _token_sums(plan, d: _Dists, tok_C, v_off) -> tuple[_Sums, tuple[jax.Array, jax.Array]]:
  """Per-token partial sums over this shard's vocab, summed over shards."""
  spec = plan.spec
  terms = spec.weights()
  same = spec.temperature == 1 and not plan.top_k  # loss terms == tau=1 metrics
  sums = dict(
    fkl=jnp.sum(d.p1_CxV * (d.lp1_CxV - d.lq1_CxV), -1),
    rkl=jnp.sum(d.q1_CxV * (d.lq1_CxV - d.lp1_CxV), -1),
    ent_s=-jnp.sum(d.q1_CxV * d.lq1_CxV, -1),
    ent_t=-jnp.sum(d.p1_CxV * d.lp1_CxV, -1),
  )
  if terms.forward and not same:
    sums["F"] = jnp.sum(jnp.where(d.pr_CxV > 0, d.pr_CxV * (d.lpr_CxV - d.lq_CxV), 0.0), -1)
  if terms.reverse and spec.estimator == "full_vocab" and not same:
    sums["R"] = jnp.sum(d.qr_CxV * d.dr_CxV, -1)
  if terms.jsd:
    sums["KLpM"] = jnp.sum(jnp.where(d.pr_CxV > 0, d.pr_CxV * (d.lpr_CxV - d.lM_CxV), 0.0), -1)
    sums["KLqM"] = jnp.sum(d.q_CxV * (d.lq_CxV - d.lM_CxV), -1)
  idx_C = tok_C - v_off
  on_shard = (idx_C >= 0) & (idx_C < d.lq_CxV.shape[-1])
  if plan.has_tokens:
    sums["logp_s"] = _at_token(d.lq1_CxV, idx_C, on_shard)
  sampled = terms.reverse and spec.estimator == "sampled_token"
  if sampled:
    sums["r_y"] = -_at_token(d.dr_CxV, idx_C, on_shard)  # log p̃_y − log q̃_y
    if plan.top_k:
      sums["in_S"] = _at_token(d.valid_CxV.astype(jnp.float32), idx_C, on_shard)
  names = sorted(sums)  # one psum of every per-token scalar
  total = _psum(jnp.stack([sums[n] for n in names], -1), plan.vocab_axis)
  out = _Sums(**{n: total[:, i] for i, n in enumerate(names)})
  if same:
    out = out._replace(F=out.fkl, R=out.rkl)
  if sampled:  # the k1 estimate; r_y = 0 off S
    w_C = out.in_S / d.q_S_C if plan.top_k else 1.0  # importance weight, no grad
    out = out._replace(R=-w_C * out.r_y)
  return out, (idx_C, on_shard)


def _mix(spec, alpha) -> tuple[float | jax.Array, float | jax.Array]:
  """(forward, reverse) weights of the per-token loss; alpha is traced for 'mixed'."""
  terms = spec.weights()
  if terms.forward and terms.reverse:
    return alpha, 1 - alpha
  return float(terms.forward), float(terms.reverse)


def _token_loss(plan, sums: _Sums, alpha) -> tuple[jax.Array, jax.Array | float]:
  """Per-token loss / τ² and its derivative wrt alpha."""
  spec = plan.spec
  if spec.weights().jsd:
    return spec.beta * sums.KLpM + (1 - spec.beta) * sums.KLqM, 0.0
  a_f, a_r = _mix(spec, alpha)
  loss_C = (a_f * sums.F if sums.F is not None else 0.0) + (
    a_r * sums.R if sums.R is not None else 0.0
  )
  return loss_C, (sums.F - sums.R if spec.kind == "mixed" else 0.0)


def _logit_grad(plan, d: _Dists, sums: _Sums, alpha, tok_loc) -> jax.Array:
  """d(per-token loss / τ²) / d(z/τ) for one chunk: the DESIGN §3 closed forms."""
  spec = plan.spec
  terms = spec.weights()
  if terms.jsd:
    return (1 - spec.beta) * d.q_CxV * (d.lq_CxV - d.lM_CxV - sums.KLqM[:, None])
  a_f, a_r = _mix(spec, alpha)
  g_CxV = a_f * (d.q_CxV - d.pr_CxV) if terms.forward else 0.0
  if terms.reverse and spec.estimator == "full_vocab":
    g_CxV = g_CxV + a_r * d.qr_CxV * (d.dr_CxV - sums.R[:, None])
  elif terms.reverse:  # -w·r·(onehot_y − q̃); sums.R holds -w·r
    idx_C, on_shard = tok_loc
    onehot = (jnp.arange(d.q_CxV.shape[-1]) == idx_C[:, None]) & on_shard[:, None]
    g_CxV = g_CxV + a_r * sums.R[:, None] * (onehot - d.qr_CxV)
  return g_CxV


def _chunk(
  plan, with_grad, Ws, Wt, alpha, v_off, xs
) -> tuple[dict[str, jax.Array], jax.Array | None]:
  """One chunk of C tokens: loss, metrics and (optionally) the logit cotangent."""
  hs_CxD, ht_CxE, w_C, tok_C = xs
  d = _distributions(plan, _dot32(hs_CxD, Ws), _dot32(ht_CxE, Wt))
  sums, tok_loc = _token_sums(plan, d, tok_C, v_off)
  loss_C, dalpha_C = _token_loss(plan, sums, alpha)
  tau = plan.spec.temperature
  out = {k: getattr(sums, k) for k in METRICS + ("logp_s",) if getattr(sums, k) is not None}
  out["loss"] = tau**2 * loss_C
  out["dalpha"] = tau**2 * dalpha_C + jnp.zeros_like(loss_C)
  if not with_grad:
    return out, None
  # d loss/dz = τ² · (1/τ) · g, weighted by this token's share of the masked mean.
  # The select fuses into the multiply (no extra pass over V); masked rows get exactly 0.
  g_CxV = _logit_grad(plan, d, sums, alpha, tok_loc)
  dz_CxV = jnp.where(w_C[:, None] > 0, (tau * w_C)[:, None] * g_CxV, 0.0)
  return out, dz_CxV.astype(Ws.dtype)


def _chunks(x, n_chunks, c) -> jax.Array:
  pad = n_chunks * c - x.shape[0]
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape(n_chunks, c, *x.shape[1:])


def _body(plan, with_grad, hs, Ws, ht, Wt, mask, tok, alpha) -> tuple[jax.Array, ...]:
  """Per-device kernel: scan over token chunks; psums only over named mesh axes."""
  n, vl = hs.shape[0], Ws.shape[1]
  c = min(plan.spec.chunk, n)
  n_chunks = -(-n // c)
  # Masked rows never reach a sum (jnp.where, not a multiply): a NaN/inf in a padded
  # row's hidden state would otherwise survive 0 * NaN into the loss and gradients.
  live = mask > 0
  den = _psum(jnp.sum(jnp.where(live, mask, 0.0)), plan.batch_axes)
  w_N = jnp.where(live, mask, 0.0) / jnp.maximum(den, 1.0)
  axis = plan.vocab_axis
  v_off = 0 if axis is None else lax.axis_index(axis) * vl
  xs = tuple(_chunks(x, n_chunks, c) for x in (hs, ht, w_N, tok))

  def step(dW_DxV, x) -> tuple[jax.Array, dict[str, jax.Array]]:
    out, dz_CxV = _chunk(plan, with_grad, Ws, Wt, alpha, v_off, x)
    if with_grad:  # dW accumulates in fp32; dh leaves as a per-shard partial
      h_CxD = jnp.where(x[2][:, None] > 0, x[0], 0)  # a masked row's NaN stays out of dW
      dW_DxV = dW_DxV + _dot32(h_CxD.T, dz_CxV)
      out["dh"] = _dot32(dz_CxV, Ws.T)
    return dW_DxV, out

  dW0 = jnp.zeros((hs.shape[1], vl) if with_grad else (), jnp.float32)
  if with_grad and axis is not None:  # the carry varies per device once updated
    dW0 = lax.pcast(dW0, (*plan.batch_axes, axis), to="varying")
  dW, outs = lax.scan(step, dW0, xs)
  outs = jax.tree.map(lambda a: a.reshape(n_chunks * c, *a.shape[2:])[:n], outs)
  loss = _psum(jnp.sum(jnp.where(live, w_N * outs.pop("loss"), 0.0)), plan.batch_axes)
  dalpha = _psum(jnp.sum(jnp.where(live, w_N * outs.pop("dalpha"), 0.0)), plan.batch_axes)
  if not with_grad:
    return loss, outs
  dh = _psum(outs.pop("dh"), axis).astype(hs.dtype)
  dW = _psum(dW, plan.batch_axes).astype(Ws.dtype)
  return loss, outs, dh, dW, dalpha


def _run(plan, with_grad, *args) -> tuple[jax.Array, ...]:
  """Calls `_body` directly, or under shard_map when the plan names a mesh."""
  fn = functools.partial(_body, plan, with_grad)
  if plan.mesh is None:
    return fn(*args)
  b = plan.batch_axes
  metric_specs = {k: P(b) for k in METRICS + (("logp_s",) if plan.has_tokens else ())}
  in_specs = (P(b, None), P(None, VOCAB_AXIS), P(b, None), P(None, VOCAB_AXIS), P(b), P(b), P())
  out_specs = (P(), metric_specs)
  if with_grad:
    out_specs += (P(b, None), P(None, VOCAB_AXIS), P())
  return jax.shard_map(fn, mesh=plan.mesh, in_specs=in_specs, out_specs=out_specs)(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kernel(plan, hs, Ws, ht, Wt, mask, tok, alpha) -> tuple[jax.Array, dict[str, jax.Array]]:
  return _run(plan, False, hs, Ws, ht, Wt, mask, tok, alpha)


def _kernel_fwd(
  plan, hs, Ws, ht, Wt, mask, tok, alpha
) -> tuple[tuple[jax.Array, dict[str, jax.Array]], tuple]:
  loss, metrics, dh, dW, dalpha = _run(plan, True, hs, Ws, ht, Wt, mask, tok, alpha)
  zeros = (
    jnp.zeros_like(ht),
    jnp.zeros_like(Wt),
    jnp.zeros_like(mask),
    np.zeros(tok.shape, jax.dtypes.float0),
  )
  return (loss, metrics), (dh, dW, dalpha, zeros)


def _kernel_bwd(plan, res, cts) -> tuple[jax.Array, ...]:
  dh, dW, dalpha, (dht, dWt, dmask, dtok) = res
  g = cts[0]  # metrics carry no gradient: their cotangents are dropped
  scale = lambda x: (g * x.astype(jnp.float32)).astype(x.dtype)
  return scale(dh), scale(dW), dht, dWt, dmask, dtok, g * dalpha


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


def _check_inputs(hs, Ws, ht, Wt, mask, spec, tokens, mesh) -> None:
  """Shape / argument checks that must fail before anything is traced."""
  spec.validate()
  if hs.ndim != 2 or Ws.ndim != 2 or ht.ndim != 2 or Wt.ndim != 2:
    raise ValueError("hidden_s_NxD, head_s_DxV, hidden_t_NxE, head_t_ExV must be 2-D")
  (n, dim), (dim_t, dim_h) = hs.shape, ht.shape
  if Ws.shape[0] != dim or Wt.shape[0] != dim_h:
    raise ValueError(
      f"head_s_DxV {Ws.shape} / head_t_ExV {Wt.shape} do not match hidden sizes D={dim} / E={dim_h}"
    )
  if Ws.shape[1] != Wt.shape[1]:
    raise ValueError(
      f"head_t_ExV has vocab V={Wt.shape[1]} but head_s_DxV has "
      f"V={Ws.shape[1]}; teacher and student must share the vocabulary"
    )
  if dim_t != n or mask.shape != (n,):
    raise ValueError(f"hidden_t_NxE {ht.shape} and mask_N {mask.shape} must have N={n}")
  if tokens is not None and tuple(tokens.shape) != (n,):
    raise ValueError(f"tokens_N has shape {tuple(tokens.shape)}, expected ({n},)")
  if spec.estimator == "sampled_token" and tokens is None:
    raise ValueError(
      "estimator='sampled_token' needs tokens_N (the sampled token ids); "
      "pass tokens_N or use estimator='full_vocab'"
    )
  if mesh is not None:
    shards = {
      "tensor": mesh.shape[VOCAB_AXIS],
      "data*fsdp": math.prod(mesh.shape[a] for a in BATCH_AXES),
    }
    if Ws.shape[1] % shards["tensor"]:
      raise ValueError(
        f"head_s_DxV: vocab V={Ws.shape[1]} does not divide mesh axis "
        f"'tensor' of size {shards['tensor']}"
      )
    if n % shards["data*fsdp"]:
      raise ValueError(
        f"hidden_s_NxD: N={n} tokens do not divide the batch mesh axes "
        f"('data', 'fsdp') of size {shards['data*fsdp']}"
      )


def distill_loss(
  hidden_s_NxD,
  head_s_DxV,
  hidden_t_NxE,
  head_t_ExV,
  mask_N,
  spec: KLSpec,
  *,
  tokens_N=None,
  alpha=None,
  mesh=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Masked-mean distillation loss and per-token metrics; see the module docstring.

  loss = sum(mask * per_token_loss) / max(sum(mask), 1), masked rows (mask 0) excluded by
  selection, so a NaN there changes nothing. Host-known inputs are checked first
  (`check_batch`: mask finite and >= 0, token ids in [0, V), alpha a finite number in
  [0, 1]; ValueError naming the entry); traced ones that break those rules give a NaN
  loss. `alpha` optionally overrides
  spec.alpha (kind='mixed') with a traced scalar. With `mesh` (axes 'data', 'fsdp',
  'tensor') the heads are vocab-sharded over 'tensor' and tokens over ('data', 'fsdp').
  Returns (loss, metrics): per-token [N] arrays 'fkl', 'rkl', 'ent_s', 'ent_t' and, when
  tokens are given, 'logp_s' (student log-prob of tokens_N), all at τ = 1, full vocab,
  without gradient. Gradients flow to hidden_s and head_s; the teacher's are zero.
  """
  _check_inputs(hidden_s_NxD, head_s_DxV, hidden_t_NxE, head_t_ExV, mask_N, spec, tokens_N, mesh)
  vocab = head_s_DxV.shape[1]
  if alpha is not None and _concrete(alpha):
    check_batch(np.zeros(0), vocab=vocab, alpha=alpha)
  if _concrete(mask_N) and (tokens_N is None or _concrete(tokens_N)):
    check_batch(mask_N, tokens_N, vocab=vocab)  # on the host, before anything runs
  top_k = spec.teacher_top_k if 0 < spec.teacher_top_k < vocab else 0
  if mesh is not None and all(s == 1 for s in mesh.shape.values()):
    mesh = None  # one device: collectives are identities, skip shard_map
  axes = dict(mesh=mesh, vocab_axis=VOCAB_AXIS, batch_axes=BATCH_AXES) if mesh else {}
  plan = _Plan(spec, top_k, tokens_N is not None, **axes)
  n = hidden_s_NxD.shape[0]
  tok = jnp.zeros((n,), jnp.int32) if tokens_N is None else jnp.asarray(tokens_N, jnp.int32)
  a = jnp.asarray(spec.alpha if alpha is None else alpha, jnp.float32)
  mask = jnp.asarray(mask_N, jnp.float32)
  loss, metrics = _kernel(
    plan,
    hidden_s_NxD,
    head_s_DxV,
    lax.stop_gradient(hidden_t_NxE),
    lax.stop_gradient(head_t_ExV),
    mask,
    tok,
    a,
  )
  # Inside jit the checks above cannot run: bad inputs then give a NaN loss (O(N), no
  # pass over V), which a run's finite check stops on, instead of a wrong finite one.
  bad = ~jnp.all(jnp.isfinite(mask) & (mask >= 0)) | ~((a >= 0) & (a <= 1))
  if tokens_N is not None:
    bad = bad | jnp.any((tok < 0) | (tok >= vocab))
  return jnp.where(bad, jnp.nan, loss), metrics
