"""GRPO after distillation (DESIGN §9): rewards, group advantages, the clipped objective,
and the one jitted step.

Host side (numpy): `rewards` grades G responses per prompt with the task's verifier
(a truncated response is wrong whatever it says), `group_advantages` normalises them
within each prompt's group. Device side: `grpo_step(static, state, batch, ref_params)`
is a pure function, jitted once by `jit_grpo_step` with explicit shardings and the
train state donated, exactly like `train.jit_train_step`.

Per response token t of row i, with π the policy at the rollout temperature τ,
ρ_t = exp(log π_θ(y_t|s_t) − log π_old(y_t|s_t)) and the objective is

  L = − Σ_t w_t · min(ρ_t A_i, clip(ρ_t, 1−ε_low, 1+ε_high) A_i) + β · Σ_t w_t · KL_t

with weights w from `token_weights` ('token': every response token of the batch
counts once; 'sequence': each row's tokens share 1/B). KL_t is KL(π_θ‖π_ref) at the
state, exact over the full vocabulary by the fused kernel (`kl.distill_loss`, reverse),
or the k3 estimate exp(Δ) − Δ − 1 with Δ = log π_ref(y_t) − log π_θ(y_t) on the
sampled token. log π_θ(y_t) comes from `token_logprobs`: chunked and rematerialised,
so no [tokens, V] logits tensor exists here either.

π_old is the rollout's own sampling log-probs (`behavior_logp='rollout'`), or the
step's own log-probs at the first update of a batch (`'recompute'`: the params of the
first update are by definition the ones that sampled the batch; ρ = 1 bit-exactly).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from dkd_jax.core import sharding
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib

ADVANTAGES = ("mean_std", "mean")
AGGREGATIONS = ("token", "sequence")
KL_ESTIMATORS = ("full_vocab", "k3")
KL_REFS = ("init", "teacher")
BEHAVIOR_LOGPS = ("rollout", "recompute")
TRUNCATED = "truncated"  # reward reason of a response that hit the length limit
DYNAMIC_SAMPLING = ("off", "drop", "resample")


@dataclasses.dataclass(frozen=True)
class GRPOSpec:
  """The objective's static choices (hashable: jit closes over it)."""

  eps_low: float = 0.2
  eps_high: float = 0.2
  aggregation: str = "token"  # token | sequence
  kl_coef: float = 0.0  # β; 0 = no reference model in the step
  kl_estimator: str = "full_vocab"  # full_vocab (exact, fused kernel) | k3 (sampled token)
  temperature: float = 1.0  # the rollout temperature: π = softmax(logits / τ)
  chunk: int = 256

  def validate(self) -> GRPOSpec:
    """Raises ValueError naming the field (as config.rl.<field>) and the allowed values."""
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (num(self.eps_low) and 0.0 <= self.eps_low < 1.0):
      raise ValueError(f"config.rl.eps_low={self.eps_low!r} must be a number in [0, 1)")
    if not (num(self.eps_high) and self.eps_high >= 0.0):
      raise ValueError(f"config.rl.eps_high={self.eps_high!r} must be a number >= 0")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(
        f"config.rl.aggregation={self.aggregation!r} is not allowed; choose one of {AGGREGATIONS}"
      )
    if self.kl_estimator not in KL_ESTIMATORS:
      raise ValueError(
        f"config.rl.kl_estimator={self.kl_estimator!r} is not allowed; "
        f"choose one of {KL_ESTIMATORS}"
      )
    if not (isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0):
      raise ValueError(f"config.rl.kl_coef={self.kl_coef!r} must be a number >= 0")
    if not self.temperature > 0:
      raise ValueError(
        f"config.rollout.temperature={self.temperature!r} must be > 0 for "
        "GRPO (the policy is softmax(logits / temperature); greedy has none)"
      )
    if not (isinstance(self.chunk, int) and self.chunk > 0):
      raise ValueError(f"config.train.kl_chunk={self.chunk!r} must be an int > 0")
    return self


# ----------------------------------------------------------------------------- host side


def rewards(
  texts: Sequence[str], golds: Sequence[str], truncated_N, grade: Callable
) -> tuple[np.ndarray, list[str]]:
  """(reward_N float32 in {0, 1}, reason_N): 1 iff the verifier accepts the answer and
  the response ended by itself. A truncated response scores 0 even when its text
  holds the right number: reward for an unfinished answer would teach the policy to
  run into the length limit."""
  out, reasons = np.zeros((len(texts),), np.float32), []
  for i, (text, gold, cut) in enumerate(zip(texts, golds, np.asarray(truncated_N, bool))):
    if cut:
      reasons.append(TRUNCATED)
      continue
    g = grade(text, gold)
    out[i] = float(g.correct)
    reasons.append(g.reason)
  return out, reasons


def group_advantages(reward_PxG, advantage: str = "mean_std", eps: float = 1e-6) -> np.ndarray:
  """A = r − mean_group(r), divided by (std_group(r) + eps) for 'mean_std' (population
  std, ddof 0). A group whose rewards tie gets exactly 0 (no gradient), not 0/eps."""
  if advantage not in ADVANTAGES:
    raise ValueError(
      f"config.rl.advantage={advantage!r} is not allowed; choose one of {ADVANTAGES}"
    )
  r = np.asarray(reward_PxG, np.float64)
  if r.ndim != 2:
    raise ValueError(f"rewards must be [prompts, group], got shape {r.shape}")
  tie = np.all(r == r[:, :1], axis=1, keepdims=True)
  centred = np.where(tie, 0.0, r - r.mean(axis=1, keepdims=True))
  if advantage == "mean_std":
    centred = centred / np.where(tie, 1.0, r.std(axis=1, keepdims=True) + eps)
  return centred.astype(np.float32)


def informative(reward_PxG) -> np.ndarray:
  """[P] bool: the groups whose rewards differ (a tied group carries no gradient)."""
  r = np.asarray(reward_PxG)
  return ~np.all(r == r[:, :1], axis=1)


def select_groups(reward_DxG, P: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
  """DAPO-style dynamic sampling over D >= P drawn groups (in draw order): (the P groups
  trained on, which of them count). 'off': the first P, all count. 'drop': the first P,
  only the informative count. 'resample': the first P informative groups, topped up with
  the earliest tied ones (which do not count) when fewer than P were drawn; the batch
  keeps its static shape either way."""
  if mode not in DYNAMIC_SAMPLING:
    raise ValueError(
      f"config.rl.dynamic_sampling={mode!r} is not allowed; choose one of {DYNAMIC_SAMPLING}"
    )
  info = informative(reward_DxG)
  if mode in ("off", "drop"):
    return np.arange(P), (np.ones(P, bool) if mode == "off" else info[:P])
  order = np.concatenate([np.flatnonzero(info), np.flatnonzero(~info)])[:P]
  return order, info[order]


def group_rows(groups, G: int) -> np.ndarray:
  """Row indices (prompt-major, G samples per group) of `groups`."""
  return (np.asarray(groups)[:, None] * G + np.arange(G)[None]).reshape(-1)


def take_rows(result: dict, rows) -> dict:
  """The rollout result restricted to `rows` (every per-row array)."""
  return {k: np.asarray(v)[rows] for k, v in result.items()}


def concat_results(results: Sequence[dict]) -> dict:
  """Rollout results of several draws, rows one after the other."""
  return {k: np.concatenate([np.asarray(r[k]) for r in results]) for k in results[0]}


# ----------------------------------------------------------------------------- the objective


def token_logprobs(
  hidden_NxD, head_DxV, targets_N, *, temperature: float = 1.0, chunk: int = 256
) -> jax.Array:
  """log softmax(h W / τ)[y] per token, C tokens at a time. Each chunk is rematerialised
  in the backward pass, so the largest live logits block is [C, V] (DESIGN §4)."""
  N, D = hidden_NxD.shape
  c = min(chunk, N)
  n = -(-N // c)
  h_nxCxD = jnp.pad(hidden_NxD, ((0, n * c - N), (0, 0))).reshape(n, c, D)
  y_nxC = jnp.pad(targets_N, (0, n * c - N)).reshape(n, c)

  @jax.checkpoint
  def one(h_CxD, y_C) -> jax.Array:
    z_CxV = (
      jnp.dot(h_CxD, head_DxV.astype(h_CxD.dtype), preferred_element_type=jnp.float32) / temperature
    )
    z_y = jnp.take_along_axis(z_CxV, y_C[:, None], -1)[:, 0]
    return z_y - jax.nn.logsumexp(z_CxV, axis=-1)

  return jax.lax.map(lambda a: one(*a), (h_nxCxD, y_nxC)).reshape(-1)[:N]


def token_weights(mask_BxT, aggregation: str) -> jax.Array:
  """Loss weights that sum to 1 over the rows that have any mask: 'token' = every
  response token counts once (long responses weigh more); 'sequence' = each such row's
  tokens share 1/B'. Rows masked out entirely (groups dropped by dynamic sampling) are
  not in the normaliser: the loss is a mean over the informative groups' tokens."""
  m = mask_BxT.astype(jnp.float32)
  if aggregation == "token":
    return m / jnp.maximum(jnp.sum(m), 1.0)
  rows = jnp.maximum(jnp.sum(jnp.any(m > 0, axis=1)), 1.0)
  return m / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0) / rows


def clipped_objective(
  logp_N, old_logp_N, adv_N, eps_low: float, eps_high: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(per-token min(ρA, clip(ρ)A), ρ, clipped_low, clipped_high). A token is 'clipped'
  where the clipped branch is the smaller one and the ratio is outside the range:
  exactly the tokens whose gradient the clip removes."""
  ratio = jnp.exp(logp_N - old_logp_N)
  unclipped = ratio * adv_N
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv_N
  low = (adv_N < 0) & (ratio < 1.0 - eps_low)
  high = (adv_N > 0) & (ratio > 1.0 + eps_high)
  return jnp.minimum(unclipped, clipped), ratio, low, high


def k3(logp_N, ref_logp_N) -> jax.Array:
  """exp(Δ) − Δ − 1, Δ = log π_ref − log π_θ: a non-negative, unbiased (for y ~ π_θ)
  estimate of KL(π_θ‖π_ref) from the sampled token alone."""
  delta = ref_logp_N - logp_N
  return jnp.exp(delta) - delta - 1.0


# ----------------------------------------------------------------------------- the step


@dataclasses.dataclass(frozen=True)
class StepStatic:
  """Everything static about the step: hashable, closed over by jit."""

  graphdef: Any
  ref_graphdef: Any  # the KL reference's graphdef (None when kl_coef == 0)
  spec: GRPOSpec
  optimizer: Any
  mesh: Any = None


def _masked_mean(x_N, m_N) -> jax.Array:
  return jnp.sum(x_N * m_N) / jnp.maximum(jnp.sum(m_N), 1.0)


def _kl_term(
  static: StepStatic, hidden_NxD, head_DxV, ref_params, tokens_BxT, targets_N, logp_N, w_N
) -> jax.Array:
  """Σ_t w_t · KL_t(π_θ‖π_ref), differentiable in the policy (the reference is frozen)."""
  spec, B, T = static.spec, *tokens_BxT.shape
  h_ref, _ = model_lib.apply(static.ref_graphdef, ref_params, tokens_BxT)
  h_ref = jax.lax.stop_gradient(h_ref.reshape(B * T, -1))
  head_ref = jax.lax.stop_gradient(model_lib.head(static.ref_graphdef, ref_params))
  if spec.kl_estimator == "k3":
    ref_logp = token_logprobs(
      h_ref, head_ref, targets_N, temperature=spec.temperature, chunk=spec.chunk
    )
    return jnp.sum(w_N * k3(logp_N, jax.lax.stop_gradient(ref_logp)))
  kspec = kl_lib.KLSpec(kind="reverse", temperature=spec.temperature, chunk=spec.chunk)
  # The kernel's loss is τ² · Σ w KL(q_τ‖p_τ) / max(Σ w, 1); Σ w = 1 here.
  kl, _ = kl_lib.distill_loss(hidden_NxD, head_DxV, h_ref, head_ref, w_N, kspec, mesh=static.mesh)
  return kl / spec.temperature**2


def grpo_loss_fn(
  static: StepStatic, params, ref_params, batch
) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
  """(loss, (metrics, logp_BxT)) of one batch; params are the variable."""
  spec = static.spec
  tokens_BxT = batch["tokens"]
  B, T = tokens_BxT.shape
  hidden, _ = model_lib.apply(static.graphdef, params, tokens_BxT)
  hidden_NxD = hidden.reshape(B * T, -1)
  head_DxV = model_lib.head(static.graphdef, params)
  # Position t predicts token t+1; the last position's target is masked out.
  targets_N = jnp.roll(tokens_BxT, -1, axis=1).reshape(-1)
  logp_N = token_logprobs(
    hidden_NxD, head_DxV, targets_N, temperature=spec.temperature, chunk=spec.chunk
  )
  mask_N = batch["loss_mask"].reshape(-1).astype(jnp.float32)
  given_old = batch["old_logp"].reshape(-1)
  old_N = jnp.where(batch["own_old"], jax.lax.stop_gradient(logp_N), given_old)
  adv_N = jnp.repeat(batch["adv"], T)
  obj_N, ratio_N, low_N, high_N = clipped_objective(
    logp_N, old_N, adv_N, spec.eps_low, spec.eps_high
  )
  w_N = token_weights(batch["loss_mask"], spec.aggregation).reshape(-1)
  pg_loss = -jnp.sum(w_N * obj_N)
  kl = jnp.zeros((), jnp.float32)
  if spec.kl_coef > 0:
    kl = _kl_term(static, hidden_NxD, head_DxV, ref_params, tokens_BxT, targets_N, logp_N, w_N)
  sg_logp = jax.lax.stop_gradient(logp_N)
  metrics = {
    "pg_loss": pg_loss,
    "kl": kl,
    "ratio_mean": _masked_mean(ratio_N, mask_N),
    "ratio_max_dev": jnp.max(jnp.abs(ratio_N - 1.0) * mask_N),
    "clip_frac_low": _masked_mean(low_N.astype(jnp.float32), mask_N),
    "clip_frac_high": _masked_mean(high_N.astype(jnp.float32), mask_N),
    # how far the train forward is from the engine's log-probs (same params at update 0)
    "logp_vs_rollout": _masked_mean(jnp.abs(sg_logp - given_old), mask_N),
    "policy_nll": -_masked_mean(sg_logp, mask_N),
  }
  return pg_loss + spec.kl_coef * kl, (metrics, (sg_logp * mask_N).reshape(B, T))


def grpo_step(
  static: StepStatic, state, batch, ref_params
) -> tuple[dict, dict[str, jax.Array], jax.Array]:
  """One optimizer step. Pure. Returns (state, metrics, the policy's log-probs [B, T]
  before the update: π_old for the batch's later updates under 'recompute')."""
  grad_fn = jax.value_and_grad(functools.partial(grpo_loss_fn, static), has_aux=True)
  # activations batch-sharded over ('data', 'fsdp') at every block (constrain_batch), as
  # in the distillation step: under FSDP XLA would otherwise replicate the batch
  with sharding.mesh_context(static.mesh):
    (loss, (metrics, logp_BxT)), grads = grad_fn(state["params"], ref_params, batch)
  updates, opt_state = static.optimizer.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  return ({"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics, logp_BxT)


def batch_shardings(mesh) -> dict[str, NamedSharding]:
  b1, b2, rep = (
    sharding.batch_sharding(mesh, 1),
    sharding.batch_sharding(mesh, 2),
    sharding.replicated(mesh),
  )
  return {"tokens": b2, "loss_mask": b2, "old_logp": b2, "adv": b1, "own_old": rep}


def make_batch(tokens_BxT, loss_mask_BxT, old_logp_BxT, adv_B, own_old: bool) -> dict:
  """The step's batch (host numpy). own_old=True: π_old := this step's own log-probs."""
  return {
    "tokens": np.asarray(tokens_BxT, np.int32),
    "loss_mask": np.asarray(loss_mask_BxT, np.float32),
    "old_logp": np.asarray(old_logp_BxT, np.float32),
    "adv": np.asarray(adv_B, np.float32),
    "own_old": np.asarray(own_old, bool),
  }


def jit_grpo_step(static: StepStatic, state_shard, ref_shard) -> Callable:
  """The jitted step: explicit in/out shardings, the train state donated."""
  mesh = static.mesh
  rep, b2 = sharding.replicated(mesh), sharding.batch_sharding(mesh, 2)
  return jax.jit(
    functools.partial(grpo_step, static),
    in_shardings=(state_shard, batch_shardings(mesh), ref_shard),
    out_shardings=(state_shard, rep, b2),
    donate_argnums=(0,),
  )
