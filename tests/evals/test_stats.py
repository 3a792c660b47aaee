"""Bootstrap intervals over problems and paired differences."""

import numpy as np
import pytest

from dkd_jax.evals import stats


def test_interval_covers_the_mean_and_shrinks_with_more_problems():
  rng = np.random.default_rng(0)
  small = rng.random(100) < 0.3
  large = rng.random(10000) < 0.3
  lo, hi = stats.bootstrap_ci(small)
  assert lo <= small.mean() <= hi
  lo2, hi2 = stats.bootstrap_ci(large)
  assert lo2 <= 0.3 <= hi2 and (hi2 - lo2) < (hi - lo) / 5


def test_interval_has_nominal_coverage():
  rng = np.random.default_rng(1)
  hits = 0
  for _ in range(200):
    x = rng.random(300) < 0.4
    lo, hi = stats.bootstrap_ci(x, n_boot=500, seed=int(rng.integers(1 << 30)))
    hits += lo <= 0.4 <= hi
  assert 0.88 <= hits / 200 <= 0.99, hits


def test_paired_difference_sees_what_unpaired_noise_hides():
  rng = np.random.default_rng(2)
  difficulty = rng.random(1000)
  a = difficulty + 0.02  # a is better by 0.02 on every problem
  b = difficulty
  out = stats.paired_diff(a, b)
  assert out["verdict"] == "a>b" and out["mean"] == pytest.approx(0.02)
  same = stats.paired_diff(b + rng.normal(0, 0.1, 1000), b)
  assert same["verdict"] in ("inconclusive", "a>b", "a<b")
  with pytest.raises(ValueError, match="same problems"):
    stats.paired_diff(a[:10], b)


def test_per_problem_pass_at_k():
  c = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
  np.testing.assert_allclose(stats.per_problem_pass_at_k(c, 1), [0.25, 0.0, 1.0])
  np.testing.assert_allclose(stats.per_problem_pass_at_k(c, 4), [1.0, 0.0, 1.0])
