"""Atomic, resumable run checkpoints with orbax.

One checkpoint holds the train state (params, optimizer, step; restored straight
into its shardings) and a JSON host record: the grain iterator state, the RNG
seed/step, the alpha-schedule and curriculum states and the last metrics. Orbax
writes to a temporary directory and renames on commit, so a killed run never
leaves a half-written checkpoint that resume would pick up.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpointer:
  """Saves every `every` steps (and on demand); restores the latest."""

  def __init__(self, directory: str, *, every: int, max_to_keep: int = 2,
               read_only: bool = False):
    self.every = every
    # read_only: readers of a run (evaluate, export) never create or clean anything in it.
    self._mngr = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only, enable_async_checkpointing=False))

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def maybe_save(self, step: int, state, host: dict[str, Any], force: bool = False) -> bool:
    if not force and step % self.every:
      return False
    if self._mngr.latest_step() == step:
      return False
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)), force=True)
    self._mngr.wait_until_finished()
    return True

  def restore(self, state_like, step: int | None = None):
    """(state, host) at `step` (default latest) into `state_like`'s shardings, or None."""
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()))
    return out["state"], out["host"]

  def close(self):
    self._mngr.close()


def restore_params(workdir: str, state_like, step: int | None = None):
  """The params of a run's checkpoint at `step` (default the latest) under
  WORKDIR/checkpoints, restored into the shardings of `state_like` (a train state, or
  its ShapeDtypeStructs with shardings, of the same structure). Reads only."""
  directory = os.path.join(workdir, "checkpoints")
  train_first = (f"no checkpoint under {directory}; train first with "
                 f"python -m dkd_jax.launch --workdir={workdir} ...")
  if not os.path.isdir(directory):
    raise FileNotFoundError(train_first)
  ckpt = RunCheckpointer(directory, every=1, read_only=True)
  try:
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} under {directory}; "
                              f"it holds steps {sorted(steps)}")
    out = ckpt.restore(state_like, step)
  finally:
    ckpt.close()
  if out is None:
    raise FileNotFoundError(train_first)
  return out[0]["params"]


def save_params(directory: str, params) -> None:
  """Params alone (e.g. the bootstrapped teacher), atomically."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(directory), params, force=True)
  ckptr.wait_until_finished()


def load_params(directory: str, params_like):
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      params_like)
  return ocp.StandardCheckpointer().restore(os.path.abspath(directory), abstract)
