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


# ------------------------------------------------------------- seed-level statistics ---


def test_t_tail_matches_tables_and_scipy():
  # Known values: the 97.5% quantiles of Student's t (two-sided 95% cutoffs).
  for df, cutoff in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622)):
    assert stats.t_two_sided_p(cutoff, df) == pytest.approx(0.05, abs=2e-5)
    assert stats.t_critical(df) == pytest.approx(cutoff, abs=1e-4)
  assert stats.t_two_sided_p(0.0, 3) == 1.0
  assert stats.t_two_sided_p(float("inf"), 3) == 0.0
  sp = pytest.importorskip("scipy.stats")
  for df in range(1, 25):
    for t in (0.1, 0.7, 1.51, 2.0, 4.04, 9.0, 40.0):
      assert stats.t_two_sided_p(t, df) == pytest.approx(2 * sp.t.sf(t, df), abs=1e-12)
  with pytest.raises(ValueError, match="df"):
    stats.t_central(1.0, 0)


def test_paired_t_test_on_the_issues_numbers():
  # Issue 22: mixing -> length down, seeds -0.5, -13.4, -3.7: t = -1.51 on 2 df, not
  # significant although every seed is on one side.
  out = stats.paired_t_test([-0.5, -13.4, -3.7])
  assert out["t"] == pytest.approx(-1.5127, abs=1e-4) and out["df"] == 2
  assert 0.26 < out["p"] < 0.28 and not out["tie"]
  lo, hi = out["ci"]
  assert lo < 0 < hi
  # Hand-computed: d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df 2.
  out = stats.paired_t_test([1.0, 2.0, 3.0])
  assert out["t"] == pytest.approx(2 * np.sqrt(3)) and out["sd"] == pytest.approx(1.0)
  assert out["p"] == pytest.approx(1 - 2 * np.sqrt(3) / np.sqrt(12 + 2), abs=1e-12)  # df 2
  sp = pytest.importorskip("scipy.stats")
  d = np.array([0.013, -0.002, 0.021, 0.008, 0.011])
  ref = sp.ttest_1samp(d, 0.0)
  out = stats.paired_t_test(d)
  assert out["t"] == pytest.approx(ref.statistic) and out["p"] == pytest.approx(ref.pvalue)


def test_exact_ties_and_constant_differences():
  tie = stats.paired_t_test([0.0, 0.0, 0.0, 0.0])
  assert tie["tie"] and tie["p"] == 1.0
  same = stats.paired_t_test([0.2, 0.2, 0.2, 0.2])  # no spread, not zero: certain
  assert not same["tie"] and same["p"] == 0.0 and same["t"] == float("inf")
  with pytest.raises(ValueError, match=">= 2"):
    stats.paired_t_test([0.1])


def test_holm_matches_hand_computed_values():
  # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
  assert stats.holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
  # monotone step-down: a later smaller product is lifted to the running max
  assert stats.holm([0.04, 0.011]) == pytest.approx([0.04, 0.022])
  assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 caps at 1
  assert stats.holm([]) == []
  with pytest.raises(ValueError):
    stats.holm([0.1, 1.5])


def test_holm_against_statsmodels_if_installed():
  mt = pytest.importorskip("statsmodels.stats.multitest")
  p = np.random.default_rng(3).random(9) ** 3
  ref = mt.multipletests(p, method="holm")[1]
  assert stats.holm(p) == pytest.approx(list(ref))


def test_t_interval_includes_seed_variance():
  # The issue's rev_teacher seeds: a problem-only interval was [0.007, 0.010].
  mean, lo, hi = stats.t_interval([0.0002, 0.0011, 0.0231])
  assert mean == pytest.approx(0.008133, abs=1e-6)
  assert lo < 0.0 and hi > 0.03  # seed variance dominates
  half = 4.302653 * np.std([0.0002, 0.0011, 0.0231], ddof=1) / np.sqrt(3)
  assert hi - mean == pytest.approx(half, rel=1e-5)
  m1, lo1, hi1 = stats.t_interval([0.3])
  assert m1 == 0.3 and np.isnan(lo1) and np.isnan(hi1)


def test_hierarchical_bootstrap_widens_with_seed_spread():
  rng = np.random.default_rng(4)
  P = 400
  base = rng.random(P)
  tight = np.stack([base + rng.normal(0, 0.01, P) for _ in range(4)])
  spread = np.stack([base + s for s in (-0.1, 0.0, 0.05, 0.15)])
  _, lo_t, hi_t = stats.hierarchical_bootstrap(tight, n_boot=500)
  m, lo_s, hi_s = stats.hierarchical_bootstrap(spread, n_boot=500)
  assert lo_s < m < hi_s and (hi_s - lo_s) > 2 * (hi_t - lo_t)


def test_claim_verdicts():
  up = stats.paired_t_test([0.1, 0.12, 0.09, 0.11])
  assert stats.claim_verdict(up, "+", 0.001) == "appeared"
  assert stats.claim_verdict(up, "-", 0.001) == "did not"
  assert stats.claim_verdict(up, "+", 0.2) == "inconclusive"
  tie = stats.paired_t_test([0.0] * 4)
  assert stats.claim_verdict(tie, "+", 1.0).startswith("not tested (the arms are identical")
  assert (
    stats.claim_verdict(up, "+", 0.001, untested="the curriculum never advanced")
    == "not tested (the curriculum never advanced)"
  )
  assert stats.claim_verdict(None, "+", None).startswith("not tested")
