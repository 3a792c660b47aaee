"""Built-in task with a length dimension: arithmetic chains with self-checks and redos.

A problem is a chain of 2-6 operations (by default) on one-digit operands ('*' binds first, as in
`arithmetic.solve`). A worked trace writes one line per operation and MAY add a check
line (`?` + the same operation recomputed); when a check disagrees with the line above
it, the operation is redone and checked again:

    question: "7+3*4-5=\\n"
    trace:    "3*4=12\\n?3*4=12\\n7+12=18\\n?7+12=19\\n7+12=19\\n4+19... "

Response length is a property of the policy, not of the problem: the same problem can
be answered in ~25 tokens (no checks) or ~250 (check everything, redo often), so a
student can inflate its length, loop on checks and redos, collapse in entropy or learn
to be concise. The gold generator (`make_trace`) is itself stochastic and imperfect: a
line is wrong with probability `error_prob`, a check is written with probability
`check_prob`, and an unchecked error carries into the answer. A teacher trained on these
traces inherits both habits; its own rollouts are the teacher prefixes of the study.

Answers use the GSM8K `#### N` line, so `arithmetic.score` grades both tasks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dkd_jax.data import arithmetic
from dkd_jax.data.sources import Record


@dataclasses.dataclass(frozen=True)
class ChainConfig:
  """Problem shape and the gold trace's habits."""

  min_ops: int = 2
  max_ops: int = 6
  check_prob: float = 0.5  # chance of a check line after a line
  error_prob: float = 0.1  # chance a written result is off by 1-3
  max_redos: int = 3  # redos per operation before moving on

  def __post_init__(self):
    if not 1 <= self.min_ops <= self.max_ops:
      raise ValueError(f"need 1 <= min_ops <= max_ops, got {self}")
    for name in ("check_prob", "error_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"data.chain.{name}={getattr(self, name)} must be in [0, 1]")
    if self.max_redos < 0:
      raise ValueError(f"data.chain.max_redos={self.max_redos} must be >= 0")


def make_question(data_seed: int, index: int, cfg: ChainConfig) -> tuple[list[int], list[str]]:
  """(operands, ops) of problem `index`: a pure function of (data_seed, index)."""
  rng = np.random.default_rng([data_seed, index, 0])
  n_ops = int(rng.integers(cfg.min_ops, cfg.max_ops + 1))
  ops = [str(o) for o in rng.choice(list("+-*"), size=n_ops, p=[0.4, 0.4, 0.2])]
  operands = [int(v) for v in rng.integers(0, 10, size=n_ops + 1)]
  return operands, ops


def _written(rng, value: int, cfg: ChainConfig) -> int:
  if rng.random() < cfg.error_prob:
    return value + int(rng.choice([-3, -2, -1, 1, 2, 3]))
  return value


def make_trace(
  operands: list[int], ops: list[str], cfg: ChainConfig, rng: np.random.Generator
) -> tuple[str, int]:
  """(trace text, its final answer): one sample of the imperfect gold policy. Solving
  order is `arithmetic.solve`'s; every later line uses the values as written, so an
  unchecked error carries into the answer."""
  nums, rest, lines = list(operands), list(ops), []
  i = 0
  while i < len(rest):  # '*' first, left to right
    if rest[i] == "*":
      nums[i : i + 2] = [_worked(lines, nums[i], "*", nums[i + 1], cfg, rng)]
      del rest[i]
    else:
      i += 1
  value = nums[0]
  for op, b in zip(rest, nums[1:]):
    value = _worked(lines, value, op, b, cfg, rng)
  return "\n".join(lines + [f"#### {value}"]), value


def _worked(lines: list[str], a: int, op: str, b: int, cfg: ChainConfig, rng) -> int:
  """Writes one operation (+ checks, + redos) into `lines`; returns the kept value."""
  true = arithmetic._apply(a, op, b)
  v = _written(rng, true, cfg)
  lines.append(f"{a}{op}{b}={v}")
  for _ in range(cfg.max_redos + 1):
    if rng.random() >= cfg.check_prob:
      break
    w = _written(rng, true, cfg)
    lines.append(f"?{a}{op}{b}={w}")
    if w == v:
      break
    v = _written(rng, true, cfg)  # the check disagreed: redo the operation
    lines.append(f"{a}{op}{b}={v}")
  return v


def question_text(operands: list[int], ops: list[str]) -> str:
  return "".join(f"{a}{op}" for a, op in zip(operands, ops)) + f"{operands[-1]}="


def make_problem(data_seed: int, index: int, cfg: ChainConfig) -> Record:
  """Problem `index` with one gold trace; the answer is the true value."""
  operands, ops = make_question(data_seed, index, cfg)
  trace, _ = make_trace(operands, ops, cfg, np.random.default_rng([data_seed, index, 1]))
  return {
    "id": f"chain-{data_seed}-{index}",
    "question": question_text(operands, ops),
    "answer": str(arithmetic.solve(operands, ops)[1]),
    "solution": trace,
  }


def make_splits(
  num_train: int, num_eval: int, cfg: ChainConfig, data_seed: int = 0
) -> tuple[list[Record], list[Record]]:
  """(train, held-out) problems, disjoint in content: held-out problems come from
  their own stream and any question that also occurs in training is skipped."""
  train = [make_problem(data_seed, i, cfg) for i in range(num_train)]
  seen = {r["question"] for r in train}
  held, i = [], 0
  while len(held) < num_eval:
    r = make_problem(data_seed + 1, i, cfg)
    i += 1
    if r["question"] not in seen:
      seen.add(r["question"])
      held.append(r)
    if i > 50 * (num_eval + 1):
      raise ValueError(
        f"cannot draw {num_eval} held-out chain problems disjoint from "
        f"{num_train} training ones; widen data.chain.min_ops/max_ops"
      )
  return train, held
