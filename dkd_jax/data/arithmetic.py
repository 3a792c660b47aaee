"""Built-in synthetic task: integer arithmetic with a worked chain of thought.

Small enough that a tiny model learns it on CPU in a minute or two, yet it has
what distillation experiments need: verifiable answers and responses whose
length varies with the number of operands. A problem and its solution:

    question: "23+7*4-5="
    solution: "7*4=28\\n23+28=51\\n51-5=46\\n#### 46"

Multiplications are reduced first (left to right), then additions and
subtractions left to right, one line per operation. The final line uses the
GSM8K `#### N` format so one answer extractor serves both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dkd_jax.data.sources import Record
from dkd_jax.data.sources import extract_hash_answer


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
  """Difficulty knobs; the defaults give 2-5 operands, solutions of ~15-60 chars."""

  min_operands: int = 2
  max_operands: int = 5
  max_digits: int = 2  # operands of + and - have 1..max_digits digits
  mul_digits: int = 1  # operands next to '*' are kept small (1..mul_digits)
  ops: str = "+-*"

  def __post_init__(self):
    if not 2 <= self.min_operands <= self.max_operands:
      raise ValueError(f"need 2 <= min_operands <= max_operands, got {self}")
    if self.max_digits < 1 or self.mul_digits < 1:
      raise ValueError(f"digit counts must be >= 1, got {self}")
    if not self.ops or set(self.ops) - set("+-*"):
      raise ValueError(f"ops must be a non-empty subset of '+-*', got {self.ops!r}")


def _random_int(rng: np.random.Generator, digits: int) -> int:
  # Pick the digit count first so short and long numbers are equally common.
  n = int(rng.integers(1, digits + 1))
  low = 0 if n == 1 else 10 ** (n - 1)
  return int(rng.integers(low, 10**n))


def _apply(a: int, op: str, b: int) -> int:
  return a * b if op == "*" else a + b if op == "+" else a - b


def solve(operands: Sequence[int], ops: Sequence[str]) -> tuple[list[str], int]:
  """The worked steps ("a*b=c" lines) and the value, with '*' before '+'/'-'."""
  nums, rest_ops, steps = list(operands), list(ops), []
  # Pass 1: fold each '*' into its left neighbour.
  i = 0
  while i < len(rest_ops):
    if rest_ops[i] == "*":
      value = nums[i] * nums[i + 1]
      steps.append(f"{nums[i]}*{nums[i + 1]}={value}")
      nums[i : i + 2] = [value]
      del rest_ops[i]
    else:
      i += 1
  # Pass 2: additions and subtractions left to right.
  value = nums[0]
  for op, b in zip(rest_ops, nums[1:]):
    new = _apply(value, op, b)
    steps.append(f"{value}{op}{b}={new}")
    value = new
  return steps, value


def make_problem(seed: int, index: int, config: ArithmeticConfig = ArithmeticConfig()) -> Record:
  """Problem `index` of the stream for `seed`; independent of how many are drawn."""
  rng = np.random.default_rng([seed, index])
  n = int(rng.integers(config.min_operands, config.max_operands + 1))
  ops = [config.ops[int(rng.integers(len(config.ops)))] for _ in range(n - 1)]
  operands = []
  for j in range(n):
    next_to_mul = (j > 0 and ops[j - 1] == "*") or (j < n - 1 and ops[j] == "*")
    operands.append(_random_int(rng, config.mul_digits if next_to_mul else config.max_digits))
  question = "".join(f"{a}{op}" for a, op in zip(operands, ops)) + f"{operands[-1]}="
  steps, value = solve(operands, ops)
  solution = "\n".join(steps + [f"#### {value}"])
  return {
    "id": f"arith-{seed}-{index}",
    "question": question,
    "answer": str(value),
    "solution": solution,
  }


def make_records(
  num: int, seed: int, config: ArithmeticConfig = ArithmeticConfig(), start: int = 0
) -> list[Record]:
  """`num` problems [start, start+num) of the stream for `seed`."""
  return [make_problem(seed, i, config) for i in range(start, start + num)]


def score(response_text: str, answer: str) -> bool:
  """True iff the response's final `#### N` line equals the integer answer."""
  got = extract_hash_answer(response_text)
  if got is None:
    return False
  try:
    return int(got) == int(answer)
  except ValueError:
    return False


class CharTokenizer:
  """One id per character over a fixed ~30-symbol vocab (implements `Tokenizer`).

  Prompts are rendered as the question and a newline, e.g. "23+7*4-5=\\n"; the
  response (solution) follows. Characters outside the vocab raise ValueError:
  the tiny task never needs them, and silently dropping text would corrupt data.
  """

  SPECIALS = ("<pad>", "<bos>", "<eos>")
  CHARS = "0123456789+-*/=()., \n#:?QA"
  # A HF chat template giving the text the model was trained on: BOS (the pipeline
  # prepends it), each user turn followed by a newline (`render_prompt`), each
  # assistant turn followed by EOS. '\n' is an expression because jinja's trim_blocks
  # (transformers renders with it) drops a literal newline after a block tag.
  CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
  )

  def __init__(self):
    self._tokens = list(self.SPECIALS) + list(self.CHARS)
    self._ids = {c: i for i, c in enumerate(self._tokens) if c not in self.SPECIALS}
    self.vocab_size = len(self._tokens)
    self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
    self.chat_template = self.CHAT_TEMPLATE

  def encode(self, text: str) -> list[int]:
    try:
      return [self._ids[c] for c in text]
    except KeyError as e:
      raise ValueError(
        f"CharTokenizer: character {e.args[0]!r} is not in the vocab "
        f"{self.CHARS!r} (text starts {text[:40]!r})"
      ) from None

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self._tokens[int(i)] for i in ids)

  def render_prompt(self, question: str) -> str:
    return question + "\n"

  def tokens(self) -> list[str]:
    return list(self._tokens)
