"""Pass@k / Avg@k against brute force, and math-answer grading edge cases."""

import itertools
import threading

import numpy as np
import pytest

from dkd_jax.evals import math_eval as me


def _brute_pass_at_k(n, c, k):
  """Fraction of k-subsets of n samples (c correct) holding a correct one."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        assert me.pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (
          n,
          c,
          k,
        )


def test_pass_at_k_large_n_is_stable():
  # C(1000, 500) overflows a float; the product form must not.
  value = me.pass_at_k(1000, 3, 500)
  assert value == pytest.approx(1 - (500 * 499 * 498) / (1000 * 999 * 998))
  assert me.pass_at_k(1000, 0, 500) == 0.0
  assert me.pass_at_k(1000, 1000, 1) == 1.0


@pytest.mark.parametrize(
  "args,name",
  [
    ((5, 2, 6), "k"),
    ((5, 2, 0), "k"),
    ((5, 6, 1), "c"),
    ((5, -1, 1), "c"),
    ((5, 2, 1.5), "k"),
    ((5.0, 2, 1), "n"),
  ],
)
def test_pass_at_k_errors_name_the_argument(args, name):
  with pytest.raises(ValueError, match=rf"^{name} "):
    me.pass_at_k(*args)


def test_avg_and_table():
  correct = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
  assert me.avg_at_k(correct) == pytest.approx(6 / 12)
  table = me.pass_at_k_table(np.array(correct, dtype=bool))
  assert sorted(table) == [1, 2, 3, 4]
  for k, v in table.items():
    want = np.mean([_brute_pass_at_k(4, c, k) for c in (2, 0, 4)])
    assert v == pytest.approx(want)
  # Pass@1 is Avg@k by definition.
  assert table[1] == pytest.approx(me.avg_at_k(correct))


@pytest.mark.parametrize("bad", [[], [[]], [1, 0], [[1, 0], [1]]])
def test_matrix_shape_errors(bad):
  with pytest.raises(ValueError, match="correct"):
    me.pass_at_k_table(bad)


@pytest.mark.parametrize(
  "text,want",
  [
    ("Step 1 ... 12 eggs.\n#### 3,000", "3,000"),
    ("#### 5\nlater text\n#### 18 dollars", "18"),
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{x^{2}+\frac{1}{2}}", r"x^{2}+\frac{1}{2}"),
    (r"\boxed{3} wait, \boxed{\frac{1}{", None),  # truncated last box
    ("Therefore the answer is 42. Done", "42"),
    ("we get 7, then 9.5 more", "9.5"),
    ("no digits here", None),
    ("", None),
    (None, None),
    (r"\boxed{}", None),
  ],
)
def test_extract_answer(text, want):
  assert me.extract_answer(text) == want


@pytest.mark.parametrize(
  "pred,gold",
  [
    ("1/2", "0.5"),
    ("0.5", "1/2"),
    ("3,000", "3000"),
    (r"\frac{1}{2}", "0.5"),
    (r"The answer is $\boxed{\dfrac{1}{2}}$.", "0.5"),
    ("Total: 1000 + 2000.\n#### 3,000", "3000"),
    ("x(x+2)", "x^2+2x"),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2"),
    ("5", "So he has\n#### 5"),
  ],
)
def test_equivalent_answers_accepted(pred, gold):
  g = me.grade(pred, gold)
  assert g.correct and g.reason == me.CORRECT, g
  assert me.verify(pred, gold)


@pytest.mark.parametrize(
  "pred,gold",
  [
    ("72", "73"),
    (r"\boxed{0.51}", "1/2"),
    ("#### 2999", "3,000"),
    ("x(x+1)", "x^2+2x"),
  ],
)
def test_wrong_answers_rejected(pred, gold):
  g = me.grade(pred, gold)
  assert not g.correct and g.reason == me.MISMATCH, g


@pytest.mark.parametrize(
  "pred,reason",
  [
    (None, me.NO_ANSWER),
    ("", me.NO_ANSWER),
    ("   ", me.NO_ANSWER),
    ("I do not know", me.NO_ANSWER),
    (r"\boxed{\frac{1}{", me.NO_ANSWER),
    ("The answer is banana.", me.UNPARSEABLE),
  ],
)
def test_unreadable_answers_are_wrong_with_reason(pred, reason):
  g = me.grade(pred, "5")
  assert g == me.Grade(False, g.extracted, reason)


def test_bad_gold_is_reported_not_raised():
  assert me.grade("5", "").reason == me.BAD_GOLD
  assert me.grade("5", "no number").reason == me.BAD_GOLD


def test_timeout_and_errors_are_grades(monkeypatch):
  def boom(*a, **k):
    raise RuntimeError("sympy exploded")

  monkeypatch.setattr(me.math_verify, "verify", boom)
  assert me.grade("1", "1").reason == "error:RuntimeError"

  release = threading.Event()
  monkeypatch.setattr(me.math_verify, "verify", lambda *a, **k: release.wait(5))
  g = me.grade("1", "1", timeout_s=0.05)
  release.set()
  assert g == me.Grade(False, "1", me.TIMEOUT)


def test_grade_from_worker_thread():
  # math-verify's own signal-based timeout would fail off the main thread.
  out = []

  def work():
    out.append(me.grade(r"\boxed{\frac{1}{2}}", "0.5"))
    out.append(me.grade("3,000", "3000", timeout_s=None))
    out.append(me.grade("7", "8"))

  t = threading.Thread(target=work)
  t.start()
  t.join(30)
  assert [g.reason for g in out] == [me.CORRECT, me.CORRECT, me.MISMATCH]


def test_grade_matrix_feeds_pass_at_k():
  grades = me.grade_matrix([["#### 4", "#### 5"], ["1/2", None]], ["4", "0.5"])
  correct = [[g.correct for g in row] for row in grades]
  assert correct == [[True, False], [True, False]]
  assert me.pass_at_k_table(correct) == {1: 0.5, 2: 1.0}
  with pytest.raises(ValueError, match="golds"):
    me.grade_matrix([["1"]], ["1", "2"])
