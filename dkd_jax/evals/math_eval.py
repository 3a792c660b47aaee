"""Evaluation math for DESIGN §7: Pass@k / Avg@k and math-answer grading.

Host-side Python only (no JAX): the eval loop draws n samples per problem,
grades each with `grade`, and reduces the [P, n] correctness matrix with
`avg_at_k` and `pass_at_k_table`.

Grading uses math-verify for numeric and symbolic equivalence. Its built-in
timeouts use SIGALRM, which only works on the main thread, so we always call it
with those timeouts disabled and impose our own wall-clock limit by running the
check in a daemon worker thread (a runaway sympy call is abandoned, not killed;
being a daemon it never blocks interpreter exit). Every failure mode -- no
answer, unparseable text, a bad gold, a timeout, an exception inside
math-verify -- is graded wrong with a reason code, never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Sequence

import math_verify
import numpy as np

# Reason codes carried by `Grade.reason` (stable strings, cheap to count).
CORRECT = "correct"
MISMATCH = "mismatch"  # both parsed, not equivalent
NO_ANSWER = "no_answer"  # None / empty / nothing extractable
UNPARSEABLE = "unparseable"  # an answer was found but math-verify read nothing
BAD_GOLD = "bad_gold"  # the reference itself is unreadable (data bug)
TIMEOUT = "timeout"  # parse+verify exceeded the wall-clock limit
ERROR = "error"  # math-verify raised; detail after a colon
REASONS = (CORRECT, MISMATCH, NO_ANSWER, UNPARSEABLE, BAD_GOLD, TIMEOUT, ERROR)

DEFAULT_TIMEOUT_S = 5.0


# ----------------------------------------------------------------- Pass@k ---

# We run math-verify with its signal timeouts off (they only work on the main
# thread) and enforce our own wall-clock limit, so its per-call warning is noise.
for _name in ("math_verify", "math_verify.parser", "math_verify.grader"):
  logging.getLogger(_name).setLevel(logging.ERROR)


def _check_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r}")
  return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased Pass@k from n samples of which c are correct.

  1 - C(n-c, k)/C(n, k), written as the product prod_{i=n-c+1}^{n} (1 - k/i)
  so no binomial coefficient (which overflows floats for n in the hundreds)
  is ever formed.
  """
  n, c, k = (_check_int("n", n), _check_int("c", c), _check_int("k", k))
  if k < 1:
    raise ValueError(f"k must be >= 1, got k={k}")
  if k > n:
    raise ValueError(f"k must be <= n, got k={k} > n={n}")
  if not 0 <= c <= n:
    raise ValueError(f"c must be in [0, n={n}], got c={c}")
  if n - c < k:  # every k-subset contains a correct sample
    return 1.0
  miss = 1.0
  for i in range(n - c + 1, n + 1):
    miss *= 1.0 - k / i
  return 1.0 - miss


def _as_matrix(correct) -> np.ndarray:
  """[P, n] bool matrix; rejects ragged or empty input instead of guessing."""
  try:
    arr = np.asarray(correct, dtype=bool)
  except ValueError as e:  # ragged nested lists
    raise ValueError(f"correct must be a rectangular [P, n] matrix: {e}") from e
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise ValueError(f"correct must be a non-empty [P, n] matrix, got shape {arr.shape}")
  return arr


def avg_at_k(correct_matrix) -> float:
  """Avg@k: mean correctness over all P*n samples."""
  return float(_as_matrix(correct_matrix).mean())


def pass_at_k_table(correct) -> dict[int, float]:
  """{k: mean over problems of pass_at_k(n, c_p, k)} for every k in 1..n."""
  arr = _as_matrix(correct)
  n = arr.shape[1]
  c_P = arr.sum(axis=1)
  return {k: float(np.mean([pass_at_k(n, int(c), k) for c in c_P])) for k in range(1, n + 1)}


# ------------------------------------------------------ answer extraction ---

_GSM8K_RE = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS_RE = re.compile(
  r"answer\s*(?:is|:|=)\s*:?\s*(.+?)\s*(?:\.\s|\.?$|\n)", re.IGNORECASE | re.DOTALL
)
# Signed integers/decimals with optional thousands commas, and simple a/b.
_WORD_RE = re.compile(r"[A-Za-z]{3,}")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


def _last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...}, matching braces (regex can't nest)."""
  starts = [m.end() for m in _BOXED_RE.finditer(text)]
  if not starts:
    return None
  depth = 1
  for i in range(starts[-1], len(text)):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
      return text[starts[-1] : i]
  # Unbalanced: the response was cut off mid-answer; an earlier box would be
  # an answer the model already revised, so report none.
  return ""


def _clean(answer: str) -> str | None:
  """Strip math delimiters, currency and trailing punctuation; '' -> None."""
  a = answer.strip()
  a = a.replace("\\$", "").strip("$ ").rstrip(".").strip()
  a = re.sub(r"^\\\(|\\\)$", "", a).strip()
  # "18 dollars" / "5 apples": keep the number, drop a trailing unit word.
  m = re.fullmatch(r"(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z .]*", a)
  if m:
    a = m.group(1)
  return a or None


def extract_answer(text: str | None) -> str | None:
  """The final answer of a model response, or None.

  Priority (first that matches wins):
    1. GSM8K: the last line of the form `#### N`.
    2. The last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; a last
       box left unclosed (truncated response) gives None.
    3. Fallback: the last "answer is X" / "answer: X" phrase (X up to the end
       of its sentence or line), else the last number in the text (integers,
       decimals, thousands commas, a/b). The fallback is a heuristic for
       responses that ignore the format; it can pick an intermediate number.
  """
  if not text or not text.strip():
    return None
  gsm = _GSM8K_RE.findall(text)
  if gsm:
    return _clean(gsm[-1])
  boxed = _last_boxed(text)
  if boxed is not None:  # '' (truncated box) cleans to None
    return _clean(boxed)
  phrases = _ANSWER_IS_RE.findall(text)
  if phrases:
    return _clean(phrases[-1])
  numbers = _NUMBER_RE.findall(text)
  return _clean(numbers[-1]) if numbers else None


def _looks_bare(text: str) -> bool:
  """True for a bare answer ('1/2', '\\frac{1}{2}', 'x^2+2x', '3,000').

  A bare answer is one short line with no English words once LaTeX commands
  are removed; it is graded whole, because the last-number fallback would
  turn '1/2' into '2'.
  """
  t = text.strip()
  if not t or "\n" in t or len(t) > 64 or "####" in t:
    return False
  return re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", "", t)) is None


def _answer_of(text: str | None) -> str | None:
  if text is None:
    return None
  text = str(text)
  if _looks_bare(text) and not _BOXED_RE.search(text):
    return _clean(text)
  return extract_answer(text)


# ----------------------------------------------------------------- grading ---


@dataclasses.dataclass(frozen=True)
class Grade:
  """One graded sample. reason is one of REASONS ('error' carries ':detail')."""

  correct: bool
  extracted: str | None
  reason: str


def _parse(answer: str) -> list:
  # `$...$` makes math-verify read the whole string as LaTeX: plain-expression
  # mode would read '2x+1' as 2 and '3\sqrt{2}' as 3.
  parsed = math_verify.parse(f"${answer}$", parsing_timeout=None)
  if not parsed:
    parsed = math_verify.parse(answer, parsing_timeout=None)
  return parsed


def _check(pred: str, gold: str) -> str:
  """Reason code for pred vs gold; may raise (the caller catches)."""
  gold_p = _parse(gold)
  if not gold_p:
    return BAD_GOLD
  pred_p = _parse(pred)
  if not pred_p:
    return UNPARSEABLE
  if math_verify.verify(gold_p, pred_p, timeout_seconds=None):
    return CORRECT
  # LaTeX mode reads 'banana' as the product b*a*n*a*n*a; a wrong answer made
  # of words is reported as unreadable rather than as a real mismatch.
  if _WORD_RE.search(re.sub(r"\\[A-Za-z]+", "", pred)):
    return UNPARSEABLE
  return MISMATCH


def _check_guarded(pred: str, gold: str) -> str:
  try:
    return _check(pred, gold)
  except Exception as e:  # math-verify/sympy failures are a wrong answer
    return f"{ERROR}:{type(e).__name__}"


def _run_with_timeout(pred: str, gold: str, timeout_s: float | None) -> str:
  if timeout_s is None:
    return _check_guarded(pred, gold)
  box: list[str] = []
  worker = threading.Thread(target=lambda: box.append(_check_guarded(pred, gold)), daemon=True)
  worker.start()
  worker.join(timeout_s)
  return box[0] if box else TIMEOUT


def grade(response: str | None, gold: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Grade:
  """Grade one response against a gold answer; never raises.

  response: a full model response (answer found by `extract_answer`) or a bare
    answer such as '1/2'. gold: a bare answer, or a text with `#### N` /
    `\\boxed{}` (e.g. a GSM8K solution). timeout_s: wall-clock limit on the
    math-verify call (None = unlimited, run inline). Safe from any thread.
  """
  pred = _answer_of(response)
  gold_answer = _answer_of(gold)
  if gold_answer is None:
    return Grade(False, pred, BAD_GOLD)
  if pred is None:
    return Grade(False, None, NO_ANSWER)
  reason = _run_with_timeout(pred, gold_answer, timeout_s)
  return Grade(reason == CORRECT, pred, reason)


def verify(
  pred_text_or_answer: str | None, gold: str, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> bool:
  """True iff the response's answer is equivalent to gold (see `grade`)."""
  return grade(pred_text_or_answer, gold, timeout_s).correct


def grade_matrix(
  responses_PxN: Sequence[Sequence[str | None]],
  golds_P: Sequence[str],
  timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> list[list[Grade]]:
  """Grade n responses for each of P problems; `.correct` feeds pass_at_k_table."""
  if len(responses_PxN) != len(golds_P):
    raise ValueError(f"responses has {len(responses_PxN)} problems but golds has {len(golds_P)}")
  return [[grade(r, g, timeout_s) for r in row] for row, g in zip(responses_PxN, golds_P)]
