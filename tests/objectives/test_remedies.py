"""Remedy settings derived from a teacher reference (DESIGN §6): the teacher's own
rollouts pass every gate derived this way, and settings it would fail are refused."""

import numpy as np
import pytest

from dkd_jax.objectives import curriculum as cur
from dkd_jax.objectives import remedies

BATCH, WINDOW, STEPS = 16, 10, 300


def teacher_reference(n=512, cap=240, seed=0, p_long=0.0):
  """A teacher-like reference: chain-task lengths (p50 ~ 45, p95 ~ 80), per-token
  entropies low on most tokens and high on a few (its uncertain choices)."""
  rng = np.random.default_rng(seed)
  lens = np.clip(rng.gamma(6.0, 7.5, n).astype(int) + 5, 8, cap)
  lens = np.where(rng.random(n) < p_long, cap, lens)
  ents = tuple(
    np.where(rng.random(L) < 0.1, rng.uniform(0.8, 2.0, L), rng.uniform(0.0, 0.3, L)) for L in lens
  )
  return remedies.Reference(lens, lens >= cap, ents, cap)


def test_derived_settings_follow_the_rules():
  ref = teacher_reference()
  d = remedies.derive(ref, steps=STEPS, batch=BATCH, window=WINDOW, check_every=10)
  p50, p95 = np.percentile(ref.lengths, [50, 95])
  assert d["budget"] >= 2 * p95 and d["budget"] % 8 == 0 and d["budget"] - 2 * p95 < 8
  assert d["short_horizon"] == int(np.ceil(p50))
  c = d["curriculum"]
  assert c["lengths"] == [int(np.ceil(p50)), int(np.ceil(p95)), d["budget"]]
  # truncation allowed at a stage = the teacher's own there + the margin
  assert c["stage_max_truncation"][0] == pytest.approx(
    np.mean(ref.lengths > c["lengths"][0]) + remedies.TRUNC_MARGIN, abs=1e-4
  )
  assert 0 < c["floor_entropy"] < c["gate_entropy"] < d["teacher"]["batch_entropy_at_budget"]
  assert c["min_steps"] == STEPS // 4 and c["reference"] == "absolute"
  assert 0 < d["adaptive"]["target_entropy"] < d["teacher"]["batch_entropy_at_budget"]
  # a pure function of the reference
  assert d == remedies.derive(ref, steps=STEPS, batch=BATCH, window=WINDOW, check_every=10)


def test_the_teachers_own_rollouts_pass_every_derived_gate():
  ref = teacher_reference()
  d = remedies.derive(ref, steps=STEPS, batch=BATCH, window=WINDOW, check_every=10)
  assert remedies.check(ref, d, batch=BATCH) == []
  for seed in range(3):
    decisions, alphas = remedies.replay_teacher(ref, d, steps=STEPS, batch=BATCH, seed=seed)
    actions = [x["action"] for x in decisions]
    # the gate's real code, fed teacher batches: it advances through every stage as soon
    # as min_steps allows, and never sees a collapse
    assert actions.count("advance") == len(d["curriculum"]["lengths"]) - 1, actions
    first = [x["step"] for x in decisions if x["action"] == "advance"]
    assert first[0] <= d["curriculum"]["min_steps"] + WINDOW, first
    assert not {"raise_alpha", "collapse_hold"} & set(actions)
    # the adaptive α stays (almost) at rest on teacher entropies
    assert alphas.mean() < 0.02 and alphas.max() <= 0.1


def test_settings_the_teacher_would_fail_are_refused():
  ref = teacher_reference()
  d = remedies.derive(ref, steps=STEPS, batch=BATCH, window=WINDOW, check_every=10)
  # the last study's stage 1: a truncation gate far under the teacher's own rate there
  bad = {**d, "curriculum": {**d["curriculum"], "stage_max_truncation": [0.2, 0.2]}}
  assert any("truncation gate" in x for x in remedies.check(ref, bad, batch=BATCH))
  # an entropy gate above what the teacher shows
  hot = {**d, "curriculum": {**d["curriculum"], "gate_entropy": 2.0, "floor_entropy": 1.0}}
  msgs = remedies.check(ref, hot, batch=BATCH)
  assert any("fails gate_entropy" in x for x in msgs) and any("collapsing" in x for x in msgs)
  # an adaptive target the teacher itself sits under
  up = {**d, "adaptive": {"target_entropy": 1.0}}
  assert any("adaptive target" in x for x in remedies.check(ref, up, batch=BATCH))
  # a warm start that starts below the target can never trigger it from above
  target = d["adaptive"]["target_entropy"]
  assert any("warm start" in x for x in remedies.check(ref, d, batch=BATCH, warm_entropy=target))
  assert remedies.check(ref, d, batch=BATCH, warm_entropy=target + 0.5) == []
  # a budget under 2 x p95
  short = {**d, "budget": d["curriculum"]["lengths"][1]}
  assert any("budget" in x for x in remedies.check(ref, short, batch=BATCH))


def test_the_budget_needs_a_reference_measured_past_it():
  ref = teacher_reference(cap=100)
  with pytest.raises(ValueError, match="larger cap"):
    remedies.budget(ref)


def test_reference_round_trips_through_json():
  ref = teacher_reference(n=20)
  back = remedies.Reference.from_json(ref.to_json())
  assert back.cap == ref.cap and np.array_equal(back.lengths, ref.lengths)
  assert np.allclose(back.entropies[3], ref.entropies[3], atol=1e-5)
  with pytest.raises(ValueError, match="per response token"):
    remedies.Reference.from_json({**ref.to_json(), "lengths": [1] * 20})


def test_stage_truncation_validation_and_use():
  cfg = remedies.curriculum_config(
    remedies.derive(teacher_reference(), steps=STEPS, batch=BATCH, window=WINDOW, check_every=10)
  ).validate(32)
  assert cur.max_truncation(cfg, 0) == cfg.stage_max_truncation[0]
  assert cur.max_truncation(cfg, 1) == cfg.stage_max_truncation[1]
  with pytest.raises(ValueError, match="stage_max_truncation"):
    cur.CurriculumConfig(lengths=(8, 16, 32), stage_max_truncation=(0.5,)).validate(32)
  with pytest.raises(ValueError, match="stage_max_truncation"):
    cur.CurriculumConfig(lengths=(8, 16), stage_max_truncation=(1.5,)).validate(32)
