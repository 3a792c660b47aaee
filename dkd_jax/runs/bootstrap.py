"""Bootstraps a teacher when none is configured: supervised training on the task.

The embedded default has no pretrained teacher on a fresh machine, so it trains a
small one on the built-in arithmetic task (plain next-token cross-entropy on the
worked solutions) and caches it in the workdir; later runs reuse the cache. This
is not a distillation objective (those all go through train.train_step): it only
makes the teacher that the distillation then compresses. The same SFT and cache make
the warm-started student (`runs.warm_start`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dkd_jax.core import checkpointing
from dkd_jax.core import multihost
from dkd_jax.core import paths
from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.data import packing
from dkd_jax.data import pipeline
from dkd_jax.models import decoder as model_lib
from dkd_jax.train import step as train_step


def _ce_loss(graphdef, params, tokens_BxT, mask_BxT) -> jax.Array:
  # The bootstrap vocab is tiny (~32), so full logits are cheap here.
  logits, _ = model_lib.logits(graphdef, params, tokens_BxT)
  targets = jnp.roll(tokens_BxT, -1, axis=1)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  return jnp.sum(nll * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def _sft_step(
  graphdef, opt, params, opt_state, tokens, mask
) -> tuple[dict, optax.OptState, jax.Array]:
  loss, grads = jax.value_and_grad(functools.partial(_ce_loss, graphdef))(params, tokens, mask)
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_teacher(
  cfg: model_lib.ModelConfig,
  batches,
  *,
  steps: int,
  lr: float,
  mesh,
  seed: int,
  pad_id: int,
  log=print,
  name: str = "teacher bootstrap",
  progress=None,
  save_every: int = 250,
) -> tuple[nnx.GraphDef, dict]:
  """SFT on (prompt, solution) batches; returns (graphdef, params). `name` labels the
  progress lines.

  `progress` (a directory, optional): every `save_every` steps the params, optimizer
  state and step are saved there, and a later call with the same `progress` resumes
  from the last save (skipping the batches already trained on), bit for bit the
  uninterrupted run. Each batch is cut to the smallest multiple of 32 positions that
  holds its longest sequence: the cut positions are padding after every loss position
  (causal attention; the loss mask is 0 there), so the loss and its gradient are
  unchanged and the step costs what its tokens do."""
  graphdef, params = model_lib.init_params(cfg, mesh, seed)
  opt = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.adamw(
      optax.warmup_cosine_decay_schedule(0.0, lr, min(50, steps // 5 + 1), steps, lr * 0.05),
      weight_decay=0.01,
    ),
  )
  opt_state = jax.jit(opt.init)(params)
  p_shard = model_lib.param_shardings(mesh, cfg)
  step = jax.jit(
    functools.partial(_sft_step, graphdef, opt),
    donate_argnums=(0, 1),
    out_shardings=(p_shard, None, None),
  )
  start = 0
  if progress is not None:
    start, params, opt_state = _resume(progress, params, opt_state, log, name)
    for _ in range(start):  # the batches the saved steps trained on
      next(batches)
  t0, loss = time.time(), float("nan")
  for i in range(start, steps):
    b = next(batches)
    tokens, mask = packing.pack(
      b["prompt_tokens"], b["prompt_len"], b["response_tokens"], b["response_len"], pad_id
    )
    cut = train_step.bucket_length(mask, 32)  # the train step's own length buckets
    tokens, mask = tokens[:, :cut], mask[:, :cut]
    put = lambda x: sharding.put_global(x, sharding.batch_sharding(mesh, 2))
    params, opt_state, loss = step(params, opt_state, put(tokens), put(mask.astype(np.float32)))
    if (i + 1) % max(steps // 5, 1) == 0:
      log(f"{name} step {i + 1}/{steps} ce={float(loss):.4f} ({time.time() - t0:.0f}s)")
    if progress is not None and (i + 1) % save_every == 0 and i + 1 < steps:
      _save_progress(progress, i + 1, params, opt_state)
  return graphdef, params


def cached_sft(
  path,
  meta: dict,
  cfg: model_lib.ModelConfig,
  train,
  *,
  mesh,
  seed: int,
  what: str,
  meta_name: str,
  log=print,
  train_missing: bool = True,
  missing_hint: str = "",
) -> tuple[Any, dict]:
  """(graphdef, params) saved in `path` if its meta file equals `meta`, else
  `train(progress)` (-> (graphdef, params)) saved there (or, with `train_missing=False`,
  raises: readers of a run directory never write into it). `progress` is a directory
  for the training's periodic saves (`train_teacher(progress=...)`): an interrupted
  training resumes from it; it belongs to this `meta` alone and is removed once the
  result is saved. Every process trains and saves (orbax writes each host's shards);
  process 0 alone writes the meta file, and its view decides."""
  path = paths.as_path(path)
  meta = json.loads(json.dumps(meta))
  meta_file = path / meta_name
  hit = meta_file.exists() and json.loads(meta_file.read_text()) == meta
  if multihost.from_primary(np.int32(hit)):
    graphdef, like = model_lib.init_params(cfg, mesh, seed)
    log(f"{what}: reusing the cached one in {path}")
    return graphdef, checkpointing.load_params(path / "params", like)
  if not train_missing:
    state = "was made with other settings" if meta_file.exists() else "is missing"
    raise FileNotFoundError(f"the {what} in {path} {state}; {missing_hint}")
  progress = path / "bootstrap_progress"
  progress_meta = progress / "meta.json"
  if not (progress_meta.exists() and json.loads(progress_meta.read_text()) == meta):
    if multihost.is_primary():
      if progress.exists():
        progress.rmtree()
      progress.mkdir(parents=True)
      paths.write_text_atomic(progress_meta, json.dumps(meta))
    multihost.barrier(f"{meta_name}_progress_meta")
  graphdef, params = train(progress)
  checkpointing.save_params(path / "params", params)
  if multihost.is_primary():  # the meta file marks the cache complete
    paths.write_text_atomic(meta_file, json.dumps(meta))
    progress.rmtree()
  multihost.barrier(f"{meta_name}")
  return graphdef, params


def _save_progress(progress, step: int, params, opt_state) -> None:
  """Params and optimizer state after `step` steps; the step file, written last, marks
  the save complete."""
  progress = paths.as_path(progress)
  checkpointing.save_params(progress / f"state_{step}", {"params": params, "opt": opt_state})
  if multihost.is_primary():
    paths.write_text_atomic(progress / "step.json", json.dumps({"step": step}))
    for old in progress.glob("state_*"):
      if old.name != f"state_{step}":
        old.rmtree()
  multihost.barrier(f"bootstrap_progress_{step}")


def _resume(progress, params, opt_state, log, name: str) -> tuple[int, dict, optax.OptState]:
  """(step, params, opt_state) of the last complete save in `progress`, else (0, ...)."""
  step_file = paths.as_path(progress) / "step.json"
  if not step_file.exists():
    return 0, params, opt_state
  step = int(json.loads(step_file.read_text())["step"])
  state = checkpointing.load_params(
    paths.as_path(progress) / f"state_{step}", {"params": params, "opt": opt_state}
  )
  log(f"{name}: resuming after step {step} from {progress}")
  return step, state["params"], state["opt"]


def cached_teacher(
  workdir: str,
  cfg: model_lib.ModelConfig,
  make_batches,
  *,
  steps: int,
  lr: float,
  mesh,
  seed: int,
  pad_id: int,
  data: dict,
  log=print,
  train_missing: bool = True,
) -> tuple[nnx.GraphDef, dict]:
  """Loads workdir/teacher if it was made with the same model, data and schedule,
  else trains and saves it (or, with `train_missing=False`, raises naming the command
  that makes it)."""
  meta = {
    "model": {k: v for k, v in vars(cfg).items() if k not in ("scan_layers", "remat")},
    "steps": steps,
    "lr": lr,
    "seed": seed,
    "data": data,
  }

  def train(progress) -> tuple[nnx.GraphDef, dict]:
    log(f"teacher: no checkpoint configured; bootstrapping one by SFT ({steps} steps)")
    return train_teacher(
      cfg,
      make_batches(),
      steps=steps,
      lr=lr,
      mesh=mesh,
      seed=seed,
      pad_id=pad_id,
      log=log,
      progress=progress,
    )

  return cached_sft(
    paths.as_path(workdir) / "teacher",
    meta,
    cfg,
    train,
    mesh=mesh,
    seed=seed,
    what="bootstrapped teacher",
    meta_name="teacher_meta.json",
    log=log,
    train_missing=train_missing,
    missing_hint=(
      f"make it with the run itself: python -m dkd_jax.launch --config=configs/X.py "
      f"--workdir={workdir} (this command only reads the run directory)"
    ),
  )


def bootstrap_batches(c, train_records, tokenizer) -> Iterator[dict[str, np.ndarray]]:
  """Prompt+solution batches of the task's train records for the teacher bootstrap
  (its own shuffle stream)."""
  return iter(
    pipeline.prompt_dataset(
      train_records,
      tokenizer,
      max_prompt_len=c.data.max_prompt_len,
      truncate=c.data.truncate_prompts,
      seed=rng.int_seed(c.teacher.bootstrap_seed, "bootstrap_shuffle"),
      batch_size=c.data.batch_size * 2,
      with_responses=True,
      max_response_len=c.data.max_response_len,
    )
  )
