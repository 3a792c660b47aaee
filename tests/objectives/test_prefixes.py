"""The prefix axis as pure functions: plans, response sources, assembly into one batch."""

import numpy as np
import pytest

from dkd_jax.data import packing
from dkd_jax.objectives import prefixes


def _prompts(B=4, P=3, R=6, pad=0):
  rng = np.random.default_rng(0)
  return {
    "prompt_tokens": rng.integers(3, 20, (B, P)).astype(np.int32),
    "prompt_len": np.array([3, 2, 3, 1][:B], np.int32),
    "response_tokens": rng.integers(3, 20, (B, R)).astype(np.int32),
    "response_len": np.array([6, 2, 4, 5][:B], np.int32),
    "response_truncated": np.array([True, False, False, False][:B]),
    "index": np.arange(10, 10 + B),
  }


@pytest.mark.parametrize("prefix,expected", [("teacher", 0), ("student", 4), ("mixed", 2)])
def test_plan_splits_rows(prefix, expected):
  plan = prefixes.plan(
    np.random.default_rng(1),
    4,
    prefix=prefix,
    student_frac=0.5,
    teacher_source=prefixes.DATASET,
    max_len=5,
  )
  assert plan.student_B.sum() == expected
  assert sorted(np.concatenate([plan.student_idx, plan.teacher_idx]).tolist()) == [0, 1, 2, 3]


def test_dataset_responses_cut_to_the_stage_and_mark_truncation():
  p = _prompts()
  r = prefixes.dataset_responses(p, np.array([0, 1, 2]), max_len=3, width=6, pad_id=0)
  assert r.len_N.tolist() == [3, 2, 3]
  # row 0 was truncated in the dataset already, row 2 is cut by the stage, row 1 fits
  assert r.truncated_N.tolist() == [True, False, True]
  np.testing.assert_array_equal(r.tokens_NxR[1, :2], p["response_tokens"][1, :2])
  assert (r.tokens_NxR[1, 2:] == 0).all()


def test_cache_rows_round_trip_through_cached_responses(tmp_path):
  res = {
    "response_tokens": np.array([[5, 6, 7, 2], [8, 2, 0, 0]], np.int32),
    "response_len": np.array([4, 2], np.int32),
    "truncated": np.array([False, False]),
  }
  rows = prefixes.cache_rows([11, 13], res)
  cache = prefixes.RolloutCache(str(tmp_path / "c.jsonl"))
  cache.put(rows)
  again = prefixes.RolloutCache(str(tmp_path / "c.jsonl"))
  got = prefixes.cached_responses(
    np.array([1, 3]), [again.get(11), again.get(13)], max_len=3, width=6, pad_id=0
  )
  assert got.len_N.tolist() == [3, 2] and got.truncated_N.tolist() == [True, False]
  assert got.tokens_NxR[0, :3].tolist() == [5, 6, 7]


def test_malformed_cache_line_is_named(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text('{"index": 1, "tokens": [1], "truncated": false}\nnot json\n')
  with pytest.raises(ValueError, match=r"c.jsonl:2: malformed"):
    prefixes.RolloutCache(str(path))


def test_assemble_packs_every_part_in_the_shared_layout():
  p = _prompts()
  plan = prefixes.Plan(np.array([True, False, True, False]), 4, prefixes.DATASET)
  student = prefixes.Responses(
    plan.student_idx,
    np.array([[9, 9, 2], [7, 2, 0]], np.int32),
    np.array([3, 2], np.int32),
    np.array([False, False]),
  )
  teacher = prefixes.dataset_responses(p, plan.teacher_idx, plan.max_len, 6, 0)
  batch = prefixes.assemble(p, [student, teacher], plan, 6, 0, student_entropy=0.5)
  lens = np.array([3, 2, 2, 4])
  resp = np.zeros((4, 6), np.int32)
  resp[0, :3], resp[2, :2] = [9, 9, 2], [7, 2]
  resp[1, :2], resp[3, :4] = p["response_tokens"][1, :2], p["response_tokens"][3, :4]
  tokens, mask = packing.pack(p["prompt_tokens"], p["prompt_len"], resp, lens, 0)
  np.testing.assert_array_equal(batch.tokens_BxT, tokens)
  np.testing.assert_array_equal(batch.loss_mask_BxT, mask)
  assert batch.stats == {
    "response_len": lens.mean(),
    "truncation_rate": 0.25,
    "student_frac": 0.5,
    "rollout_entropy": 0.5,
  }


# -- what a teacher-prefix batch trains on (issue 20) -------------------------------------

EOS, PAD = 2, 0


def _teacher_batch(source: str, max_len: int, R: int = 8):
  """A teacher-prefix batch as the run loop builds it, from dataset responses or from
  cached teacher rollouts (both end in EOS unless cut); (prompts, responses, batch)."""
  P = 4
  prompts = {
    "prompt_tokens": np.array([[1, 5, 6, 7], [1, 8, 0, 0], [1, 9, 10, 0]], np.int32),
    "prompt_len": np.array([4, 2, 3], np.int32),
    "index": np.array([3, 4, 5]),
  }
  responses = [[11, 12, 13, EOS], [14, EOS], [15, 16, 17, 18, 19, 20, 21]]  # last: no EOS
  truncated = [False, False, True]
  idx = np.arange(3)
  if source == prefixes.DATASET:
    prompts["response_tokens"] = np.array([r + [PAD] * (R - len(r)) for r in responses], np.int32)
    prompts["response_len"] = np.array([len(r) for r in responses], np.int32)
    prompts["response_truncated"] = np.array(truncated)
    part = prefixes.dataset_responses(prompts, idx, max_len, R, PAD)
  else:
    rows = [
      {"index": 3 + i, "tokens": r, "truncated": t}
      for i, (r, t) in enumerate(zip(responses, truncated))
    ]
    part = prefixes.cached_responses(idx, rows, max_len, R, PAD)
  plan = prefixes.plan(
    np.random.default_rng(0),
    3,
    prefix="teacher",
    student_frac=0.0,
    teacher_source=source,
    max_len=max_len,
  )
  assert prompts["prompt_tokens"].shape[1] == P
  return prompts, responses, prefixes.assemble(prompts, [part], plan, R, PAD)


@pytest.mark.parametrize("source", [prefixes.DATASET, prefixes.ROLLOUT_CACHED])
def test_teacher_prefix_loss_positions_are_exactly_the_response_with_its_eos(source):
  """Position t is trained on token t+1: the trained targets of each row are its response
  tokens in order, EOS included, and nothing else — no prompt token, no padding, nothing
  after EOS. A loss that skipped EOS (a student that never learns to stop) or leaked onto
  padding or prompts fails here."""
  prompts, responses, batch = _teacher_batch(source, max_len=8)
  targets = np.roll(batch.tokens_BxT, -1, axis=1)
  for b, resp in enumerate(responses):
    on = np.flatnonzero(batch.loss_mask_BxT[b])
    p = int(prompts["prompt_len"][b])
    assert on.tolist() == list(
      range(p - 1, p - 1 + len(resp))
    )  # contiguous, from the last prompt token
    assert targets[b, on].tolist() == resp
    np.testing.assert_array_equal(batch.tokens_BxT[b, :p], prompts["prompt_tokens"][b, :p])
  # rows that end in EOS train it exactly once, as their last loss position
  assert [int((targets[b][batch.loss_mask_BxT[b] > 0] == EOS).sum()) for b in range(3)] == [1, 1, 0]
  assert batch.stats["truncation_rate"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("source", [prefixes.DATASET, prefixes.ROLLOUT_CACHED])
def test_teacher_prefix_cut_by_the_stage_trains_its_first_tokens_and_no_eos(source):
  prompts, responses, batch = _teacher_batch(source, max_len=3)
  targets = np.roll(batch.tokens_BxT, -1, axis=1)
  for b, resp in enumerate(responses):
    on = batch.loss_mask_BxT[b] > 0
    assert targets[b, on].tolist() == resp[:3]
  assert batch.stats["truncation_rate"] == pytest.approx(2 / 3)  # rows 0 and 2 cut


def test_the_step_window_keeps_every_loss_position():
  """train.step.response_window (the head and KL see W positions per row from the first
  loss position) with W = max_response_len drops no trained position and adds none."""
  from dkd_jax.train import step as train

  _, responses, batch = _teacher_batch(prefixes.DATASET, max_len=8)
  idx, mask_w = train.response_window(batch.loss_mask_BxT, 8)
  targets = np.roll(batch.tokens_BxT, -1, axis=1)
  got = np.take_along_axis(targets, np.asarray(idx), 1)
  for b, resp in enumerate(responses):
    assert got[b][np.asarray(mask_w[b]) > 0].tolist() == resp
