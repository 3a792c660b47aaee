"""Entropy-gated length curriculum (DESIGN §6).

Training runs through stages of increasing max response length (the rollout
limit and the loss-mask length). Every `check_every` steps the gate looks at
moving-window means of the student's token entropy H on its own rollouts and
of the rollout truncation rate, and decides:

  collapse (H < floor_entropy)  hold; with on_collapse='raise_forward' also add
                                alpha_step to the forward-KL weight bonus
                                ('raise_alpha'; 'collapse_hold' once capped or
                                with on_collapse='hold').
  last stage                    'final_stage' (nothing left to advance to).
  stage younger than min_steps,
  H < gate_entropy, or
  truncation > max_truncation   'hold'.
  otherwise                     'advance' to the next length.

Choices where DESIGN is silent: the windows are emptied on advancing (the
longer stage's rollouts are a different distribution); the α bonus is kept
across stages (the stabiliser is not withdrawn just because the length grew);
the collapse check runs before min_steps so a collapsing stage is treated at
once.

The state is a plain JSON-serialisable dict so it goes into the checkpoint
verbatim; every function here is pure (returns a new state).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ON_COLLAPSE = ("hold", "raise_forward")
REFERENCES = ("absolute", "teacher", "student_start")
MAX_RATIO = 10.0
ACTIONS = ("advance", "hold", "collapse_hold", "raise_alpha", "final_stage")

State = dict[str, Any]
Decision = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
  """Curriculum settings; entropies are mean token entropies in nats.

  lengths: strictly increasing max response lengths, one per stage.
  check_every: steps between gate evaluations.
  window: number of latest steps averaged by the gate.
  min_steps: steps a stage must run before it may advance.
  gate_entropy: windowed H needed to advance.
  floor_entropy: windowed H below which the student counts as collapsing.
  max_truncation: windowed truncation rate allowed to advance.
  stage_max_truncation: () or one rate per advance (len(lengths) - 1 values): the
    truncation allowed to leave stage i, replacing max_truncation (remedies.derive sets
    each from the teacher's own truncation at that stage's length).
  on_collapse: 'hold' or 'raise_forward' (also raise the forward-KL weight).
  alpha_step: bonus added to α per collapsing check.
  alpha_max: cap on α after the bonus (and so on the bonus itself).
  enabled: False = always train at lengths[-1], no decisions.
  reference: 'absolute' (gate_entropy / floor_entropy in nats), 'teacher' (ratios of
    the teacher's rollout entropy, measured once by the run: `set_reference`) or
    'student_start' (ratios of the student's windowed entropy at the first check).
    Entropies differ by orders of magnitude between a 32-symbol task and a 150k-token
    vocabulary (DESIGN §6), so ratios carry over where nats do not.
  """

  lengths: tuple[int, ...] = (512, 1024, 2048)
  check_every: int = 50
  window: int = 50
  min_steps: int = 200
  gate_entropy: float = 0.3
  floor_entropy: float = 0.1
  max_truncation: float = 0.2
  stage_max_truncation: tuple[float, ...] = ()
  on_collapse: str = "raise_forward"
  alpha_step: float = 0.1
  alpha_max: float = 1.0
  enabled: bool = True
  reference: str = "absolute"

  def validate(self, vocab_size: int) -> CurriculumConfig:
    """Raise ValueError naming the field; returns self to chain."""
    _validate_lengths(self.lengths)
    for name, low in (("check_every", 1), ("window", 1), ("min_steps", 0)):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"curriculum.{name}={v!r}; allowed: an int >= {low}")
    _validate_entropies(self, vocab_size)
    for name in ("max_truncation", "alpha_step", "alpha_max"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
        raise ValueError(f"curriculum.{name}={v!r}; allowed: a float in [0, 1]")
    _validate_stage_truncation(self)
    if self.on_collapse not in ON_COLLAPSE:
      raise ValueError(f"curriculum.on_collapse={self.on_collapse!r}; allowed: {ON_COLLAPSE}")
    if not isinstance(self.enabled, bool):
      raise ValueError(f"curriculum.enabled={self.enabled!r}; allowed: True/False")
    return self


def _validate_lengths(lengths) -> None:
  if not isinstance(lengths, tuple) or not lengths:
    raise ValueError(f"curriculum.lengths={lengths!r}; allowed: a non-empty tuple of ints")
  for v in lengths:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(
        f"curriculum.lengths={lengths!r}; every length must be a positive int, got {v!r}"
      )
  if any(b <= a for a, b in zip(lengths, lengths[1:])):
    raise ValueError(f"curriculum.lengths={lengths!r}; must be strictly increasing")


def _validate_stage_truncation(cfg: CurriculumConfig) -> None:
  v, need = cfg.stage_max_truncation, len(cfg.lengths) - 1
  ok = isinstance(v, tuple) and (
    len(v) == 0
    or len(v) == need
    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in v)
  )
  if not ok:
    raise ValueError(
      f"curriculum.stage_max_truncation={v!r}; allowed: () or {need} rates in [0, 1], "
      "one per advance"
    )


def max_truncation(cfg: CurriculumConfig, stage: int) -> float:
  """The truncation rate allowed to advance from `stage`."""
  if cfg.stage_max_truncation:
    return float(cfg.stage_max_truncation[min(stage, len(cfg.stage_max_truncation) - 1)])
  return float(cfg.max_truncation)


def _validate_entropies(cfg: CurriculumConfig, vocab_size: int) -> None:
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
    raise ValueError(f"vocab_size={vocab_size!r}; allowed: an int >= 2")
  if cfg.reference not in REFERENCES:
    raise ValueError(f"curriculum.reference={cfg.reference!r}; allowed: {REFERENCES}")
  h_max = math.log(vocab_size)  # entropy of the uniform distribution
  top, unit = (
    (h_max, f"[0, log(vocab_size)={h_max:.4f}] nats")
    if cfg.reference == "absolute"
    else (MAX_RATIO, f"a ratio in [0, {MAX_RATIO}] of the {cfg.reference} entropy")
  )
  for name in ("gate_entropy", "floor_entropy"):
    v = getattr(cfg, name)
    if not (isinstance(v, (int, float)) and 0.0 <= v <= top):
      raise ValueError(f"curriculum.{name}={v!r}; allowed: {unit}")
  if cfg.floor_entropy > cfg.gate_entropy:
    raise ValueError(
      f"curriculum.floor_entropy={cfg.floor_entropy} must be <= gate_entropy={cfg.gate_entropy}"
    )


# ------------------------------------------------------------------ state ---


def init_state() -> State:
  return {
    "stage": 0,
    "stage_start_step": 0,
    "entropy_window": [],
    "trunc_window": [],
    "alpha_bonus": 0.0,
    "decisions": [],
    "reference_entropy": None,
  }


def set_reference(state: State, entropy: float) -> State:
  """Records the measured reference entropy (nats) the ratios multiply."""
  h = float(entropy)
  if not math.isfinite(h) or h <= 0:
    raise ValueError(f"curriculum reference entropy must be a positive number, got {h}")
  return dict(state, reference_entropy=h)


def thresholds(cfg: CurriculumConfig, state: State) -> tuple[float, float]:
  """(gate, floor) in nats for the current state."""
  if cfg.reference == "absolute":
    return cfg.gate_entropy, cfg.floor_entropy
  ref = state.get("reference_entropy")
  if ref is None:
    raise ValueError(
      f"curriculum.reference={cfg.reference!r} but no reference entropy "
      "was measured (set_reference)"
    )
  return cfg.gate_entropy * ref, cfg.floor_entropy * ref


def max_length(cfg: CurriculumConfig, state: State) -> int:
  """Max response length for rollouts and the loss mask right now."""
  if not cfg.enabled:
    return cfg.lengths[-1]
  return cfg.lengths[min(state["stage"], len(cfg.lengths) - 1)]


def alpha_bonus(state: State) -> float:
  """Forward-KL weight added by collapse checks so far."""
  return float(state["alpha_bonus"])


def effective_alpha(cfg: CurriculumConfig, state: State, base_alpha: float) -> float:
  """base α (e.g. from schedules.alpha_at) plus the bonus, capped at alpha_max.

  The cap never pushes α below the base: the curriculum only adds weight.
  """
  return min(base_alpha + alpha_bonus(state), max(base_alpha, cfg.alpha_max))


# ------------------------------------------------------------------- gate ---


def _gate(
  cfg: CurriculumConfig, state: State, step: int, h: float, trunc: float
) -> tuple[str, str]:
  """(action, reason) for one check on windowed means h, trunc."""
  ran = step - state["stage_start_step"]
  last = state["stage"] >= len(cfg.lengths) - 1
  gate, floor = thresholds(cfg, state)
  if h < floor:
    why = f"collapse: H={h:.4f} < {_named(cfg, 'floor_entropy', floor)}"
    bonus = state["alpha_bonus"]
    if cfg.on_collapse == "hold":
      return "collapse_hold", f"{why}; on_collapse='hold'"
    if cfg.alpha_step > 0 and bonus < cfg.alpha_max:
      new = min(bonus + cfg.alpha_step, cfg.alpha_max)
      return "raise_alpha", f"{why}; alpha_bonus {bonus:.4f} -> {new:.4f}"
    return "collapse_hold", (
      f"{why}; alpha_bonus={bonus:.4f} cannot rise "
      f"(alpha_max={cfg.alpha_max}, "
      f"alpha_step={cfg.alpha_step})"
    )
  if last:
    return "final_stage", (
      f"stage {state['stage']} (max_len {cfg.lengths[-1]}) "
      f"is the last; H={h:.4f}, trunc={trunc:.4f}"
    )
  if ran < cfg.min_steps:
    return "hold", f"stage ran {ran} < min_steps={cfg.min_steps} steps"
  if h < gate:
    return "hold", f"H={h:.4f} < {_named(cfg, 'gate_entropy', gate)}"
  allowed = max_truncation(cfg, state["stage"])
  if trunc > allowed:
    return "hold", (f"trunc={trunc:.4f} > max_truncation={allowed:.4f}")
  nxt = cfg.lengths[state["stage"] + 1]
  return "advance", (
    f"H={h:.4f} >= {_named(cfg, 'gate_entropy', gate)}, "
    f"trunc={trunc:.4f} <= max_truncation="
    f"{allowed:.4f}, ran {ran} >= min_steps="
    f"{cfg.min_steps}; max_len {max_length(cfg, state)} -> {nxt}"
  )


def _named(cfg: CurriculumConfig, name: str, nats: float) -> str:
  """'gate_entropy=0.3000', or with a reference 'gate_entropy=0.7 x teacher entropy
  = 0.2100' (the field the user sets, and the threshold it gave)."""
  if cfg.reference == "absolute":
    return f"{name}={nats:.4f}"
  return f"{name}={getattr(cfg, name)} x {cfg.reference} entropy = {nats:.4f}"


def _apply(cfg: CurriculumConfig, state: State, step: int, action: str) -> State:
  new = dict(state)
  if action == "raise_alpha":
    new["alpha_bonus"] = min(state["alpha_bonus"] + cfg.alpha_step, cfg.alpha_max)
  elif action == "advance":
    new.update(stage=state["stage"] + 1, stage_start_step=step, entropy_window=[], trunc_window=[])
  return new


def _check_metric(name: str, value, step: int) -> float:
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"curriculum got {name}={value} at step {step}")
  return value


def update(
  cfg: CurriculumConfig, state: State, step: int, entropy: float, trunc_rate: float
) -> tuple[State, Decision | None]:
  """Record this step's metrics; every check_every steps, decide.

  entropy: the student's mean token entropy (nats) on this step's rollouts.
  trunc_rate: fraction of this step's rollouts cut at max_length.
  Returns (new state, decision or None). A decision is also appended to
  state['decisions'] and has keys step, action (one of ACTIONS), stage and
  max_len (after the action), reason, entropy and trunc_rate (windowed
  means) and alpha_bonus (after the action).
  """
  if not cfg.enabled:
    return state, None
  h = _check_metric("entropy", entropy, step)
  t = _check_metric("trunc_rate", trunc_rate, step)
  state = dict(
    state,
    entropy_window=(state["entropy_window"] + [h])[-cfg.window :],
    trunc_window=(state["trunc_window"] + [t])[-cfg.window :],
  )
  if step <= 0 or step % cfg.check_every:
    return state, None
  h_mean = sum(state["entropy_window"]) / len(state["entropy_window"])
  t_mean = sum(state["trunc_window"]) / len(state["trunc_window"])
  if cfg.reference == "student_start" and state.get("reference_entropy") is None:
    state = set_reference(state, max(h_mean, 1e-6))
  action, reason = _gate(cfg, state, step, h_mean, t_mean)
  state = _apply(cfg, state, step, action)
  decision = {
    "step": step,
    "action": action,
    "stage": state["stage"],
    "max_len": max_length(cfg, state),
    "reason": reason,
    "entropy": h_mean,
    "trunc_rate": t_mean,
    "alpha_bonus": state["alpha_bonus"],
  }
  state["decisions"] = state["decisions"] + [decision]
  return state, decision
