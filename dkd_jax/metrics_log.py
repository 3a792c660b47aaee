"""Run logging: TensorBoard scalars, a metrics JSONL, the resolved config, a progress bar.

Also the two checks every step needs: a NaN/inf metric stops the run naming the
step and the metric, and the MFU denominator (the accelerator's peak, or on CPU a
measured same-process matmul rate, so the figure means something there too).
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from dkd_jax import multihost
from dkd_jax import paths

# bf16 dense peaks per chip (FLOP/s) for MFU; unknown kinds fall back to a measurement.
_PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
          "TPU v6 lite": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12}


class NonFiniteMetric(FloatingPointError):
  """Raised when a metric is NaN or infinite; the message names step and metric."""


def check_finite(step: int, metrics: dict[str, float]) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise NonFiniteMetric(
        f"step {step}: metric {bad[0]!r} is {metrics[bad[0]]} (all non-finite: {bad}). "
        "Stopping before this state is checkpointed; the last checkpoint is intact. "
        "Lower config.optim.lr, raise config.objective.temperature, or check the data.")


def peak_flops(mesh) -> float:
  """Total peak FLOP/s of the mesh's devices (measured matmul rate on CPU)."""
  kind = jax.devices()[0].device_kind
  for name, peak in _PEAKS.items():
    if kind.startswith(name):
      return peak * mesh.size
  n = 512
  x = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(5):
    f(x).block_until_ready()
  # CPU devices share the host's cores: one device's rate is the whole machine's.
  return 5 * 2 * n ** 3 / (time.perf_counter() - t0)


def progress(start: int, total: int):
  return tqdm.tqdm(total=total, initial=start, desc="distill", unit="step",
                   dynamic_ncols=True, file=sys.stderr, mininterval=1.0,
                   disable=not multihost.is_primary())


class Logger:
  """TensorBoard + metrics.jsonl + log.txt in the workdir (an epath: local or gs://),
  written by process 0 alone; on the other processes of a multi-host run it is silent."""

  def __init__(self, workdir, config):
    from tensorboardX import SummaryWriter
    self.workdir = paths.as_path(workdir)
    self.primary = multihost.is_primary()
    if not self.primary:
      return
    self.tb = SummaryWriter(str(self.workdir / "tb"))
    self.tb.add_text("config", "```\n" + str(config) + "\n```", 0)
    (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    self._jsonl = (self.workdir / "metrics.jsonl").open("a")
    self._log = (self.workdir / "log.txt").open("a")

  def text(self, msg: str) -> None:
    if not self.primary:
      return
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    tqdm.tqdm.write(line, file=sys.stderr)
    self._log.write(line + "\n")
    self._log.flush()

  def scalars(self, step: int, metrics: dict[str, float]) -> None:
    if not self.primary:
      return
    for k, v in metrics.items():
      self.tb.add_scalar(f"train/{k}", v, step)
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()

  def finish(self, summary: dict) -> None:
    if not self.primary:
      return
    for k, v in summary.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f"eval/{k}", v, 0)
    paths.write_text_atomic(self.workdir / "summary.json",
                            json.dumps(summary, indent=2, default=str))
    self.tb.close()
    self._jsonl.close()
    self._log.close()


class GenerationCost:
  """Counts the generation compute of each prefix source (the quality-compute axis)."""

  def __init__(self):
    self.seconds = {"student": 0.0, "teacher": 0.0}
    self.tokens = {"student": 0, "teacher": 0}

  def timed(self, source: str, fn: Callable, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    self.seconds[source] += time.perf_counter() - t0
    self.tokens[source] += int(np.sum(out["response_len"]))
    return out

  def as_metrics(self) -> dict[str, float]:
    return {f"gen_{k}_{s}": float(v[s]) for k, v in (("seconds", self.seconds),
                                                     ("tokens", self.tokens)) for s in v}

  def state(self) -> dict:
    return {"seconds": dict(self.seconds), "tokens": dict(self.tokens)}

  def load(self, state: dict):
    self.seconds.update(state["seconds"])
    self.tokens.update(state["tokens"])
