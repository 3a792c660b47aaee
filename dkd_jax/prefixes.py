"""Prefix sources: which sequences fill a training batch (DESIGN.md §1, §5).

The prefix axis is decided here, on the host, per sequence: teacher prefixes come
from a dataset of responses or from teacher rollouts (optionally generated once and
cached on disk); student prefixes are rollouts of the live student params. Either
way the train step sees the same packed layout, so one step serves all quadrants.

Packed layout: tokens[b] = prompt ++ response, right-padded to P + R;
loss_mask[b, t] = 1 iff tokens[b, t+1] is a response token (position t predicts t+1).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np


def pack(prompt_tokens_BxP, prompt_len_B, response_tokens_BxR, response_len_B, pad_id: int):
  """(tokens [B, P+R] int32, loss_mask [B, P+R] float32) in the packed layout."""
  B, P = prompt_tokens_BxP.shape
  R = response_tokens_BxR.shape[1]
  tokens = np.full((B, P + R), pad_id, np.int32)
  mask = np.zeros((B, P + R), np.float32)
  for b in range(B):
    p, r = int(prompt_len_B[b]), int(response_len_B[b])
    tokens[b, :p] = prompt_tokens_BxP[b, :p]
    tokens[b, p:p + r] = response_tokens_BxR[b, :r]
    mask[b, p - 1:p + r - 1] = 1.0
  return tokens, mask


def student_rows(rng: np.random.Generator, batch: int, prefix: str, frac: float) -> np.ndarray:
  """bool [B]: which sequences take student prefixes.

  'mixed' picks exactly round(frac * B) sequences at random each step (lower
  variance than independent coin flips; the expectation is the same).
  """
  if prefix == "teacher":
    return np.zeros((batch,), bool)
  if prefix == "student":
    return np.ones((batch,), bool)
  rows = np.zeros((batch,), bool)
  rows[rng.permutation(batch)[:int(round(frac * batch))]] = True
  return rows


class RolloutCache:
  """Teacher rollouts generated once per record and kept on disk (JSONL, append-only).

  Keyed by the record index in the training set; a line is written only after its
  rollout exists, so a killed run loses at most the lines not yet flushed.
  """

  def __init__(self, path: str):
    self.path = path
    self._rows: dict[int, dict] = {}
    if os.path.exists(path):
      with open(path) as f:
        for n, line in enumerate(f, 1):
          try:
            row = json.loads(line)
            self._rows[int(row["index"])] = row
          except (ValueError, KeyError) as e:
            raise ValueError(f"{path}:{n}: malformed rollout cache line ({e}); delete the "
                             "file to regenerate the teacher rollouts") from None

  def get(self, index: int):
    return self._rows.get(int(index))

  def put(self, rows: list[dict]):
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "a") as f:
      for row in rows:
        self._rows[int(row["index"])] = row
        f.write(json.dumps(row) + "\n")


class GenerationCost:
  """Counts the generation compute of each prefix source (the quality-compute axis)."""

  def __init__(self):
    self.seconds = {"student": 0.0, "teacher": 0.0}
    self.tokens = {"student": 0, "teacher": 0}

  def timed(self, source: str, fn: Callable, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    self.seconds[source] += time.perf_counter() - t0
    self.tokens[source] += int(np.sum(out["response_len"]))
    return out

  def as_metrics(self) -> dict[str, float]:
    return {f"gen_{k}_{s}": float(v[s]) for k, v in (("seconds", self.seconds),
                                                     ("tokens", self.tokens)) for s in v}

  def state(self) -> dict:
    return {"seconds": dict(self.seconds), "tokens": dict(self.tokens)}

  def load(self, state: dict):
    self.seconds.update(state["seconds"])
    self.tokens.update(state["tokens"])
