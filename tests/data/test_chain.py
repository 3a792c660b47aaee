"""The chain task: length is up to the policy, held-out problems are disjoint from training."""

import numpy as np
import pytest

from dkd_jax.data import arithmetic
from dkd_jax.data import chain

CFG = chain.ChainConfig()


def test_problems_are_pure_functions_of_seed_and_index():
  assert chain.make_problem(0, 5, CFG) == chain.make_problem(0, 5, CFG)
  assert chain.make_problem(0, 5, CFG) != chain.make_problem(1, 5, CFG)


def test_held_out_set_is_disjoint_in_content_from_training():
  train, held = chain.make_splits(5000, 1000, CFG)
  assert len(held) == 1000
  questions = [r["question"] for r in held]
  assert len(set(questions)) == 1000
  assert not set(questions) & {r["question"] for r in train}


def test_error_free_traces_reach_the_true_answer():
  cfg = chain.ChainConfig(error_prob=0.0)
  for i in range(200):
    r = chain.make_problem(3, i, cfg)
    assert arithmetic.score(r["solution"], r["answer"]), r


def test_length_is_a_property_of_the_policy_not_the_problem():
  """One problem, three policies: never check, the default, always check and err often."""
  operands, ops = chain.make_question(0, 7, chain.ChainConfig(min_ops=6, max_ops=6))
  lens = {}
  for name, cfg in (
    ("concise", chain.ChainConfig(check_prob=0.0, error_prob=0.0)),
    ("default", CFG),
    ("checker", chain.ChainConfig(check_prob=1.0, error_prob=0.3)),
  ):
    rng = np.random.default_rng(0)
    lens[name] = np.mean([len(chain.make_trace(operands, ops, cfg, rng)[0]) for _ in range(50)])
  assert lens["concise"] < lens["default"] < lens["checker"]
  assert lens["checker"] > 2 * lens["concise"]


def test_gold_traces_span_short_to_long_and_are_imperfect():
  train, _ = chain.make_splits(3000, 10, CFG)
  lens = np.array([len(r["solution"]) + 1 for r in train])  # chars = tokens (+ EOS)
  p5, p95 = np.percentile(lens, [5, 95])
  assert p5 < 35 and p95 > 90 and lens.max() <= 256, (p5, p95, lens.max())
  acc = np.mean([arithmetic.score(r["solution"], r["answer"]) for r in train])
  assert 0.5 < acc < 0.95, acc
  tok = arithmetic.CharTokenizer()
  for r in train[:200]:  # the char tokenizer covers every trace
    tok.encode(tok.render_prompt(r["question"]) + r["solution"])


def test_checks_and_redos_follow_the_grammar():
  """A check recomputes the line above it; when it disagrees, a redo of the same
  operation follows at once."""
  cfg = chain.ChainConfig(check_prob=1.0, error_prob=0.5)
  disagreed = 0
  for i in range(100):
    lines = chain.make_problem(0, i, cfg)["solution"].split("\n")[:-1]
    for prev, line, nxt in zip(lines, lines[1:], lines[2:] + [""]):
      if line.startswith("?"):
        expr, value = line[1:].split("=")
        assert prev.lstrip("?").split("=")[0] == expr, (prev, line)
        if value != prev.split("=")[1]:
          disagreed += 1
          assert nxt.split("=")[0] == expr, (prev, line, nxt)
  assert disagreed > 20


@pytest.mark.parametrize(
  "field,value", [("min_ops", 0), ("check_prob", 1.5), ("error_prob", -0.1), ("max_redos", -1)]
)
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=field if "prob" in field or "redos" in field else "ops"):
    chain.ChainConfig(**{field: value})
