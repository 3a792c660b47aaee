"""Statistics of evaluation figures: problem-level intervals and seed-level tests.

Every figure of a run is a mean over problems of a per-problem value (its fraction of
correct samples, its unbiased Pass@k, its mean response length, ...). Within one run its
95% interval resamples problems (`bootstrap_ci`, percentile bootstrap). Across runs the
SEED is the unit of replication (DESIGN §8): an arm's figure is the mean of its seeds'
figures with an interval that includes seed variance (`t_interval` over seed means, or
`hierarchical_bootstrap`: seeds, then problems), and two arms are compared by a paired
t-test over the per-seed differences (`paired_t_test`: exact Student-t tail for integer
degrees of freedom, no scipy), Holm-corrected across the declared claims (`holm`).
`claim_verdict` turns a test into appeared / did not / inconclusive / not tested.
"""

from __future__ import annotations

import math

import numpy as np

from dkd_jax.evals import math_eval

N_BOOT = 2000
LEVEL = 0.05  # the declared test level (docs/results/PREREGISTRATION.md)


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
  """mean(a - b) over the same problems of ONE pair of runs, with its bootstrap interval
  over problems (within-run noise only: a verdict across seeds is `paired_t_test`'s)."""
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


# ------------------------------------------------------------------ Student t ---


def t_central(t: float, df: int) -> float:
  """P(-t < T < t) for Student's T with integer `df` >= 1 (Abramowitz & Stegun 26.7.3-4:
  a finite sum in cos(θ), θ = atan(t / sqrt(df)); exact, no special functions)."""
  if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
    raise ValueError(f"df={df!r}; allowed: an int >= 1")
  t = abs(float(t))
  if math.isinf(t):
    return 1.0
  theta = math.atan(t / math.sqrt(df))
  s, c2 = math.sin(theta), math.cos(theta) ** 2
  if df % 2 == 0:  # sin θ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...), df/2 terms
    term = total = 1.0
    for j in range(1, df // 2):
      term *= c2 * (2 * j - 1) / (2 * j)
      total += term
    return min(1.0, s * total)
  total = theta  # 2/π (θ + sin θ cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...))
  if df > 1:
    term = acc = 1.0
    for j in range(1, (df - 1) // 2):
      term *= c2 * (2 * j) / (2 * j + 1)
      acc += term
    total += s * math.cos(theta) * acc
  return min(1.0, 2.0 / math.pi * total)


def t_two_sided_p(t: float, df: int) -> float:
  """Two-sided p-value P(|T| >= |t|)."""
  return max(0.0, 1.0 - t_central(t, df))


def t_critical(df: int, level: float = 0.95) -> float:
  """c with P(|T| < c) = level (bisection on the exact central probability)."""
  if not 0.0 < level < 1.0:
    raise ValueError(f"level={level}; allowed: in (0, 1)")
  lo, hi = 0.0, 1.0
  while t_central(hi, df) < level:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if t_central(mid, df) < level else (lo, mid)
  return 0.5 * (lo + hi)


def t_interval(values_S, level: float = 0.95) -> tuple[float, float, float]:
  """(mean, lo, hi): the t-interval of the mean of per-seed values (df = S - 1); with one
  seed the interval is (nan, nan): one seed says nothing about seed variance."""
  v = np.asarray(values_S, np.float64)
  if v.ndim != 1 or len(v) == 0:
    raise ValueError(f"t_interval needs a non-empty 1-D array, got shape {v.shape}")
  mean = float(v.mean())
  if len(v) < 2:
    return mean, math.nan, math.nan
  half = t_critical(len(v) - 1, level) * float(v.std(ddof=1)) / math.sqrt(len(v))
  return mean, mean - half, mean + half


def hierarchical_bootstrap(
  values_SxP, *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
  """(mean, lo, hi) of the seed-and-problem mean, resampling seeds with replacement, then
  problems with replacement (one set of problem indices per resample: every seed was
  evaluated on the same problems, so problems are crossed with seeds, not nested)."""
  v = np.asarray(values_SxP, np.float64)
  if v.ndim != 2 or 0 in v.shape:
    raise ValueError(f"hierarchical_bootstrap needs a non-empty [S, P] array, got {v.shape}")
  S, P = v.shape
  rng = np.random.default_rng(seed)
  seeds_BxS = rng.integers(0, S, (n_boot, S))
  probs_BxP = rng.integers(0, P, (n_boot, P))
  means_B = np.array([v[s][:, p].mean() for s, p in zip(seeds_BxS, probs_BxP)])
  a = (1.0 - level) / 2
  return float(v.mean()), float(np.quantile(means_B, a)), float(np.quantile(means_B, 1 - a))


def paired_t_test(diffs_S, level: float = 0.95) -> dict:
  """The seed-level paired t-test of H0: E[a - b] = 0 from per-seed differences (seeds
  matched by index): n, mean, sd, t, df, two-sided p, the t-interval of the mean
  difference, and `tie` (every difference exactly 0: the arms were identical, nothing
  was tested). Needs n >= 2."""
  d = np.asarray(diffs_S, np.float64)
  if d.ndim != 1 or len(d) < 2:
    raise ValueError(f"paired_t_test needs >= 2 per-seed differences, got {d.tolist()}")
  n, mean = len(d), float(d.mean())
  sd = float(d.std(ddof=1))
  tie = bool(np.all(d == 0.0))
  if sd == 0.0:
    t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
  else:
    t = mean / (sd / math.sqrt(n))
  p = 1.0 if tie else t_two_sided_p(t, n - 1)
  _, lo, hi = t_interval(d, level)
  return {"n": n, "mean": mean, "sd": sd, "t": t, "df": n - 1, "p": p, "ci": [lo, hi], "tie": tie}


def holm(pvalues) -> list[float]:
  """Holm-adjusted p-values (step-down; the family-wise error stays at the level):
  p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j)), returned in the input order."""
  p = np.asarray(pvalues, np.float64)
  if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
    raise ValueError(f"holm needs p-values in [0, 1], got {p.tolist()}")
  m = len(p)
  order = np.argsort(p, kind="stable")
  adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
  adj = np.maximum.accumulate(adj)
  out = np.empty(m)
  out[order] = adj
  return [float(x) for x in out]


def claim_verdict(
  test: dict | None, expected: str, p_holm: float | None, *, level: float = LEVEL, untested=None
) -> str:
  """The verdict of one declared claim (DESIGN §8):
  'not tested (<why>)' when `untested` names why (a mechanism that never engaged, a
  missing arm, fewer than 2 paired seeds) or the arms tied exactly on every seed;
  'appeared' when the Holm-adjusted p is below `level` and the mean difference has the
  expected sign ('+' or '-'); 'did not' when it is significant the other way;
  'inconclusive' otherwise."""
  if expected not in ("+", "-"):
    raise ValueError(f"expected={expected!r}; allowed: '+' or '-'")
  if untested:
    return f"not tested ({untested})"
  if test is None:
    return "not tested (no paired seeds)"
  if test["tie"]:
    return "not tested (the arms are identical on every seed)"
  if p_holm is None or p_holm >= level:
    return "inconclusive"
  return "appeared" if (test["mean"] > 0) == (expected == "+") else "did not"
