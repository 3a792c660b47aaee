"""Which teacher each sequence learns from, when a run has several (`config.routing`).

The train step takes row weights `teacher_w` [B, K] (`train.teachers`): its loss is
Σ_k Σ_b w_bk·(teacher k's loss on row b), normalised by the rows' loss tokens. This module
decides those weights on the host, as data, from each row's record:

- `weights`: every row gets the same fixed weights (the losses are mixed); default equal.
- `source`: a row goes to the first teacher whose id prefix (`routing.sources[k]`) starts
  the record's id, e.g. ('chain-', 'gsm8k-') for one teacher per data source.
- `modulo`: row of record index i goes to teacher i mod K (a fixed rule that splits one
  source between teachers; what the two-teacher tiny config uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KINDS = ("weights", "source", "modulo")


def check(kind: str, n_teachers: int, weights: Sequence[float], sources: Sequence[str]) -> None:
  """Raises ValueError naming the config field and what is allowed."""
  if kind not in KINDS:
    raise ValueError(f"config.routing.kind={kind!r} is not allowed; choose one of {KINDS}")
  if kind == "weights" and weights:
    w = np.asarray(weights, float)
    if len(w) != n_teachers or (w < 0).any() or not np.isclose(w.sum(), 1.0):
      raise ValueError(
        f"config.routing.weights={tuple(weights)} must be {n_teachers} numbers >= 0 summing "
        "to 1 (one per teacher: config.teacher first, then config.extra_teachers)"
      )
  if kind == "source" and len(sources) != n_teachers:
    raise ValueError(
      f"config.routing.sources={tuple(sources)} must give one record-id prefix per teacher "
      f"({n_teachers})"
    )


def teacher_weights(
  kind: str,
  n_teachers: int,
  indices: Sequence[int],
  ids: Sequence[str],
  weights: Sequence[float] = (),
  sources: Sequence[str] = (),
) -> np.ndarray:
  """[B, K] float32 row weights for records `indices` (their ids `ids`)."""
  B, K = len(indices), n_teachers
  if kind == "weights":
    w = np.asarray(weights or [1.0 / K] * K, np.float32)
    return np.tile(w, (B, 1))
  if kind == "modulo":
    pick = np.asarray(indices, np.int64) % K
  else:
    pick = np.array([_source(i, sources) for i in ids])
  return np.eye(K, dtype=np.float32)[pick]


def _source(record_id: str, sources: Sequence[str]) -> int:
  for k, prefix in enumerate(sources):
    if record_id.startswith(prefix):
      return k
  raise ValueError(
    f"record {record_id!r} matches no prefix of config.routing.sources={tuple(sources)}"
  )
