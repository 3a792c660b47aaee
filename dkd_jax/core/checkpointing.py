"""Atomic, resumable, verified run checkpoints with orbax.

One checkpoint holds the train state (params, optimizer, step; restored straight
into its shardings) and a JSON host record: the grain iterator state, the RNG
seed/step, the alpha-schedule and curriculum states and the last metrics. Saves are
asynchronous: `maybe_save` returns once the arrays are copied to the host and orbax
writes the files in the background, into a temporary directory renamed on commit, so a
run killed mid-write (kill -9 included) never leaves a half-written checkpoint that
resume would pick up; the next start removes the temporary directory.

A checkpoint can still be damaged after it was committed (a disk fault, a copy cut
short). The host record carries a fingerprint of the state (per leaf: sum and sum of
|x|), checked after restore; a latest checkpoint that fails to restore or to match is
moved aside to `<dir>.corrupt/` (never deleted) and the previous one is restored, with
one log line naming both. Directories are `etils.epath` paths, so `gs://` works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dkd_jax.core import multihost
from dkd_jax.core import paths
from dkd_jax.core import sharding

_FINGERPRINT = "state_fingerprint"


class _QuietOrbaxErrors(logging.Filter):
  """Drops orbax's multi-line ERROR logs of a failed background write: the same error is
  raised in the main thread, where it becomes one line (`CheckpointWriteError`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


logging.getLogger("absl").addFilter(_QuietOrbaxErrors())


class CorruptCheckpoint(RuntimeError):
  """A checkpoint step that cannot be restored intact; the message names it."""


class CheckpointWriteError(OSError):
  """A checkpoint that could not be written (full disk...); one line: step, directory,
  cause and the previous step, which stays intact."""


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind `e` (orbax wraps background-thread failures), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError) and e.errno is not None:
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


@jax.jit
def _fingerprint_Lx2(state) -> jax.Array:
  leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(state)]
  return jnp.stack([jnp.stack([jnp.sum(x), jnp.sum(jnp.abs(x))]) for x in leaves])


def nbytes(tree) -> int:
  """Bytes of a tree's arrays (or ShapeDtypeStructs): one checkpoint's payload."""
  return int(
    sum(
      np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
    )
  )


def fingerprint(state) -> list[list[float]]:
  """Per leaf [sum, sum |x|] in fp32: cheap, and a changed byte changes it."""
  return sharding.to_host(_fingerprint_Lx2(state)).tolist()


def _root_cause(e: BaseException) -> str:
  """The innermost exception's first line (tensorstore's names the file and the fault;
  orbax's outer ones print a whole TensorStore spec)."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


class RunCheckpointer:
  """Saves every `every` steps (and on demand); restores the latest intact one."""

  def __init__(
    self,
    directory,
    *,
    every: int,
    max_to_keep: int = 2,
    read_only: bool = False,
    async_save: bool = True,
  ):
    self.every, self.read_only = every, read_only
    self._last_saved: int | None = None
    self._failed = False
    self.directory = paths.as_path(directory)
    # read_only: readers of a run (evaluate, export) never create, clean or move anything.
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
        # async: a save returns once the arrays are on the host; the files are written
        # (and the step committed by a rename) while training goes on.
        enable_async_checkpointing=async_save and not read_only,
      ),
    )

  def all_steps(self) -> list[int]:
    self.wait()
    return list(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    self.wait()
    return self._mngr.latest_step()

  def maybe_save(
    self, step: int, state, host: dict[str, Any] | Callable[[], dict], force: bool = False
  ) -> bool:
    if not force and step % self.every:
      return False
    if step in (self._last_saved, self._mngr.latest_step()):  # the first: still in flight
      return False
    self.wait()  # orbax would wait for the previous write anyway; its error names its step
    self._last_saved = step
    host = host() if callable(host) else host  # a callable: built only on steps that save
    # A JSON copy: the host record is written in the background, after the loop moved on.
    host = json.loads(json.dumps(dict(host, **{_FINGERPRINT: fingerprint(state)})))
    with self._write_errors():  # a failure of the previous async write surfaces here too
      self._mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)),
        force=True,
      )
    return True

  @contextlib.contextmanager
  def _write_errors(self) -> Iterator[None]:
    """An OS error while writing a step (ENOSPC, EROFS, EIO...) -> one-line
    CheckpointWriteError naming the step, the directory and the intact previous step."""
    try:
      yield
    except Exception as e:
      cause = _os_error(e)
      if cause is None:
        raise
      step, self._failed = self._last_saved, True
      self._last_saved = None
      committed = [s for s in self._mngr.all_steps() if s != step]
      free = paths.free_bytes(self.directory)
      raise CheckpointWriteError(
        f"writing checkpoint step {step} to {self.directory} failed: {_root_cause(cause)}"
        + (f" ({paths.human_bytes(free)} free)" if free is not None else "")
        + "; "
        + (
          f"the previous checkpoint (step {max(committed)}) is intact and a rerun resumes from it"
          if committed
          else "no earlier checkpoint"
        )
      ) from None

  def wait(self) -> None:
    """Blocks until the checkpoint being written (if any) is committed."""
    with self._write_errors():
      self._mngr.wait_until_finished()

  def _restore_step(self, step: int, state_like) -> tuple[dict, dict[str, Any]]:
    """(state, host) of one step, or raises CorruptCheckpoint saying what is wrong."""
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like
    )
    try:
      out = self._mngr.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # orbax/tensorstore raise many types for unreadable data
      raise CorruptCheckpoint(f"unreadable ({_root_cause(e)})") from e
    host = dict(out["host"])
    want = host.pop(_FINGERPRINT, None)
    if want is not None and not np.allclose(fingerprint(out["state"]), want, rtol=1e-6, atol=0.0):
      raise CorruptCheckpoint("its arrays do not match the fingerprint saved with them")
    return out["state"], host

  def _move_aside(self, step: int) -> str:
    """Moves a damaged step out of the manager's directory (process 0 does the move)."""
    dest_dir = self.directory.parent / (self.directory.name + ".corrupt")
    dest = dest_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if multihost.is_primary():
      dest_dir.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(dest)
    multihost.barrier(f"checkpoint_move_aside_{step}")
    self._mngr.reload()
    return str(dest)

  def restore(
    self, state_like, step: int | None = None, log=print
  ) -> tuple[dict, dict[str, Any]] | None:
    """(state, host) at `step` (default: the latest intact one) into `state_like`'s
    shardings, or None when there is no checkpoint."""
    self.wait()
    if step is not None:
      return self._restore_step(step, state_like)
    damaged = []
    for s in sorted(self._mngr.all_steps(), reverse=True):
      try:
        out, problem = self._restore_step(s, state_like), None
      except CorruptCheckpoint as e:
        out, problem = None, str(e)
      if multihost.all_true(out is not None):
        return out
      if self.read_only:  # a reader names the damage and falls back, moving nothing
        log(
          f"checkpoint step {s} in {self.directory} is damaged: {problem}; trying the previous one"
        )
        continue
      damaged.append(self._move_aside(s))
      previous = [p for p in self._mngr.all_steps() if p < s]
      log(
        f"checkpoint step {s} in {self.directory} is damaged: "
        f"{problem or 'unreadable on another process'}; moved it to {damaged[-1]}; "
        + (f"restoring step {max(previous)}" if previous else "no earlier checkpoint")
      )
    if damaged:
      raise CorruptCheckpoint(
        f"every checkpoint in {self.directory} was damaged (moved to "
        f"{damaged}); delete {self.directory} to start over"
      )
    return None

  def close(self) -> None:
    """Waits for the write in flight (raising its error), then releases the manager."""
    try:
      if not self._failed:
        self.wait()
    finally:
      try:
        self._mngr.close()
      except Exception:  # a write error: raised once already
        pass


def restore_params(workdir, state_like, step: int | None = None) -> dict:
  """The params of a run's checkpoint at `step` (default the latest intact one) under
  WORKDIR/checkpoints, restored into the shardings of `state_like` (a train state, or
  its ShapeDtypeStructs with shardings, of the same structure). Reads only."""
  directory = paths.as_path(workdir) / "checkpoints"
  train_first = (
    f"no checkpoint under {directory}; train first with "
    f"python -m dkd_jax.launch --workdir={workdir} ..."
  )
  if not directory.is_dir():
    raise FileNotFoundError(train_first)
  ckpt = RunCheckpointer(directory, every=1, read_only=True)
  try:
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
      raise FileNotFoundError(
        f"no checkpoint of step {step} under {directory}; it holds steps {sorted(steps)}"
      )
    out = ckpt.restore(state_like, step)
  finally:
    ckpt.close()
  if out is None:
    raise FileNotFoundError(train_first)
  return out[0]["params"]


def save_params(directory, params) -> None:
  """Params alone (e.g. the bootstrapped teacher), atomically; every process calls it."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(paths.as_path(directory), params, force=True)
  ckptr.wait_until_finished()


def load_params(directory, params_like) -> dict:
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
    params_like,
  )
  return ocp.StandardCheckpointer().restore(paths.as_path(directory), abstract)
