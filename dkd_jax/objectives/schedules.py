"""Schedules for the KL-mixing weight α (DESIGN §1: α = forward-KL weight).

The loss is α·forward + (1−α)·reverse. α can be constant, annealed linearly or
by a half cosine from `alpha` to `alpha_end` over `steps`, or adapted to the
student's token entropy (`entropy_adaptive`), where forward KL -- mass-covering
-- is the stabiliser against the entropy collapse that on-policy reverse KL
tends to cause.

`alpha_at` is a pure host-side function; the adaptive kind carries a small
JSON-serialisable state dict that belongs in the checkpoint next to the
curriculum state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

KINDS = ("constant", "linear", "cosine", "entropy_adaptive")


@dataclasses.dataclass(frozen=True)
class AlphaSchedule:
  """α over training. Fields not used by `kind` are ignored.

  kind: one of KINDS.
  alpha: α at step 0 (and the resting value of entropy_adaptive).
  alpha_end: α at and after `steps` (linear, cosine).
  steps: annealing horizon in optimizer steps (linear, cosine).
  target_entropy: mean token entropy (nats) below which α rises (adaptive).
  rate: α change per call (adaptive).
  alpha_min, alpha_max: clamp for the adaptive α.
  """

  kind: str = "constant"
  alpha: float = 0.5
  alpha_end: float = 0.5
  steps: int = 1
  target_entropy: float = 0.5
  rate: float = 0.01
  alpha_min: float = 0.0
  alpha_max: float = 1.0

  def validate(self) -> AlphaSchedule:
    """Raise ValueError naming the offending field; returns self to chain."""
    if self.kind not in KINDS:
      raise ValueError(f"AlphaSchedule.kind={self.kind!r}; allowed: {KINDS}")
    for name in ("alpha", "alpha_end", "alpha_min", "alpha_max"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
        raise ValueError(f"AlphaSchedule.{name}={v!r}; allowed: a float in [0, 1]")
    if self.kind in ("linear", "cosine"):
      if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
        raise ValueError(
          f"AlphaSchedule.steps={self.steps!r}; allowed: an int >= 1 for kind={self.kind!r}"
        )
    if self.kind == "entropy_adaptive":
      _validate_adaptive(self)
    return self


def _validate_adaptive(s: AlphaSchedule) -> None:
  if not (
    isinstance(s.target_entropy, (int, float))
    and math.isfinite(s.target_entropy)
    and s.target_entropy >= 0
  ):
    raise ValueError(
      f"AlphaSchedule.target_entropy={s.target_entropy!r}; allowed: a finite float >= 0 (nats)"
    )
  if not (isinstance(s.rate, (int, float)) and 0.0 <= s.rate <= 1.0):
    raise ValueError(f"AlphaSchedule.rate={s.rate!r}; allowed: a float in [0, 1]")
  if not s.alpha_min <= s.alpha <= s.alpha_max:
    raise ValueError(
      f"AlphaSchedule.alpha={s.alpha!r}; allowed: within "
      f"[alpha_min={s.alpha_min}, alpha_max={s.alpha_max}]"
    )


def init_state(schedule: AlphaSchedule) -> dict[str, Any]:
  """Fresh state; only entropy_adaptive keeps anything (its current α)."""
  if schedule.kind == "entropy_adaptive":
    return {"alpha": float(schedule.alpha)}
  return {}


def _annealed(schedule: AlphaSchedule, step: int) -> float:
  frac = min(step / schedule.steps, 1.0)
  if schedule.kind == "cosine":
    # half cosine: flat at both ends, so α moves slowest where it starts/ends.
    frac = 0.5 * (1.0 - math.cos(math.pi * frac))
  return schedule.alpha + (schedule.alpha_end - schedule.alpha) * frac


def _adapted(schedule: AlphaSchedule, current: float, entropy: float | None) -> float:
  """One adaptive update.

  Entropy below target means the student is collapsing: α rises by `rate`.
  Otherwise α relaxes back toward its resting value `alpha` by at most
  `rate` (never overshooting), so the stabiliser is released once the
  student recovers. No observation (entropy=None) leaves α unchanged.
  """
  if entropy is None:
    new = current
  elif entropy < schedule.target_entropy:
    new = current + schedule.rate
  else:
    gap = schedule.alpha - current
    new = current + max(-schedule.rate, min(schedule.rate, gap))
  return min(max(new, schedule.alpha_min), schedule.alpha_max)


def alpha_at(
  schedule: AlphaSchedule,
  step: int,
  state: dict[str, Any] | None = None,
  entropy: float | None = None,
) -> tuple[float, dict[str, Any]]:
  """(α for this step, new state). Pure: `state` is not mutated.

  Call once per optimizer step; for entropy_adaptive pass the student's mean
  token entropy (nats) from the latest rollouts -- each call is one update.
  `state` None/{} starts fresh.
  """
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    raise ValueError(f"step must be an int >= 0, got {step!r}")
  if entropy is not None and not math.isfinite(entropy):
    raise ValueError(f"entropy must be finite at step {step}, got {entropy!r}")
  if schedule.kind == "constant":
    return float(schedule.alpha), dict(state or {})
  if schedule.kind in ("linear", "cosine"):
    return float(_annealed(schedule, step)), dict(state or {})
  if schedule.kind == "entropy_adaptive":
    current = (state or init_state(schedule)).get("alpha", schedule.alpha)
    new = float(_adapted(schedule, float(current), entropy))
    return new, {"alpha": new}
  raise ValueError(f"AlphaSchedule.kind={schedule.kind!r}; allowed: {KINDS}")
