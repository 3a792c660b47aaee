"""The teacher top-k cache on disk: per training record, the teacher's top-k token ids and
log-probs at each of its response tokens, one array_record record per training record
(record i = training record i), read back by random access through grain.

Record layout (little-endian): int32 n, int32 k, then int32 ids [n, k], then float32
log-probs [n, k]. Row j is the teacher's distribution over response token j (given the
prompt and response tokens before it).
"""

from __future__ import annotations

import os
import struct

import grain
import numpy as np

_HEADER = struct.Struct("<ii")


def encode(ids_NxK: np.ndarray, logp_NxK: np.ndarray) -> bytes:
  n, k = ids_NxK.shape
  return (
    _HEADER.pack(n, k)
    + np.asarray(ids_NxK, "<i4").tobytes()
    + np.asarray(logp_NxK, "<f4").tobytes()
  )


def decode(record: bytes) -> tuple[np.ndarray, np.ndarray]:
  n, k = _HEADER.unpack_from(record)
  body = memoryview(record)[_HEADER.size :]
  ids = np.frombuffer(body[: 4 * n * k], "<i4").reshape(n, k)
  logp = np.frombuffer(body[4 * n * k :], "<f4").reshape(n, k)
  return ids, logp


def write(path: str, rows) -> None:
  """Writes (ids [n,k], logp [n,k]) rows in order, atomically (a temporary file renamed
  on completion: a killed pass leaves no cache that looks complete)."""
  from array_record.python.array_record_module import ArrayRecordWriter

  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  for ids, logp in rows:
    writer.write(encode(ids, logp))
  writer.close()
  os.replace(tmp, path)


class TopKSource:
  """Random access to a written cache: `source[i]` -> (ids [n,k], logp [n,k])."""

  def __init__(self, path: str, expected_len: int | None = None):
    self.path = path
    self._source = grain.sources.ArrayRecordDataSource([path])
    if expected_len is not None and len(self._source) != expected_len:
      raise ValueError(
        f"{path}: {len(self._source)} records, the training set has "
        f"{expected_len}; delete the file to rebuild the teacher top-k cache"
      )

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    return decode(self._source[int(i)])

  def check(self, vocab: int | None = None, lengths=None) -> None:
    """Reads every record once (at start, never mid-run): log-probs finite, ids in
    [0, vocab), and record i holding `lengths[i]` rows (the training record's response
    tokens). Raises ValueError naming the file and record, e.g. a NaN log-prob."""
    for i in range(len(self)):
      ids, logp = self[i]
      problem = None
      if not np.all(np.isfinite(logp)):
        j = int(np.flatnonzero(~np.isfinite(logp).all(axis=1))[0])
        problem = f"non-finite log-prob {logp[j][~np.isfinite(logp[j])][0]} at token {j}"
      elif vocab is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab):
        problem = f"token id outside [0, {vocab}) ({int(ids.min())}..{int(ids.max())})"
      elif lengths is not None and len(ids) < int(lengths[i]):
        problem = f"{len(ids)} rows for a response of {int(lengths[i])} tokens"
      if problem:
        raise ValueError(
          f"{self.path}: record {i} (training record {i}): {problem}; delete the file to "
          "rebuild the teacher top-k cache"
        )
