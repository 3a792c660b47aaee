"""The third study's declared plan, in code (docs/results/PREREGISTRATION.md states it
in words; a test keeps the two in step, and launch/study.sh runs exactly these arms).

What the report may conclude is fixed here before any study run: the arms, the seeds,
the steps and evaluation points, the competence thresholds for the teacher and the
warm start, the claims with their expected directions, the test (a seed-level paired
t-test, two-sided) at LEVEL with Holm's correction within each family. Anything the
report computes that is not a claim here is labelled post hoc.
"""

from __future__ import annotations

import dataclasses

SEEDS = (0, 1, 2, 3)
STEPS = 300  # optimizer steps of every distillation arm (batch 16)
EVAL_FRACTIONS = (0.0, 1 / 3, 2 / 3, 1.0)  # evaluation points along each trajectory
CURVE_PROBLEMS = 250  # intermediate points: the first 250 held-out problems (paired)
PROBLEMS = 1000  # the final point and every claim: all held-out problems
K = 8
LEVEL = 0.05
CORRECTION = "holm"
TEST = "paired t-test over per-seed differences (two-sided, df = seeds - 1)"

# Competence gates (issue 22, items 1-3), checked before any student run.
TEACHER_MIN_AVG = 0.5
TEACHER_MIN_PASS = 0.8
TEACHER_MAX_TRUNCATION = 0.01
WARM_MIN_AVG_FLOOR = 0.10  # and >= WARM_MIN_AVG_FACTOR x the constant-answer baseline
WARM_MIN_AVG_FACTOR = 5.0
WARM_MAX_BELOW_TEACHER = 0.15  # warm start Avg@k <= teacher's - 0.15
BUDGET_FACTOR = 2.0  # the length budget >= 2 x the teacher's p95 response length
RL_MAX_TIED_AT_START = 0.5  # GRPO: <= 50% of groups tied at its start

# per-problem fields of an evaluation (evals.harness `per_problem`) by metric name
FIELDS = {
  "avg_at_k": "correct",
  "pass_at_k": f"pass_at_{K}",
  "length": "length",
  "entropy": "entropy",
  "truncation": "truncated",
}


@dataclasses.dataclass(frozen=True)
class Arm:
  """A study arm: `engages` names the mechanism whose firing a claim needs ('' = none;
  'curriculum': at least one 'advance' on the seed; 'adaptive_alpha': α left its base)."""

  name: str
  what: str
  engages: str = ""


ARMS = (
  Arm("fwd_teacher", "forward KL on teacher prefixes (cached teacher rollouts), long horizon"),
  Arm("rev_teacher", "reverse KL on teacher prefixes, long horizon"),
  Arm("fwd_student", "forward KL on student prefixes, long horizon"),
  Arm("rev_student", "reverse KL on student prefixes (OPD), long horizon"),
  Arm("rev_student_short", "reverse KL on student prefixes, short horizon (teacher p50)"),
  Arm("mix_a50", "α = 0.5 forward + 0.5 reverse on student prefixes, long horizon"),
  Arm("curriculum", "rev_student under the entropy-gated length curriculum", "curriculum"),
  Arm("mix_adaptive", "mixed KL from α = 0, entropy-adaptive α, long horizon", "adaptive_alpha"),
)
# The undistilled baseline: each seed's warm-started student (issue 20), evaluated once.
WARM_START = "warm_start"
RL_INITS = tuple(a.name for a in ARMS) + (WARM_START,)


@dataclasses.dataclass(frozen=True)
class Claim:
  """One test: a - b in `metric` (a FIELDS key) at the final point, expected sign '+'/'-'.
  `group` is the paper's claim it belongs to; `family` the Holm family."""

  id: str
  group: str
  text: str
  a: str
  b: str
  metric: str
  expected: str
  family: str = "primary"


CLAIMS = (
  Claim("D1", "direction", "reverse KL gains Avg@k", "rev_student", "fwd_student", "avg_at_k", "+"),
  Claim(
    "D2", "direction", "reverse KL lowers entropy", "rev_student", "fwd_student", "entropy", "-"
  ),
  Claim(
    "P1", "prefix", "student prefixes gain Avg@k", "rev_student", "rev_teacher", "avg_at_k", "+"
  ),
  Claim(
    "H1", "horizon", "long horizon gains Avg@k", "rev_student", "rev_student_short", "avg_at_k", "+"
  ),
  Claim(
    "H2",
    "horizon",
    "long horizon lowers entropy (less stable)",
    "rev_student",
    "rev_student_short",
    "entropy",
    "-",
  ),
  Claim(
    "M1", "mixing vs collapse", "α = 0.5 keeps entropy up", "mix_a50", "rev_student", "entropy", "+"
  ),
  Claim(
    "M2",
    "mixing vs inflation",
    "α = 0.5 keeps length down",
    "mix_a50",
    "rev_student",
    "length",
    "-",
  ),
  Claim("C1", "curriculum", "curriculum gains Avg@k", "curriculum", "rev_student", "avg_at_k", "+"),
  Claim(
    "C2", "curriculum", "curriculum shortens responses", "curriculum", "rev_student", "length", "-"
  ),
  Claim(
    "H3",
    "horizon",
    "long horizon inflates length",
    "rev_student",
    "rev_student_short",
    "length",
    "+",
    "secondary",
  ),
  Claim(
    "C3",
    "curriculum",
    "curriculum gains Pass@k",
    "curriculum",
    "rev_student",
    "pass_at_k",
    "+",
    "secondary",
  ),
  Claim(
    "M3",
    "mixing vs collapse",
    "α = 0.5 gains Avg@k (mixing costs no accuracy)",
    "mix_a50",
    "rev_student",
    "avg_at_k",
    "+",
    "secondary",
  ),
  Claim(
    "A1",
    "adaptive α",
    "entropy-adaptive α keeps entropy up",
    "mix_adaptive",
    "rev_student",
    "entropy",
    "+",
    "secondary",
  ),
  Claim(
    "A2",
    "adaptive α",
    "entropy-adaptive α keeps length down",
    "mix_adaptive",
    "rev_student",
    "length",
    "-",
    "secondary",
  ),
)
# The paper's six abstract claims, each the conjunction of its primary tests.
GROUPS = (
  "direction",
  "prefix",
  "horizon",
  "mixing vs collapse",
  "mixing vs inflation",
  "curriculum",
)


@dataclasses.dataclass(frozen=True)
class RLClaim:
  """kind 'gain': a's RL gain (last evaluation - step 0, per seed) minus b's; kind
  'final': a's value after RL minus b's. Seeds matched by index; `metric` a FIELDS key."""

  id: str
  text: str
  a: str
  b: str
  metric: str
  expected: str
  kind: str = "gain"


RL_CLAIMS = (
  RLClaim(
    "R1",
    "RL gains more from forward than from reverse KL",
    "fwd_student",
    "rev_student",
    "avg_at_k",
    "+",
  ),
  RLClaim(
    "R2",
    "RL gains more from α = 0.5 than from reverse KL",
    "mix_a50",
    "rev_student",
    "avg_at_k",
    "+",
  ),
  RLClaim(
    "R3",
    "after RL, the reverse-KL init stays above the warm start",
    "rev_student",
    WARM_START,
    "avg_at_k",
    "+",
    "final",
  ),
  RLClaim(
    "R4",
    "after RL, the forward-KL init stays above the warm start",
    "fwd_student",
    WARM_START,
    "avg_at_k",
    "+",
    "final",
  ),
)
RL_STEPS = 100
RL_EVAL_EVERY = 25


def arm(name: str) -> Arm:
  for a in ARMS:
    if a.name == name:
      return a
  raise KeyError(f"no arm {name!r} in the plan; arms: {[a.name for a in ARMS]}")


def eval_steps(steps: int = STEPS) -> tuple[int, ...]:
  """The declared evaluation points of a trajectory of `steps` steps."""
  return tuple(sorted({round(f * steps) for f in EVAL_FRACTIONS}))


def families() -> dict[str, list[Claim]]:
  out: dict[str, list[Claim]] = {}
  for c in CLAIMS:
    out.setdefault(c.family, []).append(c)
  return out
