"""Checkpoint faults: a damaged latest checkpoint is named, moved aside (never deleted) and
the previous intact one restored, with one log line."""

import os

import jax
import numpy as np
import pytest

from dkd_jax.core import checkpointing
from dkd_jax.core import sharding


def _state(mesh, value):
  s = sharding.batch_sharding(mesh, 2)
  # Random values: the data file is then as large as the array (incompressible).
  w = np.random.default_rng(value).normal(size=(128, 128)).astype(np.float32)
  w = jax.device_put(w, s)
  step = jax.device_put(np.int32(value), sharding.replicated(mesh))
  return {"step": step, "params": {"w": w}}


def _largest_data_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  return max((f for f in files if os.sep + "d" + os.sep in f), key=os.path.getsize)


def corrupt_4kb(step_dir):
  """Overwrites 4 KB in the middle of each of the step's data files of at least 4 KB
  (orbax may keep a merged OCDBT store beside the per-process one; either may be read)."""
  files = [
    os.path.join(d, f)
    for d, _, fs in os.walk(step_dir)
    for f in fs
    if os.path.basename(d) == "d" and os.path.getsize(os.path.join(d, f)) >= 4096
  ]
  assert files, f"no data file of >= 4 KB under {step_dir}"
  for path in files:
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2 - 2048)
      f.write(np.random.default_rng(0).bytes(4096))
  return files


def _saved(tmp_path, mesh):
  ck = checkpointing.RunCheckpointer(str(tmp_path / "checkpoints"), every=1)
  for step in (1, 2):
    ck.maybe_save(step, _state(mesh, step), {"note": step})
  ck.wait()  # async saves: the files exist once the write is committed
  return ck


@pytest.mark.parametrize("damage", ["overwrite_4kb", "truncate", "delete_host_json"])
def test_damaged_latest_checkpoint_is_moved_aside(tmp_path, damage):
  mesh = sharding.make_mesh((8, 1, 1))
  ck = _saved(tmp_path, mesh)
  step_dir = str(tmp_path / "checkpoints" / "2")
  if damage == "overwrite_4kb":
    corrupt_4kb(step_dir)
  elif damage == "truncate":
    path = _largest_data_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 3)
  else:
    os.remove(os.path.join(step_dir, "host", "metadata"))
  lines = []
  state, host = ck.restore(_state(mesh, 0), log=lines.append)
  assert int(state["step"]) == 1 and host == {"note": 1}
  np.testing.assert_array_equal(
    np.asarray(state["params"]["w"]), np.asarray(_state(mesh, 1)["params"]["w"])
  )
  assert len(lines) == 1 and "checkpoint step 2" in lines[0] and "restoring step 1" in lines[0]
  moved = os.listdir(tmp_path / "checkpoints.corrupt")
  assert len(moved) == 1 and moved[0].startswith("2-") and moved[0] in lines[0]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  ck.close()


def test_intact_checkpoint_restores_silently(tmp_path):
  mesh = sharding.make_mesh((8, 1, 1))
  ck = _saved(tmp_path, mesh)
  lines = []
  state, host = ck.restore(_state(mesh, 0), log=lines.append)
  assert int(state["step"]) == 2 and host == {"note": 2} and not lines
  ck.close()


def test_async_save_survives_the_donated_state_and_restores(tmp_path):
  """maybe_save returns before the files exist; the state may then be donated/deleted."""
  mesh = sharding.make_mesh((8, 1, 1))
  ck = checkpointing.RunCheckpointer(str(tmp_path / "checkpoints"), every=1)
  state = _state(mesh, 3)
  want = np.asarray(state["params"]["w"]).copy()
  ck.maybe_save(3, state, {"note": 3})
  assert not ck.maybe_save(3, state, {"note": 3})  # the step in flight is not saved twice
  for x in jax.tree.leaves(state):
    x.delete()
  got, host = ck.restore(_state(mesh, 0))
  np.testing.assert_array_equal(np.asarray(got["params"]["w"]), want)
  assert host == {"note": 3}
  ck.close()


def test_a_write_that_fails_enospc_is_one_line_and_keeps_the_previous_step(tmp_path, monkeypatch):
  import errno

  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

  mesh = sharding.make_mesh((8, 1, 1))
  ck = checkpointing.RunCheckpointer(str(tmp_path / "checkpoints"), every=1)
  ck.maybe_save(1, _state(mesh, 1), {"note": 1})
  ck.wait()

  async def full_disk(self, x, directory):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", full_disk)
  ck.maybe_save(2, _state(mesh, 2), {"note": 2})
  with pytest.raises(checkpointing.CheckpointWriteError) as e:
    ck.wait()
  msg = str(e.value)
  assert "\n" not in msg and "step 2" in msg and "No space left" in msg
  assert "previous checkpoint (step 1) is intact" in msg
  ck.close()  # raises nothing more
  monkeypatch.undo()
  again = checkpointing.RunCheckpointer(str(tmp_path / "checkpoints"), every=1)
  state, host = again.restore(_state(mesh, 0))
  assert int(state["step"]) == 1 and host == {"note": 1} and again.all_steps() == [1]
  again.close()
