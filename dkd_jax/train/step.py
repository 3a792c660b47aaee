"""The one train step for every quadrant: (state, batch) -> (state, metrics).

The objective is data: which prefixes filled `batch['tokens']` (teacher or student)
is decided on the host; which token KL is minimised is a static `KLSpec`; the
forward-KL weight alpha is a traced scalar in the batch (schedules never recompile).
The teacher forward runs inside the step under stop_gradient, and the fused,
chunked, vocab-sharded KL kernel consumes hidden states + LM heads, so no
[tokens, V] logits tensor ever exists.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from dkd_jax.core import sharding
from dkd_jax.models import decoder as model_lib
from dkd_jax.objectives import kl as kl_lib
from dkd_jax.objectives import topk_loss

PER_TOKEN_METRICS = ("fkl", "rkl", "ent_s", "ent_t")


@dataclasses.dataclass(frozen=True)
class StepStatic:
  """Everything static about the step: hashable, closed over by jit."""

  student_graphdef: Any
  teacher_graphdef: Any
  spec: kl_lib.KLSpec
  optimizer: Any
  mesh: Any = None
  # > 0: the head and the KL run only over a window of this many positions per row, from
  # the row's first loss position (the packed layout's responses are one contiguous span
  # of <= max_response_len positions); the prompt positions the mask drops are skipped.
  response_window: int = 0


def make_optimizer(o, total_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup + cosine decay and global-norm clipping (config.optim)."""
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=o.lr,
    warmup_steps=max(o.warmup_steps, 1),
    decay_steps=max(total_steps, o.warmup_steps + 1),
    end_value=o.lr * o.end_lr_frac,
  )
  return optax.chain(
    optax.clip_by_global_norm(o.clip_norm),
    optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay),
  )


def _masked_mean(x_N, mask_N) -> jax.Array:
  # where, not a multiply: a masked position's NaN metric must not reach the mean
  return jnp.sum(jnp.where(mask_N > 0, x_N * mask_N, 0.0)) / jnp.maximum(jnp.sum(mask_N), 1.0)


def sample_from_student(hidden_NxD, head_DxV, key, temperature: float, chunk: int) -> jax.Array:
  """v ~ softmax(h W / τ) per token by Gumbel-max, C tokens at a time (no [N, V] tensor).

  The sampled-token reverse estimator needs actions drawn from q at every state; on
  teacher prefixes there is no student rollout to take them from (DESIGN.md §3).
  """
  N, D = hidden_NxD.shape
  pad = (-N) % chunk
  h = jnp.pad(hidden_NxD, ((0, pad), (0, 0))).reshape(-1, chunk, D)
  keys = jax.random.split(key, h.shape[0])

  def one(args) -> jax.Array:
    h_CxD, k = args
    logits_CxV = (
      jnp.dot(h_CxD, head_DxV.astype(h_CxD.dtype), preferred_element_type=jnp.float32) / temperature
    )
    return jnp.argmax(logits_CxV + jax.random.gumbel(k, logits_CxV.shape), axis=-1)

  return jax.lax.map(one, (jax.lax.stop_gradient(h), keys)).reshape(-1)[:N].astype(jnp.int32)


def response_window(mask_BxT, W: int) -> tuple[jax.Array, jax.Array]:
  """(idx_BxW, mask_BxW): W positions per row from its first loss position (positions past
  T are clipped and masked out), so the head and KL see responses, not prompts."""
  T = mask_BxT.shape[1]
  start_B = jnp.argmax(mask_BxT > 0, axis=1)
  pos_BxW = start_B[:, None] + jnp.arange(W)[None]
  idx_BxW = jnp.minimum(pos_BxW, T - 1)
  mask_BxW = jnp.take_along_axis(mask_BxT, idx_BxW, axis=1) * (pos_BxW < T)
  return idx_BxW, mask_BxW


def _rows(x_BxTx_, idx_BxW) -> jax.Array:
  """x at the window positions: [B, W, ...]."""
  idx = idx_BxW.reshape(idx_BxW.shape + (1,) * (x_BxTx_.ndim - 2))
  return jnp.take_along_axis(x_BxTx_, idx, axis=1)


def cached_topk_loss_fn(
  static: StepStatic, student_params, batch
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The loss against the teacher's cached top-k (batch['topk_ids'], ['topk_logp']):
  no teacher params, no teacher forward."""
  K = batch["topk_ids"].shape[-1]
  hidden_s, _ = model_lib.apply(static.student_graphdef, student_params, batch["tokens"])
  mask_BxT = batch["loss_mask"].astype(jnp.float32)
  ids_BxTxK, logp_BxTxK = batch["topk_ids"], batch["topk_logp"]
  if static.response_window:
    idx_BxW, mask_BxT = response_window(mask_BxT, static.response_window)
    hidden_s, ids_BxTxK, logp_BxTxK = (_rows(x, idx_BxW) for x in (hidden_s, ids_BxTxK, logp_BxTxK))
  B, T = mask_BxT.shape
  mask_N = mask_BxT.reshape(-1)
  loss, tok = topk_loss.cached_topk_loss(
    hidden_s.reshape(B * T, -1),
    model_lib.head(static.student_graphdef, student_params),
    ids_BxTxK.reshape(B * T, K),
    logp_BxTxK.reshape(B * T, K),
    mask_N,
    static.spec,
    alpha=batch["alpha"],
  )
  metrics = {k: _masked_mean(tok[k], mask_N) for k in PER_TOKEN_METRICS}
  metrics["loss_tokens"] = jnp.sum(mask_N)
  return loss, metrics


def distill_loss_fn(
  static: StepStatic, student_params, teacher_params, batch
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Scalar loss and token metrics for one batch (student params are the variable)."""
  if static.teacher_graphdef is None:
    return cached_topk_loss_fn(static, student_params, batch)
  tokens_BxT = batch["tokens"]
  B, T = tokens_BxT.shape
  hidden_t, _ = model_lib.apply(static.teacher_graphdef, teacher_params, tokens_BxT)
  hidden_t = jax.lax.stop_gradient(hidden_t)
  head_t = jax.lax.stop_gradient(model_lib.head(static.teacher_graphdef, teacher_params))
  hidden_s, _ = model_lib.apply(static.student_graphdef, student_params, tokens_BxT)
  head_s = model_lib.head(static.student_graphdef, student_params)
  # Position t predicts token t+1; the last position's target is masked out.
  targets_BxT = jnp.roll(tokens_BxT, -1, axis=1)
  mask_BxT = batch["loss_mask"].astype(jnp.float32)
  if static.response_window:
    idx_BxW, mask_BxT = response_window(mask_BxT, static.response_window)
    hidden_t, hidden_s = _rows(hidden_t, idx_BxW), _rows(hidden_s, idx_BxW)
    targets_BxT = _rows(targets_BxT, idx_BxW)
  B, T = mask_BxT.shape
  targets_N, mask_N = targets_BxT.reshape(-1), mask_BxT.reshape(-1)
  hidden_s = hidden_s.reshape(B * T, -1)
  if static.spec.estimator == "sampled_token":
    # Student rows already hold actions sampled from q (their rollout); teacher rows
    # get fresh actions v ~ q at each teacher state.
    sampled_N = sample_from_student(
      hidden_s,
      jax.lax.stop_gradient(head_s),
      batch["key"],
      static.spec.temperature,
      static.spec.chunk,
    )
    own_N = jnp.repeat(batch["student_row"], T)
    targets_N = jnp.where(own_N, targets_N, sampled_N)
  loss, tok = kl_lib.distill_loss(
    hidden_s,
    head_s,
    hidden_t.reshape(B * T, -1),
    head_t,
    mask_N,
    static.spec,
    tokens_N=targets_N,
    alpha=batch["alpha"],
    mesh=static.mesh,
  )
  metrics = {k: _masked_mean(tok[k], mask_N) for k in PER_TOKEN_METRICS if k in tok}
  metrics["loss_tokens"] = jnp.sum(mask_N)
  return loss, metrics


def train_step(
  static: StepStatic, state, batch, teacher_params
) -> tuple[dict, dict[str, jax.Array]]:
  """One optimizer step. Pure: the same inputs give the same outputs."""
  grad_fn = jax.value_and_grad(functools.partial(distill_loss_fn, static), has_aux=True)
  batch = dict(batch, key=jax.random.wrap_key_data(batch["key"]))
  with sharding.mesh_context(static.mesh):  # activations batch-sharded (constrain_batch)
    (loss, metrics), grads = grad_fn(state["params"], teacher_params, batch)
  updates, opt_state = static.optimizer.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), alpha=batch["alpha"])
  return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def init_state(optimizer, params) -> dict:
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}


def sharded_init_state(optimizer, mesh, model_cfg, params) -> tuple[dict, dict]:
  """(train state placed in its shardings, those shardings)."""
  shard = state_shardings(mesh, optimizer, model_cfg)
  return jax.jit(lambda p: init_state(optimizer, p), out_shardings=shard)(params), shard


def abstract_state(optimizer, mesh, model_cfg) -> dict:
  """The train state as ShapeDtypeStructs carrying their shardings: what a checkpoint
  restore needs, without allocating (or initialising) any weights."""
  _, p_shapes = model_lib.abstract(model_cfg)
  shapes = jax.eval_shape(lambda p: init_state(optimizer, p), p_shapes)
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
    shapes,
    state_shardings(mesh, optimizer, model_cfg),
  )


def state_shardings(mesh, optimizer, model_cfg) -> dict:
  """Shardings of the train state: optimizer moments follow their params."""
  p_shard = model_lib.param_shardings(mesh, model_cfg)
  _, p_shapes = model_lib.abstract(model_cfg)
  opt_shapes = jax.eval_shape(optimizer.init, p_shapes)
  rep = sharding.replicated(mesh)
  opt_shard = optax.tree_map_params(
    optimizer,
    lambda _, s: s,
    opt_shapes,
    p_shard,
    transform_non_params=lambda _: rep,
    is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
  )
  return {"step": rep, "params": p_shard, "opt_state": opt_shard}


def batch_shardings(mesh, cached_topk: bool = False) -> dict[str, NamedSharding]:
  """Shardings of the batch dict; with `cached_topk` also the teacher's [B, T, K] top-k."""
  b2, rep = sharding.batch_sharding(mesh, 2), sharding.replicated(mesh)
  out = {
    "tokens": b2,
    "loss_mask": b2,
    "student_row": sharding.batch_sharding(mesh, 1),
    "alpha": rep,
    "key": rep,
  }
  if cached_topk:
    b3 = sharding.batch_sharding(mesh, 3)
    out.update(topk_ids=b3, topk_logp=b3)
  return out


def bucket_length(loss_mask_BxT, bucket: int) -> int:
  """The positions a packed batch needs, rounded up to a multiple of `bucket` (at most T;
  bucket 0: T). A row's last loss position predicts its last token, one further on; the
  layout is right-padded and the model causal, so positions past every row's last token
  change no loss. Few buckets: each is one compile of the step."""
  T = loss_mask_BxT.shape[1]
  used_T = np.any(np.asarray(loss_mask_BxT) > 0, axis=0)
  if bucket <= 0 or not used_T.any():
    return T
  need = int(np.flatnonzero(used_T)[-1]) + 2
  return min(T, -(-need // bucket) * bucket)


def make_batch(
  tokens_BxT, loss_mask_BxT, student_row_B, alpha: float, key_data, length_bucket: int = 0
) -> dict[str, np.ndarray]:
  """The step's batch dict (host numpy; `key` (raw uint32 key data, e.g.
  `rng.key_data(seed, "train_step", step)`) drives in-step sampling). With
  `length_bucket` > 0 the positions are cut to the batch's longest row rounded up to a
  multiple of it (`bucket_length`): the same loss, without computing the padding."""
  T = bucket_length(loss_mask_BxT, length_bucket)
  return {
    "tokens": tokens_BxT[:, :T],
    "loss_mask": loss_mask_BxT[:, :T],
    "student_row": np.asarray(student_row_B, bool),
    "alpha": np.float32(alpha),
    "key": np.asarray(key_data, np.uint32),
  }


def jit_train_step(static: StepStatic, state_shard, teacher_shard) -> Callable:
  """The jitted step: explicit in/out shardings, the train state donated. A static
  without a teacher graphdef trains on cached teacher top-k (teacher_params None)."""
  mesh = static.mesh
  rep = sharding.replicated(mesh)
  cached = static.teacher_graphdef is None
  return jax.jit(
    functools.partial(train_step, static),
    in_shardings=(state_shard, batch_shardings(mesh, cached), None if cached else teacher_shard),
    out_shardings=(state_shard, rep),
    donate_argnums=(0,),
  )


def step_flops(student_cfg, teacher_cfg, tokens: int) -> float:
  """Model FLOPs of one step: 6·P·tokens student (fwd+bwd), 2·P·tokens teacher,
  plus both LM heads in the KL kernel (student fwd+bwd, teacher fwd)."""

  def n_params(c) -> int:
    L, D, F, H, K, Dh = c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.head_dim
    return L * (D * (H + 2 * K) * Dh + H * Dh * D + 3 * D * F)

  s, t = student_cfg, teacher_cfg
  return tokens * (
    6 * n_params(s) + 2 * n_params(t) + 6 * s.d_model * s.vocab_size + 2 * t.d_model * t.vocab_size
  )
