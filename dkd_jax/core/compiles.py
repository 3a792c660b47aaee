"""Counting XLA compilations: which functions compiled while a block of code ran.

`with CompileLog() as log: ...` records the name of every function the backend
compiled inside the block (jax's `/jax/core/compile/backend_compile_duration` event, one
per executable actually built: a jit cache hit records nothing). Tests use it to assert
that a run compiles each function once (nothing after its first step); benchmarks to
split compile time from the rest.
"""

from __future__ import annotations

import threading

import jax
from jax._src import dispatch

EVENT = dispatch.BACKEND_COMPILE_EVENT  # "/jax/core/compile/backend_compile_duration"


class CompileLog:
  """Names and seconds of the backend compiles inside a `with` block (thread-safe;
  nestable: every open log records every compile)."""

  def __init__(self):
    self.names: list[str] = []
    self.seconds = 0.0
    self._lock = threading.Lock()

  def _listener(self, event: str, duration: float, **kwargs) -> None:
    if event == EVENT:
      with self._lock:
        self.names.append(str(kwargs.get("fun_name", "?")))
        self.seconds += float(duration)

  def __enter__(self) -> CompileLog:
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listener)

  def mark(self) -> int:
    """A position in the log: `since(mark)` lists what compiled after it."""
    return len(self.names)

  def since(self, mark: int) -> list[str]:
    return self.names[mark:]

  def __len__(self) -> int:
    return len(self.names)
