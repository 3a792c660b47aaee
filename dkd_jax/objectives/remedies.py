"""The remedies' settings, derived from a frozen teacher reference by rules in code.

DESIGN §6: thresholds come from a measured reference, never from numbers typed after
seeing a run, and a remedy whose threshold the teacher itself would fail (or that the
student can never reach) is a configuration error caught before training. The
reference is the teacher's own rollouts on training prompts at a generous cap (longer
than any budget it implies), measured once: per response its length (tokens incl. EOS),
whether it hit the cap, and its per-token entropies. From it, `derive`:

- budget: 2 x the teacher's p95 length, rounded up to a multiple of 8 (DESIGN §8);
- short horizon: the teacher's p50 length (the long horizon is the budget);
- curriculum stage lengths: the teacher's p50, its p95, then the budget;
- the truncation allowed to advance from stage i: the teacher's own truncation rate at
  that stage's length + TRUNC_MARGIN (so a teacher-like student advances);
- gate_entropy: GATE_RATIO x the teacher's mean batch entropy at the stage length where
  it is lowest (DESIGN §6: a ratio of the teacher's rollout entropy, measured at the
  lengths the gate will see); floor_entropy = FLOOR_RATIO x gate_entropy;
- min_steps: steps / (2 (K - 1)), so every stage can be reached in the first half;
- the entropy-adaptive α's target: the QUANTILE-th percentile of one teacher batch's
  entropy at the long horizon. Below it the student is less uncertain than the teacher
  it imitates almost ever is: collapse. A warm start above it can reach it (`check`).

`check` replays the very gate (`curriculum.update`) and α schedule (`schedules.alpha_at`)
on batches of the teacher's rollouts and lists every way the teacher would fail.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dkd_jax.objectives import curriculum
from dkd_jax.objectives import schedules

BUDGET_FACTOR = 2.0
BUDGET_MULTIPLE = 8
SHORT_QUANTILE = 50
STAGE_QUANTILES = (50, 95)
TRUNC_MARGIN = 0.10
QUANTILE = 5
GATE_RATIO = 0.7
FLOOR_RATIO = 0.5
PASS_RATE = 0.95  # the teacher must pass each gate at least this often (`check`)


@dataclasses.dataclass(frozen=True)
class Reference:
  """The teacher's rollouts: lengths [N] (tokens incl. EOS), truncated [N] (hit `cap`),
  entropies (N arrays of per-token entropies, nats)."""

  lengths: np.ndarray
  truncated: np.ndarray
  entropies: tuple
  cap: int

  @classmethod
  def from_json(cls, d: dict) -> Reference:
    ent = tuple(np.asarray(e, np.float64) for e in d["entropies"])
    lens = np.asarray(d["lengths"], np.int64)
    if len(ent) != len(lens) or any(len(e) != n for e, n in zip(ent, lens)):
      raise ValueError("teacher reference: one entropy per response token is needed")
    return cls(lens, np.asarray(d["truncated"], bool), ent, int(d["cap"]))

  def to_json(self) -> dict:
    return {
      "cap": self.cap,
      "lengths": [int(x) for x in self.lengths],
      "truncated": [bool(x) for x in self.truncated],
      "entropies": [[round(float(x), 5) for x in e] for e in self.entropies],
    }

  def quantile(self, q: float) -> int:
    return int(math.ceil(np.percentile(self.lengths, q)))

  def truncation_at(self, length: int) -> float:
    """Fraction of responses cut by a cap of `length` tokens."""
    return float(np.mean((self.lengths > length) | self.truncated))

  def capped(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entropy sum, token count, truncated) of every response cut at `length`."""
    sums = np.array([e[:length].sum() for e in self.entropies])
    counts = np.minimum(self.lengths, length).astype(np.float64)
    return sums, counts, (self.lengths > length) | self.truncated


def budget(ref: Reference) -> int:
  b = BUDGET_MULTIPLE * math.ceil(BUDGET_FACTOR * np.percentile(ref.lengths, 95) / BUDGET_MULTIPLE)
  if b > ref.cap:
    raise ValueError(
      f"the budget {b} (2 x the teacher's p95) exceeds the reference's cap {ref.cap}: "
      "measure the reference at a larger cap"
    )
  return int(b)


def batch_stats(
  ref: Reference, length: int, batch: int, draws: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """(entropy [draws], truncation [draws]) of `draws` batches of `batch` teacher
  responses at the cap `length`, as the run measures a step: token-mean entropy over the
  batch (`rollout.token_mean`) and the batch's truncation rate."""
  sums, counts, trunc = ref.capped(length)
  idx = np.random.default_rng(seed).integers(0, len(sums), (draws, batch))
  ent = sums[idx].sum(1) / np.maximum(counts[idx].sum(1), 1.0)
  return ent, trunc[idx].mean(1)


def batch_entropy(ref: Reference, length: int) -> float:
  """The teacher's expected batch entropy (token mean over its responses) at a cap."""
  sums, counts, _ = ref.capped(length)
  return float(sums.sum() / max(counts.sum(), 1.0))


def derive(ref: Reference, *, steps: int, batch: int, window: int, check_every: int) -> dict:
  """Every remedy setting from the reference (see the module docstring): config values
  to pass as overrides, plus the teacher figures they came from."""
  b = budget(ref)
  lengths = sorted({min(ref.quantile(q), b) for q in STAGE_QUANTILES} | {b})
  if len(lengths) < 2:
    raise ValueError(f"the teacher's length quantiles give a single stage {lengths}")
  by_stage = [batch_entropy(ref, L) for L in lengths]
  gate = GATE_RATIO * min(by_stage)
  ent_b, _ = batch_stats(ref, b, batch, 4000, seed=1)
  return {
    "budget": b,
    "short_horizon": min(ref.quantile(SHORT_QUANTILE), b),
    "curriculum": {
      "lengths": lengths,
      "gate_entropy": round(gate, 4),
      "floor_entropy": round(FLOOR_RATIO * gate, 4),
      "stage_max_truncation": [
        round(min(1.0, ref.truncation_at(L) + TRUNC_MARGIN), 4) for L in lengths[:-1]
      ],
      "min_steps": max(1, steps // (2 * (len(lengths) - 1))),
      "check_every": check_every,
      "window": window,
      "reference": "absolute",
    },
    "adaptive": {"target_entropy": round(float(np.percentile(ent_b, QUANTILE)), 4)},
    "teacher": {
      "len_p50": float(np.percentile(ref.lengths, 50)),
      "len_p95": float(np.percentile(ref.lengths, 95)),
      "truncation_at": {str(L): ref.truncation_at(L) for L in lengths},
      "batch_entropy_at_budget": float(np.mean(ent_b)),
      "entropy_by_stage": [round(h, 4) for h in by_stage],
    },
    "rules": {
      "budget_factor": BUDGET_FACTOR,
      "stage_quantiles": list(STAGE_QUANTILES),
      "trunc_margin": TRUNC_MARGIN,
      "entropy_quantile": QUANTILE,
      "gate_ratio": GATE_RATIO,
      "floor_ratio": FLOOR_RATIO,
    },
  }


def curriculum_config(derived: dict, **kw) -> curriculum.CurriculumConfig:
  """The derived curriculum as the run's CurriculumConfig (extra fields: on_collapse...)."""
  d = derived["curriculum"]
  return curriculum.CurriculumConfig(
    lengths=tuple(d["lengths"]),
    check_every=d["check_every"],
    window=d["window"],
    min_steps=d["min_steps"],
    gate_entropy=d["gate_entropy"],
    floor_entropy=d["floor_entropy"],
    max_truncation=1.0,
    stage_max_truncation=tuple(d["stage_max_truncation"]),
    reference="absolute",
    **kw,
  )


def replay_teacher(
  ref: Reference, derived: dict, *, steps: int, batch: int, seed: int = 0
) -> tuple[list[dict], np.ndarray]:
  """(curriculum decisions, α per step) when the teacher's own rollouts feed the gate and
  the adaptive α: each step a fresh batch of `batch` reference responses, cut at the
  stage's length (a cut does not change the prefix a longer rollout would have had)."""
  cfg = curriculum_config(derived).validate(2**31)
  state, rng, decisions = curriculum.init_state(), np.random.default_rng(seed), []
  sched = schedules.AlphaSchedule(
    kind="entropy_adaptive", alpha=0.0, target_entropy=derived["adaptive"]["target_entropy"]
  ).validate()
  s_state, alphas = schedules.init_state(sched), []
  full = ref.capped(derived["budget"])
  for step in range(steps):
    L = curriculum.max_length(cfg, state)
    sums, counts, trunc = ref.capped(L)
    idx = rng.integers(0, len(sums), batch)
    h = sums[idx].sum() / max(counts[idx].sum(), 1.0)
    state, d = curriculum.update(cfg, state, step + 1, h, trunc[idx].mean())
    decisions += [d] if d else []
    h_long = full[0][idx].sum() / max(full[1][idx].sum(), 1.0)
    alpha, s_state = schedules.alpha_at(sched, step, s_state, entropy=h_long)
    alphas.append(alpha)
  return decisions, np.asarray(alphas)


def check(
  ref: Reference, derived: dict, *, batch: int, warm_entropy: float | None = None
) -> list[str]:
  """Every way the derived settings are a configuration error (empty list = none): the
  budget under 2 x p95; stages not increasing up to the budget; a gate the teacher's own
  batches fail more often than 1 - PASS_RATE; an adaptive target the teacher's batches
  fall under more often than that; a target the warm start (when given) starts below."""
  bad = []
  b, cur = derived["budget"], derived["curriculum"]
  if b < BUDGET_FACTOR * np.percentile(ref.lengths, 95):
    bad.append(f"budget {b} < {BUDGET_FACTOR} x the teacher's p95")
  L = cur["lengths"]
  if list(L) != sorted(set(L)) or L[-1] != b:
    bad.append(f"stage lengths {L} must increase strictly up to the budget {b}")
  if not 0 < cur["floor_entropy"] < cur["gate_entropy"]:
    bad.append(f"need 0 < floor {cur['floor_entropy']} < gate {cur['gate_entropy']}")
  for i, length in enumerate(L):
    ent, trunc = batch_stats(ref, length, batch, 4000 * cur["window"], seed=7 + i)
    ent_w = ent.reshape(-1, cur["window"]).mean(1)
    trunc_w = trunc.reshape(-1, cur["window"]).mean(1)
    if np.mean(ent_w >= cur["gate_entropy"]) < PASS_RATE:
      bad.append(f"stage {i} (length {length}): the teacher fails gate_entropy too often")
    if np.mean(ent_w < cur["floor_entropy"]) > 1 - PASS_RATE:
      bad.append(f"stage {i} (length {length}): the teacher counts as collapsing")
    if i < len(L) - 1 and np.mean(trunc_w <= cur["stage_max_truncation"][i]) < PASS_RATE:
      bad.append(f"stage {i} (length {length}): the teacher fails the truncation gate")
  ent_b, _ = batch_stats(ref, b, batch, 4000, seed=3)
  target = derived["adaptive"]["target_entropy"]
  if np.mean(ent_b < target) > 1 - PASS_RATE + 0.01:
    bad.append(f"the teacher's batches fall under the adaptive target {target} too often")
  if warm_entropy is not None and not warm_entropy > target:
    bad.append(f"the warm start's entropy {warm_entropy} is not above the target {target}")
  return bad
