"""The teacher top-k cache pass (`data.teacher_source='cached_topk'`).

One pass over the training set runs the teacher on each record's prompt + dataset
response and keeps, per response token, the teacher's top-k token ids and log-probs
(temperature 1), written to WORKDIR/teacher_topk_k{K}.array_record (`data.topk_store`).
Training then reads them back by record index and needs no teacher on device.
Every process runs the pass (the forward is sharded over all devices); process 0 writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator

import jax
import numpy as np

from dkd_jax.core import multihost
from dkd_jax.core import paths
from dkd_jax.core import sharding
from dkd_jax.data import packing
from dkd_jax.data import topk_store
from dkd_jax.models import decoder as model_lib


def _topk_fn(graphdef, k: int, mesh=None) -> Callable:
  def fn(params, tokens_BxT) -> tuple[jax.Array, jax.Array]:
    with sharding.mesh_context(mesh):
      logits_BxTxV, _ = model_lib.logits(graphdef, params, tokens_BxT)
      return jax.lax.top_k(jax.nn.log_softmax(logits_BxTxV, axis=-1), k)[::-1]

  return jax.jit(fn)


def _batches(encoded, batch_size: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
  """(indices, batch dict) in record order; the last batch is padded with record 0."""
  n = len(encoded)
  for start in range(0, n, batch_size):
    idx = list(range(start, min(start + batch_size, n)))
    examples = [encoded[i] for i in idx + [0] * (batch_size - len(idx))]
    yield (
      idx,
      {
        k: np.stack([ex[k] for ex in examples])
        for k in ("prompt_tokens", "prompt_len", "response_tokens", "response_len")
      },
    )


def teacher_rows(
  encoded, graphdef, params, *, k: int, batch_size: int, mesh, pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (ids [n, k], logp [n, k]) per record, in record order."""
  fn = _topk_fn(graphdef, k, mesh)
  for idx, b in _batches(encoded, batch_size):
    tokens, mask = packing.pack(
      b["prompt_tokens"], b["prompt_len"], b["response_tokens"], b["response_len"], pad_id
    )
    ids, logp = sharding.to_host(
      fn(params, sharding.put_global(tokens, sharding.batch_sharding(mesh, 2)))
    )
    for j in range(len(idx)):
      pos = np.flatnonzero(mask[j])
      yield ids[j, pos], logp[j, pos]


def ensure_cache(
  workdir,
  encoded,
  teacher_graphdef,
  teacher_params,
  *,
  k: int,
  batch_size: int,
  mesh,
  pad_id: int,
  log=print,
) -> topk_store.TopKSource:
  """The cache of this workdir (built by one pass when absent or of the wrong length)."""
  path = paths.as_path(workdir) / f"teacher_topk_k{k}.array_record"
  exists = path.exists() and len(topk_store.TopKSource(str(path))) == len(encoded)
  if not multihost.from_primary(np.int32(exists)):
    t0 = time.perf_counter()
    rows = teacher_rows(
      encoded,
      teacher_graphdef,
      teacher_params,
      k=k,
      batch_size=batch_size,
      mesh=mesh,
      pad_id=pad_id,
    )
    if multihost.is_primary():
      topk_store.write(str(path), rows)
    else:
      for _ in rows:  # the other processes take part in the sharded forward
        pass
    multihost.barrier("teacher_topk_written")
    log(
      f"teacher top-k cache: {len(encoded)} records, k={k} -> {path} "
      f"({time.perf_counter() - t0:.1f}s)"
    )
  source = topk_store.TopKSource(str(path), expected_len=len(encoded))
  # Every record checked once now (NaN log-probs, ids, lengths): never a failure mid-run.
  lengths = None if encoded.response_ids is None else [len(r) for r in encoded.response_ids]
  vocab = teacher_params["embedding"].shape[0] if teacher_params is not None else None
  source.check(vocab, lengths)
  return source


def free(params) -> None:
  """Deletes device arrays now (training on the cache holds no teacher on device)."""
  for a in jax.tree.leaves(params):
    if isinstance(a, jax.Array):
      a.delete()
