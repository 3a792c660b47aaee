"""The run directory, and params for `Engine.load_params(checkpoint=...)`: a run
directory's orbax checkpoint or a local Hugging Face directory, read into the engine's
param shardings.

The engine's own `ModelConfig` is the authority on what the model is: both loaders check
the stored tensors against it (orbax by the abstract train state's shapes, the HF reader
by `hf.check_hf_tensors`) instead of re-deriving a config from the directory, so a
mismatched checkpoint is an error naming the tensors, never a silently different model.
"""

from __future__ import annotations

import os

import jax


def is_run_dir(path: str) -> bool:
  """A dkd_jax run directory: its saved config.json and a checkpoints/ folder."""
  return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(
    os.path.join(path, "checkpoints")
  )


def is_hf_dir(path: str) -> bool:
  """A local Hugging Face model directory: config.json and safetensors weights."""
  return os.path.isfile(os.path.join(path, "config.json")) and any(
    os.path.exists(os.path.join(path, f))
    for f in ("model.safetensors", "model.safetensors.index.json")
  )


def run_params(path: str, cfg, mesh, step: int | None = None) -> dict:
  """The student params of a run's checkpoint (latest intact one, or `step`). The train
  state's optimizer comes from the run's saved config: orbax restores whole trees."""
  # Imported here: train/checkpointing pull in optax and orbax, which serving need not.
  from dkd_jax.core import checkpointing
  from dkd_jax.runs import configuration
  from dkd_jax.train import step as train

  c = configuration.load_run_config(path)
  like = train.abstract_state(train.make_optimizer(c.optim, c.train.steps), mesh, cfg)
  return checkpointing.restore_params(path, like, step)


def load_params(path: str, cfg, mesh, shardings, step: int | None = None) -> dict:
  """Params from a run directory or a HF directory, placed in `shardings`."""
  path = os.fspath(path)
  if is_run_dir(path):
    params = run_params(path, cfg, mesh, step)
  elif is_hf_dir(path):
    if step is not None:
      raise ValueError(f"step={step} applies to run directories; {path} is a HF directory")
    from dkd_jax.models import hf

    return hf.load_hf_params(path, cfg, shardings)
  else:
    raise FileNotFoundError(
      f"{path} is neither a run directory (config.json + checkpoints/) nor a Hugging "
      "Face directory (config.json + model.safetensors[.index.json])"
    )
  # The run's shardings follow model_lib.param_shardings; the engine may use others.
  return jax.device_put(params, shardings)
