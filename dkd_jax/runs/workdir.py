"""A run directory (WORKDIR): the one module that knows what is in it and reads it.

    WORKDIR/config.json              the config the run saved (`load_config`)
    WORKDIR/checkpoints/STEP/        orbax train state + host record (`latest_step`,
                                     `restore_student`)
    WORKDIR/teacher/                 the bootstrapped teacher (`runs.bootstrap`)
    WORKDIR/teacher_hf, student_hf/  GGUF checkpoints converted once (`runs.pair`)
    WORKDIR/tfds/                    a local data file prepared as TFDS (`runs.tasks`)

Also: is a path a run directory or a Hugging Face directory (`is_run_dir`, `is_hf_dir`);
copying a run's teacher and linking its converted checkpoints into another run
(`adopt_artifacts`, GRPO from a distilled run); and the engine's checkpoint loader
(`load_params`: `Engine(..., checkpoint_loader=workdir.load_params)`).

Every path is an `etils.epath.Path` (`core.paths.as_path`), so a run directory may be
local or `gs://...`. The engine's own `ModelConfig` is the authority on what the model
is: both loaders check the stored tensors against it (orbax by the abstract train state's
shapes, the HF reader by `hf.check_hf_tensors`), so a mismatched checkpoint is an error
naming the tensors, never a silently different model.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections as mlc
from etils import epath
from jax.sharding import Mesh

from dkd_jax.core import checkpointing
from dkd_jax.core import paths
from dkd_jax.models import decoder as model_lib
from dkd_jax.models import hf
from dkd_jax.train import step as train

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
TEACHER = "teacher"
# The student's warm-start cache (`runs/warm_start.py`): a GRPO run from a distilled run
# rebuilds its pair, and without the cache it redid the SFT (1,600 steps in the study).
WARM_START = "student_warm_start"
CONVERTED = ("teacher_hf", "student_hf")
TFDS = "tfds"
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")

PathLike = str | os.PathLike


def is_run_dir(path: PathLike) -> bool:
  """A dkd_jax run directory: its saved config.json and a checkpoints/ folder."""
  p = paths.as_path(path)
  return (p / CONFIG).is_file() and (p / CHECKPOINTS).is_dir()


def has_config(path: PathLike) -> bool:
  """A directory holding a config.json (a run directory or a HF model directory)."""
  return (paths.as_path(path) / CONFIG).is_file()


def is_hf_dir(path: PathLike) -> bool:
  """A Hugging Face model directory: config.json and safetensors weights."""
  p = paths.as_path(path)
  return (p / CONFIG).is_file() and any((p / f).exists() for f in HF_WEIGHTS)


def _tuples(x: object) -> object:
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_config(path: PathLike) -> mlc.ConfigDict:
  """The config a run saved (WORKDIR/config.json), so its checkpoint can be read back
  without the experiment file; JSON lists become the tuples the configs use."""
  file = paths.as_path(path) / CONFIG
  if not file.is_file():
    raise FileNotFoundError(
      f"{file} is missing: is {os.fspath(path)!r} a run directory? "
      "Pass --config=configs/X.py to evaluate it under a config file"
    )
  return mlc.ConfigDict(_tuples(json.loads(file.read_text())))


def checkpoint_dir(path: PathLike) -> epath.Path:
  return paths.as_path(path) / CHECKPOINTS


def tfds_dir(path: PathLike) -> epath.Path:
  return paths.as_path(path) / TFDS


def student_tokenizer_dir(path: PathLike) -> epath.Path:
  """WORKDIR/student_tokenizer: the BPE a cross-tokenizer run trained for its student."""
  return paths.as_path(path) / "student_tokenizer"


def converted_dir(path: PathLike, role: str) -> epath.Path:
  """WORKDIR/{role}_hf: the role's GGUF checkpoint converted once to a HF directory."""
  name = f"{role}_hf"
  assert name in CONVERTED, name
  return paths.as_path(path) / name


def latest_step(path: PathLike) -> int | None:
  """The newest committed checkpoint step (orbax commits by rename, so a killed save is
  never listed); None without one. `restore_student` verifies the step it reads and
  falls back to the previous one if it is damaged."""
  directory = checkpoint_dir(path)
  if not directory.is_dir():
    return None
  ckpt = checkpointing.RunCheckpointer(directory, every=1, read_only=True)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def abstract_state(c: mlc.ConfigDict, mesh: Mesh, student_cfg: model_lib.ModelConfig) -> dict:
  """The train state's ShapeDtypeStructs (with shardings) a run under `c` checkpoints:
  orbax restores whole trees, so the optimizer state's structure comes from `c`."""
  return train.abstract_state(train.make_optimizer(c.optim, c.train.steps), mesh, student_cfg)


def restore_student(
  path: PathLike,
  mesh: Mesh,
  student_cfg: model_lib.ModelConfig,
  step: int | None = None,
  c: mlc.ConfigDict | None = None,
) -> dict:
  """The student params of a run's checkpoint (the latest intact one, or `step`), in
  their train shardings. The train state is the one the run's saved config builds (`c`
  only for a directory without one). Reads only."""
  run_c = load_config(path) if has_config(path) or c is None else c
  return checkpointing.restore_params(
    paths.as_path(path), abstract_state(run_c, mesh, student_cfg), step
  )


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """`src` copied file by file into `dst` (epath: local or remote on either side)."""
  dst.mkdir(parents=True, exist_ok=True)
  for item in src.iterdir():
    if item.is_dir():
      _copy_tree(item, dst / item.name)
    else:
      item.copy(dst / item.name)


def adopt_artifacts(src: PathLike, workdir: PathLike) -> None:
  """Makes `workdir` self-contained on top of the run `src` (GRPO from a distilled run):
  copies its bootstrapped teacher and warm-start cache (small by construction) and links
  its converted HF checkpoints (copies them when either side is remote), so
  `dkd_jax.evaluate --workdir` works on `workdir` and nothing here can ever write into
  `src`."""
  src_p, dst_p = paths.as_path(src), paths.as_path(workdir)
  if not is_run_dir(src_p):
    return
  for name in (TEACHER, WARM_START):  # small by construction: copied
    if (src_p / name).is_dir() and not (dst_p / name).exists():
      _copy_tree(src_p / name, dst_p / name)
  local = "://" not in os.fspath(src_p) and "://" not in os.fspath(dst_p)
  for name in CONVERTED:
    if (src_p / name).is_dir() and not (dst_p / name).exists():
      if local:
        os.symlink(os.fspath(src_p / name), os.fspath(dst_p / name))
      else:
        _copy_tree(src_p / name, dst_p / name)


def load_params(
  path: PathLike,
  cfg: model_lib.ModelConfig,
  mesh: Mesh,
  shardings: dict,
  step: int | None = None,
) -> dict:
  """The engine's checkpoint loader: params from a run directory (its student) or a HF
  directory, placed in `shardings`."""
  if is_run_dir(path):
    params = restore_student(path, mesh, cfg, step)
    # The run's shardings follow decoder.param_shardings; the engine may use others.
    return jax.device_put(params, shardings)
  if is_hf_dir(path):
    if step is not None:
      raise ValueError(f"step={step} applies to run directories; {path} is a HF directory")
    return hf.load_hf_params(os.fspath(path), cfg, shardings)
  raise FileNotFoundError(
    f"{path} is neither a run directory (config.json + checkpoints/) nor a Hugging "
    "Face directory (config.json + model.safetensors[.index.json])"
  )
