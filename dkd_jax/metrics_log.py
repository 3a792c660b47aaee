"""Run logging: TensorBoard scalars, a metrics JSONL, the resolved config, progress
(a tqdm bar on a terminal, a plain line every few steps in a log file).

Also the two checks every step needs: a NaN/inf metric stops the run naming the
step and the metric, and the MFU denominator (the accelerator's peak, or on CPU a
measured same-process matmul rate, so the figure means something there too).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

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


class LineProgress:
  """tqdm's update/set_postfix/close as plain lines, one every `every` steps or
  `seconds` (whichever comes first) and one at the end: a log file or CI output then
  reads line by line instead of holding hundreds of carriage-return redraws."""

  def __init__(self, start: int, total: int, *, every: int, seconds: float, file=None,
               desc: str = "distill"):
    self.n, self.total, self.every, self.seconds = start, total, max(every, 1), seconds
    self.desc, self.file, self.postfix = desc, file or sys.stderr, {}
    self._last_t, self._last_n = time.perf_counter(), start

  def set_postfix(self, **kw) -> None:
    self.postfix = kw

  def update(self, n: int = 1) -> None:
    self.n += n
    now = time.perf_counter()
    if self.n - self._last_n >= self.every or now - self._last_t >= self.seconds:
      self._line(now)

  def _line(self, now: float) -> None:
    # The rate since the previous line: the first one includes compilation, later ones
    # show the current speed rather than an average dragged down by it.
    rate = (self.n - self._last_n) / max(now - self._last_t, 1e-9)
    extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
    self.file.write(f"[{time.strftime('%H:%M:%S')}] {self.desc} step {self.n}/{self.total}"
                    f"{extra} ({rate:.2f} step/s)\n")
    self.file.flush()
    self._last_n, self._last_t = self.n, now

  def close(self) -> None:
    if self.n != self._last_n:
      self._line(time.perf_counter())


def progress(start: int, total: int, *, every: int = 10, seconds: float = 30.0, file=None):
  """A tqdm bar on a terminal; `LineProgress` lines when stderr is a file or a pipe."""
  file = file or sys.stderr
  if file.isatty():
    return tqdm.tqdm(total=total, initial=start, desc="distill", unit="step",
                     dynamic_ncols=True, file=file, mininterval=1.0)
  return LineProgress(start, total, every=every, seconds=seconds, file=file)


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_config_unchanged(workdir: str, config, allow: bool) -> None:
  """Refuses to resume a run's checkpoints under a different config (its LR and α
  schedules, data and objective would change mid-run) unless `allow`."""
  saved_path = os.path.join(workdir, "config.json")
  has_ckpt = os.path.isdir(os.path.join(workdir, "checkpoints")) and \
      any(n.isdigit() for n in os.listdir(os.path.join(workdir, "checkpoints")))
  if not has_ckpt or not os.path.exists(saved_path) or allow:
    return
  with open(saved_path) as f:
    saved = _flat(json.load(f))
  now = _flat(json.loads(config.to_json_best_effort()))
  diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
  if diff:
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
    raise ValueError(f"{workdir} holds checkpoints of a run with another config ({shown}"
                     f"{' ...' if len(diff) > 8 else ''}); resume with the same config, use "
                     "a new --workdir, or pass --allow_config_change")


def _truncate_jsonl(path: str, last_step: int) -> int:
  """Keeps rows with step <= last_step (atomically); returns how many were dropped."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  keep = [r for r in rows if json.loads(r)["step"] <= last_step]
  if len(keep) != len(rows):
    with open(path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(path + ".tmp", path)
  return len(rows) - len(keep)


class Logger:
  """TensorBoard + metrics.jsonl + log.txt in the workdir."""

  def __init__(self, workdir: str, config):
    self.workdir, self.config = workdir, config
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    self._log = open(os.path.join(workdir, "log.txt"), "a")
    self.tb = self._jsonl = None

  def start(self, step: int) -> None:
    """Opens the metric sinks at the run's (restored) step: rows a killed run wrote past
    its last checkpoint are dropped from metrics.jsonl, and TensorBoard is told to
    purge its events past `step`, so a resumed run never holds a step twice."""
    from tensorboardX import SummaryWriter
    path = os.path.join(self.workdir, "metrics.jsonl")
    dropped = _truncate_jsonl(path, step)
    if dropped:
      self.text(f"resume: dropped {dropped} metric rows past step {step}")
    self.tb = SummaryWriter(os.path.join(self.workdir, "tb"),
                            purge_step=step + 1 if step else None)
    if not step:
      self.tb.add_text("config", "```\n" + str(self.config) + "\n```", 0)
    self._jsonl = open(path, "a")

  def text(self, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    tqdm.tqdm.write(line, file=sys.stderr)
    self._log.write(line + "\n")
    self._log.flush()

  def scalars(self, step: int, metrics: dict[str, float]) -> None:
    for k, v in metrics.items():
      self.tb.add_scalar(f"train/{k}", v, step)
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()

  def finish(self, summary: dict) -> None:
    for k, v in summary.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f"eval/{k}", v, 0)
    tmp = os.path.join(self.workdir, "summary.json.tmp")
    with open(tmp, "w") as f:
      json.dump(summary, f, indent=2, default=str)
    os.replace(tmp, os.path.join(self.workdir, "summary.json"))
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
