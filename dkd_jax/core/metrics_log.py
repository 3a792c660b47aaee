"""Run logging: TensorBoard scalars, a metrics JSONL, the resolved config, progress
(a tqdm bar on a terminal, a plain line every few steps in a log file).

Also the two checks every step needs: a NaN/inf metric stops the run naming the
step and the metric, and the MFU denominator (the accelerator's peak, or on CPU a
measured same-process matmul rate, so the figure means something there too).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from dkd_jax.core import multihost
from dkd_jax.core import paths

# bf16 dense peaks per chip (FLOP/s) for MFU; unknown kinds fall back to a measurement.
_PEAKS = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
}


class NonFiniteMetric(FloatingPointError):
  """Raised when a metric is NaN or infinite; the message names step and metric."""


def check_finite(step: int, metrics: dict[str, float]) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise NonFiniteMetric(
      f"step {step}: metric {bad[0]!r} is {metrics[bad[0]]} (all non-finite: {bad}). "
      "Stopping before this state is checkpointed; the last checkpoint is intact. "
      "Lower config.optim.lr, raise config.objective.temperature, or check the data."
    )


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
  return 5 * 2 * n**3 / (time.perf_counter() - t0)


class LineProgress:
  """tqdm's update/set_postfix/close as plain lines, one every `every` steps or
  `seconds` (whichever comes first) and one at the end: a log file or CI output then
  reads line by line instead of holding hundreds of carriage-return redraws."""

  def __init__(
    self, start: int, total: int, *, every: int, seconds: float, file=None, desc: str = "distill"
  ):
    self.n, self.total, self.every, self.seconds = start, total, max(every, 1), seconds
    self.desc, self.file, self.postfix = desc, file or sys.stderr, {}
    self._last_t, self._last_n = time.perf_counter(), start

  def set_postfix(self, refresh: bool = True, **kw) -> None:
    del refresh  # tqdm's argument; a line is written by `update` only
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
    self.file.write(
      f"[{time.strftime('%H:%M:%S')}] {self.desc} step {self.n}/{self.total}"
      f"{extra} ({rate:.2f} step/s)\n"
    )
    self.file.flush()
    self._last_n, self._last_t = self.n, now

  def close(self) -> None:
    if self.n != self._last_n:
      self._line(time.perf_counter())


def progress(
  start: int, total: int, *, every: int = 10, seconds: float = 30.0, file=None
) -> tqdm.tqdm | LineProgress:
  """A tqdm bar on a terminal; `LineProgress` lines when stderr is a file or a pipe."""
  file = file or sys.stderr
  if file.isatty() or not multihost.is_primary():  # tqdm(disable=True) is silent
    return tqdm.tqdm(
      total=total,
      initial=start,
      desc="distill",
      unit="step",
      dynamic_ncols=True,
      file=file,
      mininterval=1.0,
      disable=not multihost.is_primary(),
    )
  return LineProgress(start, total, every=every, seconds=seconds, file=file)


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Fields that change how fast a step runs, not what it computes (the same losses to float
# tolerance): a run saved before one existed resumes under its default.
SPEED_ONLY = frozenset({"train.length_bucket"})
# How a model's layers are applied (scanned or unrolled, rematerialised or not): the same
# params and losses, so a run resumes whatever they were.
LAYOUT_ONLY = (".model.scan_layers", ".model.remat")


def check_config_unchanged(workdir: str, config, allow: bool) -> None:
  """Refuses to resume a run's checkpoints under a different config (its LR and α
  schedules, data and objective would change mid-run) unless `allow`."""
  workdir = paths.as_path(workdir)
  saved_path, ckpts = workdir / "config.json", workdir / "checkpoints"
  has_ckpt = ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())
  if not has_ckpt or not saved_path.exists() or allow:
    return
  saved = _flat(json.loads(saved_path.read_text()))
  now = _flat(json.loads(config.to_json_best_effort()))
  diff = sorted(
    k
    for k in set(saved) | set(now)
    if saved.get(k) != now.get(k)
    and not (k in SPEED_ONLY and k not in saved)
    and not k.endswith(LAYOUT_ONLY)
  )
  if diff:
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
    raise ValueError(
      f"{workdir} holds checkpoints of a run with another config ({shown}"
      f"{' ...' if len(diff) > 8 else ''}); resume with the same config, use "
      "a new --workdir, or pass --allow_config_change"
    )


def strict_json(x: object) -> object:
  """`x` with every non-finite float as None and numpy scalars as Python ones, so the
  files written from it stay strict JSON: a metric with no value (token-level KL across
  two vocabularies, a one-seed interval, an infinite t) is null, not NaN."""
  if isinstance(x, dict):
    return {k: strict_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [strict_json(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def _row_step(line: str) -> float:
  """A row's step; a row cut short by a kill (unparseable) counts as past every step."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return math.inf


def _truncate_jsonl(path, last_step: int) -> int:
  """Keeps rows with step <= last_step (atomically); returns how many were dropped."""
  if not path.exists():
    return 0
  rows = [line + "\n" for line in path.read_text().splitlines() if line.strip()]
  keep = [r for r in rows if _row_step(r) <= last_step]
  if len(keep) != len(rows):
    paths.write_text_atomic(path, "".join(keep))
  return len(rows) - len(keep)


class Logger:
  """TensorBoard + metrics.jsonl + log.txt in the workdir (an epath: local or gs://),
  written by process 0 alone; on the other processes of a multi-host run it is silent."""

  def __init__(self, workdir, config):
    self.workdir, self.config = paths.as_path(workdir), config
    self.primary = multihost.is_primary()
    self.tb = self._jsonl = self._log = None
    if not self.primary:
      return
    (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    self._log = (self.workdir / "log.txt").open("a")

  def start(self, step: int) -> None:
    """Opens the metric sinks at the run's (restored) step: rows a killed run wrote past
    its last checkpoint are dropped from metrics.jsonl, and TensorBoard is told to
    purge its events past `step`, so a resumed run never holds a step twice."""
    if not self.primary:
      return
    from tensorboardX import SummaryWriter

    path = self.workdir / "metrics.jsonl"
    dropped = _truncate_jsonl(path, step)
    if dropped:
      self.text(f"resume: dropped {dropped} metric rows past step {step}")
    self.tb = SummaryWriter(str(self.workdir / "tb"), purge_step=step + 1 if step else None)
    if not step:
      self.tb.add_text("config", "```\n" + str(self.config) + "\n```", 0)
    self._jsonl = path.open("a")

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
    text = json.dumps(strict_json(summary), indent=2, default=str, allow_nan=False)
    paths.write_text_atomic(self.workdir / "summary.json", text)
    self.close()

  def close(self) -> None:
    """Flushes and closes the sinks (a run stopped early writes no summary)."""
    for sink in (self.tb, self._jsonl, self._log):
      if sink is not None:
        sink.close()


class GenerationCost:
  """Counts the generation compute of each prefix source (the quality-compute axis)."""

  def __init__(self):
    self.seconds = {"student": 0.0, "teacher": 0.0}
    self.tokens = {"student": 0, "teacher": 0}

  def timed(self, source: str, fn: Callable, *args, **kw) -> dict:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    self.seconds[source] += time.perf_counter() - t0
    self.tokens[source] += int(np.sum(out["response_len"]))
    return out

  def as_metrics(self) -> dict[str, float]:
    return {
      f"gen_{k}_{s}": float(v[s])
      for k, v in (("seconds", self.seconds), ("tokens", self.tokens))
      for s in v
    }

  def state(self) -> dict:
    return {"seconds": dict(self.seconds), "tokens": dict(self.tokens)}

  def load(self, state: dict) -> None:
    self.seconds.update(state["seconds"])
    self.tokens.update(state["tokens"])
