"""Preemption: a stop notice ends the run at a step boundary every process agrees on.

Spot and preemptible VMs (Cloud TPU included) get SIGTERM about 30 s before they stop;
on a multi-process run JAX's coordination service also carries a preemption notice
(`multihost_utils.reached_preemption_sync_point`, fed by the runtime's own SIGTERM
listener when it saw the signal first, e.g. during start-up). `Guard` turns either into
one decision per step:

    with preemption.Guard() as guard:
      for step in ...:
        ...one step, its metrics row and its scheduled checkpoint...
        if guard.should_stop(step + 1):
          guard.save_and_log(ckpt, step + 1, state, host, log)
          break

- The handler only records the signal (no I/O in a signal handler); a second SIGTERM
  while the checkpoint is written is recorded too and interrupts nothing, so the save
  completes (orbax commits a step by renaming a finished temporary directory, so even a
  SIGKILL then leaves the previous step intact).
- Every process calls `should_stop` after every step with the same step number; with
  several processes the local flags are all-reduced (`multihost.any_true`), so a signal
  that reached only process 1 stops process 0 at the same step.
- Outside the guarded loop SIGTERM keeps its default meaning (start-up and the final
  evaluation hold nothing a checkpoint does not).
"""

from __future__ import annotations

import signal
import time

import jax

from dkd_jax.core import multihost

SIGNALS = (signal.SIGTERM,)


def _jax_notice(step: int) -> bool:
  """JAX's cross-process preemption sync point (False without a distributed runtime)."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  try:
    return bool(multihost_utils.reached_preemption_sync_point(step))
  except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
    return False


class Guard:
  """Records stop signals while active; `should_stop(step)` is the agreed decision."""

  def __init__(self, signals=SIGNALS, check_every: int = 1):
    self.signals, self.check_every = tuple(signals), max(int(check_every), 1)
    self.received: list[str] = []  # signal names, in arrival order (this process)
    self.reason: str | None = None  # why the run stops (set by should_stop)
    self._previous: dict = {}

  def __enter__(self) -> Guard:
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()

  def _on_signal(self, signum, frame) -> None:
    self.received.append(signal.Signals(signum).name)

  def should_stop(self, step: int) -> bool:
    """True on every process at the same `step` once any process got a notice. Every
    process must call it after every step (it is a collective with several processes)."""
    if self.reason is not None:
      return True
    notice = _jax_notice(step)
    local = bool(self.received)
    if step % self.check_every and not notice:
      return False
    if jax.process_count() > 1:
      agreed = multihost.any_true(local or notice)
    else:
      agreed = local or notice
    if agreed:
      if local:
        self.reason = f"{self.received[0]} on process {jax.process_index()}"
      elif notice:
        self.reason = "JAX preemption notice"
      else:
        self.reason = "a stop signal on another process"
    return agreed

  def save_and_log(self, ckpt, step: int, state, host: dict, log) -> None:
    """Writes (or completes) the checkpoint of `step` on every process and logs one
    line; a further signal meanwhile is only recorded."""
    t0 = time.perf_counter()
    ckpt.maybe_save(step, state, host, force=True)
    ckpt.wait()
    extra = len(self.received) - 1
    log(
      f"preempted ({self.reason}) after step {step}: checkpoint step {step} is in "
      f"{ckpt.directory} ({time.perf_counter() - t0:.1f}s"
      + (f"; {extra} further signal(s) ignored during the save" if extra > 0 else "")
      + "); exiting 0 - run the same command again to resume from it"
    )
