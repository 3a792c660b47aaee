"""The prefix axis (DESIGN.md §1, §5): which sequences fill a training batch.

Per sequence, on the host: teacher prefixes come from a dataset of responses or from
teacher rollouts (optionally generated once and cached on disk); student prefixes are
rollouts of the live student params. These are pure functions over numpy arrays that
return frozen dataclasses; the run loop only calls the engines they ask for and hands
the rollouts back. Whatever the source, the train step sees one packed layout
(`data.packing`), so one step serves all quadrants.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from etils import epath

from dkd_jax.core import multihost
from dkd_jax.data import packing

# objective.prefix: where the prefixes of a batch come from.
TEACHER, STUDENT, MIXED = "teacher", "student", "mixed"
PREFIXES = (TEACHER, STUDENT, MIXED)
# data.teacher_source: what a teacher prefix is.
# cached_topk: dataset responses, with the teacher's top-k per response token computed
# once and read from disk, so training needs no teacher on device.
DATASET, ROLLOUT, ROLLOUT_CACHED, CACHED_TOPK = (
  "dataset",
  "rollout",
  "rollout_cached",
  "cached_topk",
)
TEACHER_SOURCES = (DATASET, ROLLOUT, ROLLOUT_CACHED, CACHED_TOPK)


@dataclasses.dataclass(frozen=True)
class Plan:
  """This step's split of the batch: student rows, teacher rows, response budget."""

  student_B: np.ndarray  # bool [B]
  max_len: int  # response tokens kept per prefix (curriculum stage)
  teacher_source: str

  @property
  def student_idx(self) -> np.ndarray:
    return np.flatnonzero(self.student_B)

  @property
  def teacher_idx(self) -> np.ndarray:
    return np.flatnonzero(~self.student_B)


@dataclasses.dataclass(frozen=True)
class Responses:
  """Responses of some rows of a batch: rows `idx` get `tokens_NxR[:, :len_N]`."""

  idx: np.ndarray  # int [N] batch rows
  tokens_NxR: np.ndarray  # int32, pad-padded
  len_N: np.ndarray  # int32
  truncated_N: np.ndarray  # bool: hit the budget (or the source's limit) without EOS


@dataclasses.dataclass(frozen=True)
class Batch:
  """A packed batch and the host statistics of its prefixes."""

  tokens_BxT: np.ndarray
  loss_mask_BxT: np.ndarray
  student_B: np.ndarray
  stats: dict


def student_rows(rng: np.random.Generator, batch: int, prefix: str, frac: float) -> np.ndarray:
  """bool [B]: which sequences take student prefixes.

  'mixed' picks exactly round(frac * B) sequences at random each step (lower
  variance than independent coin flips; the expectation is the same).
  """
  if prefix == TEACHER:
    return np.zeros((batch,), bool)
  if prefix == STUDENT:
    return np.ones((batch,), bool)
  rows = np.zeros((batch,), bool)
  rows[rng.permutation(batch)[: int(round(frac * batch))]] = True
  return rows


def plan(
  rng: np.random.Generator,
  batch: int,
  *,
  prefix: str,
  student_frac: float,
  teacher_source: str,
  max_len: int,
) -> Plan:
  return Plan(student_rows(rng, batch, prefix, student_frac), int(max_len), teacher_source)


def _cut(idx, rows_tokens, rows_truncated, max_len: int, width: int, pad_id: int) -> Responses:
  """Responses of `idx` cut to `max_len`; a cut response counts as truncated."""
  tokens = np.full((len(idx), width), pad_id, np.int32)
  lens = np.zeros((len(idx),), np.int32)
  trunc = np.zeros((len(idx),), bool)
  for j, (toks, was_cut) in enumerate(zip(rows_tokens, rows_truncated)):
    n = min(len(toks), max_len)
    tokens[j, :n] = toks[:n]
    lens[j], trunc[j] = n, bool(was_cut) or len(toks) > max_len
  return Responses(np.asarray(idx), tokens, lens, trunc)


def dataset_responses(prompts: dict, idx, max_len: int, width: int, pad_id: int) -> Responses:
  """Teacher prefixes from the dataset's responses (cut to the stage's `max_len`)."""
  toks = [prompts["response_tokens"][i, : int(prompts["response_len"][i])] for i in idx]
  return _cut(
    idx, toks, [bool(prompts["response_truncated"][i]) for i in idx], max_len, width, pad_id
  )


def rollout_responses(idx, result: dict) -> Responses:
  """Responses of a rollout (its length limit was the budget already)."""
  return Responses(
    np.asarray(idx), result["response_tokens"], result["response_len"], result["truncated"]
  )


def cache_rows(indices, result: dict) -> list[dict]:
  """Rollout results as `RolloutCache` rows keyed by training-record index."""
  return [
    {
      "index": int(ix),
      "tokens": result["response_tokens"][j, : result["response_len"][j]].tolist(),
      "truncated": bool(result["truncated"][j]),
    }
    for j, ix in enumerate(indices)
  ]


def cached_responses(idx, rows: list[dict], max_len: int, width: int, pad_id: int) -> Responses:
  """Teacher prefixes from cached full-length teacher rollouts, cut to `max_len`."""
  return _cut(
    idx, [r["tokens"] for r in rows], [r["truncated"] for r in rows], max_len, width, pad_id
  )


def assemble(
  prompts: dict,
  parts: list[Responses],
  plan_: Plan,
  width: int,
  pad_id: int,
  student_entropy: float | None = None,
) -> Batch:
  """Packs prompts with the responses of every part (together they cover the batch)."""
  B = len(plan_.student_B)
  tokens = np.full((B, width), pad_id, np.int32)
  lens = np.zeros((B,), np.int32)
  trunc = np.zeros((B,), bool)
  for part in parts:
    if len(part.idx):
      tokens[part.idx, : part.tokens_NxR.shape[1]] = part.tokens_NxR
      lens[part.idx], trunc[part.idx] = part.len_N, part.truncated_N
  toks, mask = packing.pack(prompts["prompt_tokens"], prompts["prompt_len"], tokens, lens, pad_id)
  stats = {
    "response_len": float(np.mean(lens)),
    "truncation_rate": float(np.mean(trunc)),
    "student_frac": float(np.mean(plan_.student_B)),
  }
  if student_entropy is not None:
    stats["rollout_entropy"] = student_entropy
  return Batch(toks, mask, plan_.student_B, stats)


def topk_arrays(loss_mask_BxT: np.ndarray, rows, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Cached teacher top-k rows (ids [n,k], logp [n,k] per sequence, row j = response
  token j) laid on the packed batch: row j goes to the j-th loss position of its sequence
  (a cut response uses its first rows). Elsewhere ids 0, log-prob 0 (masked out)."""
  B, T = loss_mask_BxT.shape
  ids = np.zeros((B, T, k), np.int32)
  logp = np.zeros((B, T, k), np.float32)
  for b, (row_ids, row_logp) in enumerate(rows):
    pos = np.flatnonzero(loss_mask_BxT[b])
    if len(pos) > len(row_ids):
      raise ValueError(
        f"sequence {b} has {len(pos)} response tokens but its cached teacher "
        f"top-k has {len(row_ids)} rows; delete the top-k cache to rebuild it"
      )
    ids[b, pos], logp[b, pos] = row_ids[: len(pos)], row_logp[: len(pos)]
  return ids, logp


class RolloutCache:
  """Teacher rollouts generated once per record and kept on disk (JSONL, append-only).

  Keyed by the record index in the training set; a line is written only after its
  rollout exists, so a killed run loses at most the lines not yet flushed. Every
  process holds the same rows (they roll out the same prompts); process 0 writes them.
  """

  def __init__(self, path):
    self.path = epath.Path(path)
    self._rows: dict[int, dict] = {}
    if self.path.exists():
      for n, line in enumerate(self.path.read_text().splitlines(), 1):
        try:
          row = json.loads(line)
          self._rows[int(row["index"])] = row
        except (ValueError, KeyError) as e:
          raise ValueError(
            f"{path}:{n}: malformed rollout cache line ({e}); delete the "
            "file to regenerate the teacher rollouts"
          ) from None

  def get(self, index: int) -> dict | None:
    return self._rows.get(int(index))

  def put(self, rows: list[dict]) -> None:
    for row in rows:
      self._rows[int(row["index"])] = row
    if multihost.is_primary():
      self.path.parent.mkdir(parents=True, exist_ok=True)
      with self.path.open("a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
