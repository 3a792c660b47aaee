"""Which process does what when a run spans several hosts (one JAX process per host).

Every process runs the same program: the same host loop, the same jitted calls, the
same data (the global batch is built identically everywhere and each process places
only its own devices' rows, `sharding.put_global`). What must not be repeated is
writing: logs, TensorBoard, metrics, caches and bootstrap files are written by process
0 alone (`is_primary`), and a cache that is created on first use is created by process
0 before the others read it (`primary_first`). Orbax checkpoints coordinate their own
writes, so every process calls them. With one process every helper is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

T = TypeVar("T")


def is_primary() -> bool:
  """True on the process that writes the run's files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (no-op in one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def primary_first(name: str, fn: Callable[[], T]) -> T:
  """fn() on process 0, then (after a barrier) on the others: a cache built on first
  use (a converted checkpoint, a prepared dataset) is built once and then read."""
  if jax.process_count() == 1:
    return fn()
  out = fn() if is_primary() else None
  barrier(name)
  return out if is_primary() else fn()


def all_true(flag: bool) -> bool:
  """True iff `flag` is true on every process (a collective with several processes):
  lets processes that saw different things (a shard that failed to read on one host)
  take the same branch."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils

  flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
  return bool(np.all(flags))


def any_true(flag: bool) -> bool:
  """True iff `flag` is true on some process (a collective with several processes): a
  stop signal that reached one process stops them all at the same step."""
  return not all_true(not flag)


def from_primary(value: T) -> T:
  """Process 0's value of a small pytree of numpy-compatible leaves, on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils

  return multihost_utils.broadcast_one_to_all(value)
