"""Intervals for evaluation figures: bootstrap over problems, paired differences.

Every figure of a run is a mean over problems of a per-problem value (its fraction of
correct samples, its unbiased Pass@k, its mean response length, ...). Its 95% interval
resamples problems with replacement (percentile bootstrap); two runs evaluated on the
same problems are compared by resampling the per-problem differences, which removes
the between-problem variance that an unpaired comparison would carry.
"""

from __future__ import annotations

import numpy as np

from dkd_jax.evals import math_eval

N_BOOT = 2000


def bootstrap_ci(
  values_P, *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of per-problem values."""
  v = np.asarray(values_P, np.float64)
  if v.ndim != 1 or len(v) == 0:
    raise ValueError(f"bootstrap_ci needs a non-empty 1-D array, got shape {v.shape}")
  idx_BxP = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
  means_B = v[idx_BxP].mean(axis=1)
  a = (1.0 - level) / 2
  return float(np.quantile(means_B, a)), float(np.quantile(means_B, 1 - a))


def paired_diff(a_P, b_P, **kw) -> dict:
  """mean(a - b) over the same problems, with its bootstrap interval and a verdict:
  'a>b' or 'a<b' when the interval excludes 0, else 'inconclusive'."""
  a, b = np.asarray(a_P, np.float64), np.asarray(b_P, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired_diff needs the same problems: shapes {a.shape} vs {b.shape}")
  d = a - b
  lo, hi = bootstrap_ci(d, **kw)
  verdict = "a>b" if lo > 0 else "a<b" if hi < 0 else "inconclusive"
  return {"mean": float(d.mean()), "ci95": [lo, hi], "verdict": verdict}


def per_problem_pass_at_k(correct_PxN, k: int) -> np.ndarray:
  """The unbiased Pass@k of each problem (n samples, c correct)."""
  c = np.asarray(correct_PxN, bool)
  n = c.shape[1]
  return np.array([math_eval.pass_at_k(n, int(row.sum()), k) for row in c])
