"""Length curriculum gate (DESIGN §6) and α schedules on synthetic streams."""

import json
import math

import numpy as np
import pytest

from dkd_jax.objectives import curriculum as cur
from dkd_jax.objectives import schedules as sch

V = 1000  # log(V) ~ 6.9 nats bounds the entropy thresholds


def _cfg(**kw):
  base = dict(
    lengths=(8, 16, 32),
    check_every=10,
    window=10,
    min_steps=20,
    gate_entropy=1.0,
    floor_entropy=0.3,
    max_truncation=0.2,
    on_collapse="raise_forward",
    alpha_step=0.25,
    alpha_max=0.6,
  )
  base.update(kw)
  return cur.CurriculumConfig(**base).validate(V)


def _run(cfg, stream, state=None, start=1):
  """Feed (entropy, trunc) per step from step `start`; return state, decisions."""
  state = state or cur.init_state()
  decisions = []
  for i, (h, t) in enumerate(stream):
    state, d = cur.update(cfg, state, start + i, h, t)
    if d is not None:
      decisions.append(d)
  return state, decisions


# ---------------------------------------------------------------- schedules ---


def test_schedule_endpoints_and_monotone():
  for kind in ("linear", "cosine"):
    s = sch.AlphaSchedule(kind=kind, alpha=0.9, alpha_end=0.1, steps=100).validate()
    values = [sch.alpha_at(s, step, {})[0] for step in range(0, 151)]
    assert values[0] == pytest.approx(0.9)
    assert values[100] == pytest.approx(0.1) and values[150] == pytest.approx(0.1)
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), kind
  assert sch.alpha_at(sch.AlphaSchedule(kind="cosine", alpha=0.0, alpha_end=1.0, steps=10), 5)[
    0
  ] == pytest.approx(0.5)
  assert sch.alpha_at(sch.AlphaSchedule(alpha=0.3), 10**6)[0] == 0.3


def test_entropy_adaptive_rises_below_target_then_relaxes():
  s = sch.AlphaSchedule(
    kind="entropy_adaptive", alpha=0.2, target_entropy=1.0, rate=0.1, alpha_min=0.1, alpha_max=0.5
  ).validate()
  state, alphas = sch.init_state(s), []
  for step, h in enumerate([0.5] * 5 + [2.0] * 5 + [None]):
    a, state = sch.alpha_at(s, step, state, h)
    alphas.append(a)
    state = json.loads(json.dumps(state))  # checkpointable each step
  np.testing.assert_allclose(alphas[:5], [0.3, 0.4, 0.5, 0.5, 0.5])  # clamped
  np.testing.assert_allclose(alphas[5:], [0.4, 0.3, 0.2, 0.2, 0.2, 0.2])


@pytest.mark.parametrize(
  "kw,field",
  [
    (dict(kind="step"), "kind"),
    (dict(alpha=1.5), "alpha"),
    (dict(kind="linear", alpha_end=-0.1), "alpha_end"),
    (dict(kind="linear", steps=0), "steps"),
    (dict(kind="entropy_adaptive", rate=2.0), "rate"),
    (dict(kind="entropy_adaptive", target_entropy=math.nan), "target_entropy"),
    (dict(kind="entropy_adaptive", alpha=0.9, alpha_max=0.8), "alpha"),
  ],
)
def test_schedule_validation_names_field(kw, field):
  with pytest.raises(ValueError, match=rf"AlphaSchedule\.{field}="):
    sch.AlphaSchedule(**kw).validate()


# --------------------------------------------------------------- curriculum ---


def test_advances_through_stages_to_final():
  cfg = _cfg()
  state, ds = _run(cfg, [(2.0, 0.0)] * 80)
  # step 10: ran 10 < 20 -> hold; 20: advance; 30 hold; 40 advance; then final.
  assert [d["action"] for d in ds] == [
    "hold",
    "advance",
    "hold",
    "advance",
    "final_stage",
    "final_stage",
    "final_stage",
    "final_stage",
  ]
  assert [d["max_len"] for d in ds[:4]] == [8, 16, 16, 32]
  assert "min_steps=20" in ds[0]["reason"] and "8 -> 16" in ds[1]["reason"]
  assert cur.max_length(cfg, state) == 32 and state["stage"] == 2
  assert state["decisions"] == ds


def test_holds_on_low_gate_entropy_and_high_truncation():
  cfg = _cfg()
  _, ds = _run(cfg, [(0.8, 0.0)] * 40)  # above floor, below gate
  assert {d["action"] for d in ds[1:]} == {"hold"}
  assert "gate_entropy" in ds[-1]["reason"] and "H=0.8000" in ds[-1]["reason"]
  state, ds = _run(cfg, [(2.0, 0.5)] * 40)
  assert {d["action"] for d in ds} == {"hold"} and state["stage"] == 0
  assert "trunc=0.5000 > max_truncation=0.2000" in ds[-1]["reason"]


def test_gate_uses_window_mean():
  cfg = _cfg(window=4, min_steps=0)
  # three high and one low step: mean 1.5 passes the gate.
  state, ds = _run(cfg, [(0.1, 0.0)] * 6 + [(2.0, 0.0)] * 3 + [(0.0, 0.0)])
  assert ds[0]["action"] == "advance" and ds[0]["entropy"] == pytest.approx(1.5)
  assert state["entropy_window"] == []  # reset for the longer stage


def test_collapse_raises_alpha_until_capped():
  cfg = _cfg()
  collapsing = [(max(2.0 - 0.05 * i, 0.0), 0.0) for i in range(70)]
  state, ds = _run(cfg, collapsing)
  acts = [d["action"] for d in ds]
  assert acts[:3] == ["hold", "advance", "hold"]  # healthy at first
  assert acts[3:] == ["raise_alpha"] * 3 + ["collapse_hold"]
  assert [d["alpha_bonus"] for d in ds[3:]] == pytest.approx([0.25, 0.5, 0.6, 0.6])
  assert state["stage"] == 1  # never advanced while collapsing
  assert "floor_entropy" in ds[-1]["reason"]
  assert cur.alpha_bonus(state) == pytest.approx(0.6)
  assert cur.effective_alpha(cfg, state, 0.3) == pytest.approx(0.6)
  assert cur.effective_alpha(cfg, state, 0.8) == pytest.approx(0.8)


def test_collapse_hold_mode_keeps_alpha():
  for cfg in (_cfg(on_collapse="hold"), _cfg(alpha_step=0.0)):
    state, ds = _run(cfg, [(0.1, 0.0)] * 40)
    assert {d["action"] for d in ds} == {"collapse_hold"}
    assert state["alpha_bonus"] == 0.0 and state["stage"] == 0


def test_disabled_uses_last_length_without_decisions():
  cfg = _cfg(enabled=False)
  state, ds = _run(cfg, [(0.0, 1.0)] * 30)
  assert ds == [] and state == cur.init_state()
  assert cur.max_length(cfg, state) == 32


def test_json_round_trip_resume_matches_uninterrupted():
  cfg = _cfg(min_steps=15, check_every=5, window=7)
  rng = np.random.default_rng(0)
  stream = list(zip(rng.uniform(0.0, 2.5, 200).tolist(), rng.uniform(0.0, 0.4, 200).tolist()))
  full, _ = _run(cfg, stream)
  for cut in (1, 37, 120):
    head, _ = _run(cfg, stream[:cut])
    resumed = json.loads(json.dumps(head))
    tail, _ = _run(cfg, stream[cut:], resumed, start=cut + 1)
    assert tail == full
  assert len({d["action"] for d in full["decisions"]}) >= 3  # non-trivial run


def test_update_is_pure():
  cfg = _cfg()
  s0 = cur.init_state()
  snapshot = json.dumps(s0)
  cur.update(cfg, s0, 10, 2.0, 0.0)
  assert json.dumps(s0) == snapshot


def test_non_finite_metric_names_step():
  with pytest.raises(ValueError, match="entropy=nan at step 3"):
    cur.update(_cfg(), cur.init_state(), 3, float("nan"), 0.0)


@pytest.mark.parametrize(
  "kw,field",
  [
    (dict(lengths=(8, 8, 32)), "lengths"),
    (dict(lengths=(16, 8)), "lengths"),
    (dict(lengths=(0, 8)), "lengths"),
    (dict(lengths=()), "lengths"),
    (dict(lengths=[8, 16]), "lengths"),
    (dict(gate_entropy=7.0), "gate_entropy"),
    (dict(gate_entropy=-0.1), "gate_entropy"),
    (dict(floor_entropy=8.0, gate_entropy=1.0), "floor_entropy"),
    (dict(floor_entropy=1.5, gate_entropy=1.0), "floor_entropy"),
    (dict(max_truncation=1.2), "max_truncation"),
    (dict(on_collapse="panic"), "on_collapse"),
    (dict(check_every=0), "check_every"),
    (dict(alpha_max=2.0), "alpha_max"),
  ],
)
def test_config_validation_names_field(kw, field):
  with pytest.raises(ValueError, match=rf"curriculum\.{field}="):
    _cfg(**kw)


# ------------------------------------------------------------------ the gate as a ratio


def _ratio_cfg(reference, **kw):
  base = dict(
    lengths=(8, 16),
    check_every=1,
    window=1,
    min_steps=0,
    gate_entropy=0.5,
    floor_entropy=0.2,
    max_truncation=1.0,
    reference=reference,
  )
  return cur.CurriculumConfig(**{**base, **kw}).validate(32)


def test_teacher_reference_scales_the_thresholds():
  cfg = _ratio_cfg("teacher")
  state = cur.set_reference(cur.init_state(), 2.0)
  assert cur.thresholds(cfg, state) == (1.0, 0.4)
  state, d = cur.update(cfg, state, 1, 0.9, 0.0)  # 0.4 <= 0.9 < 1.0: hold
  assert d["action"] == "hold" and "gate_entropy=0.5 x teacher entropy = 1.0000" in d["reason"]
  state, d = cur.update(cfg, state, 2, 1.2, 0.0)
  assert d["action"] == "advance"
  state, d = cur.update(cfg, state, 3, 0.3, 0.0)
  assert d["action"] == "raise_alpha"


def test_teacher_reference_must_be_measured():
  with pytest.raises(ValueError, match="reference entropy"):
    cur.update(_ratio_cfg("teacher"), cur.init_state(), 1, 0.5, 0.0)


def test_student_start_reference_is_the_first_window():
  cfg = _ratio_cfg("student_start")
  state, d = cur.update(cfg, cur.init_state(), 1, 1.5, 0.0)
  assert state["reference_entropy"] == 1.5 and d["action"] == "advance"


def test_ratio_thresholds_validate_as_ratios():
  _ratio_cfg("teacher", gate_entropy=5.0, floor_entropy=1.0)  # > log(32) nats, fine as a ratio
  with pytest.raises(ValueError, match="gate_entropy"):
    _ratio_cfg("teacher", gate_entropy=11.0)
  with pytest.raises(ValueError, match="reference"):
    _ratio_cfg("nats")
