"""Grain pipelines: records -> fixed-shape numpy batches with checkpointable iterators.

Records are tokenized eagerly (`encode_records`) and batched lazily by grain
(`batch_dataset`). Eager tokenization costs about a second for GSM8K-sized sets
and buys two things: a too-long prompt fails before training starts rather than
at step 40k, and truncation counts are exact totals instead of per-access tallies.

Batch dict (B = batch size, P = max_prompt_len, R = max_response_len):

  prompt_tokens      int32 [B, P]  bos + rendered prompt, right-padded with pad_id
  prompt_len         int32 [B]
  prompt_truncated   bool  [B]
  index              int32 [B]     position of the record in the input list
  answer             object [B]    gold answer strings
  response_tokens    int32 [B, R]  solution + eos, right-padded (with_responses only)
  response_len       int32 [B]     (with_responses only)
  response_truncated bool  [B]     (with_responses only)

The iterator (`iter(ds)`) has get_state()/set_state(); the state is a small
JSON-able dict that orbax's grain checkpoint handler stores beside train state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from dkd_jax.data.protocols import Tokenizer


# eq=False: field-wise == on numpy arrays is ambiguous; identity is what matters.
@dataclasses.dataclass(frozen=True, eq=False)
class EncodedRecords:
  """Tokenized records; a grain random-access source of padded examples."""

  prompt_ids: list[np.ndarray]  # ragged int32, already within max_prompt_len
  response_ids: list[np.ndarray] | None  # ragged int32, within max_response_len
  answers: list[str]
  prompt_truncated_N: np.ndarray  # bool [N]
  response_truncated_N: np.ndarray | None  # bool [N]
  max_prompt_len: int
  max_response_len: int | None
  pad_id: int

  @property
  def num_truncated_prompts(self) -> int:
    return int(self.prompt_truncated_N.sum())

  @property
  def num_truncated_responses(self) -> int:
    return 0 if self.response_truncated_N is None else int(self.response_truncated_N.sum())

  def __len__(self) -> int:
    return len(self.prompt_ids)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    ex = {
      "index": np.int32(i),
      "answer": self.answers[i],
      "prompt_truncated": self.prompt_truncated_N[i],
    }
    ex["prompt_tokens"], ex["prompt_len"] = _pad(
      self.prompt_ids[i], self.max_prompt_len, self.pad_id
    )
    if self.response_ids is not None:
      ex["response_tokens"], ex["response_len"] = _pad(
        self.response_ids[i], self.max_response_len, self.pad_id
      )
      ex["response_truncated"] = self.response_truncated_N[i]
    return ex


def _pad(ids_T: np.ndarray, length: int, pad_id: int) -> tuple[np.ndarray, np.int32]:
  out_T = np.full((length,), pad_id, np.int32)
  out_T[: len(ids_T)] = ids_T
  return out_T, np.int32(len(ids_T))


def _encode_prompt(
  tokenizer: Tokenizer, question: str, max_len: int, truncate: bool, record_id: str
) -> tuple[np.ndarray, bool]:
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  body = tokenizer.encode(tokenizer.render_prompt(question))
  if len(bos) + len(body) <= max_len:
    return np.asarray(bos + body, np.int32), False
  if not truncate:
    raise ValueError(
      f"record {record_id!r}: prompt has {len(bos) + len(body)} tokens > "
      f"max_prompt_len={max_len}; raise max_prompt_len or pass truncate=True"
    )
  if max_len <= len(bos):
    raise ValueError(f"max_prompt_len={max_len} leaves no room after BOS")
  # Keep the END of the prompt: the chat template's assistant header sits there
  # and the model must see it to start answering; BOS stays in front.
  return np.asarray(bos + body[len(body) - (max_len - len(bos)) :], np.int32), True


def _encode_response(
  tokenizer: Tokenizer, solution: str, max_len: int, truncate: bool, record_id: str
) -> tuple[np.ndarray, bool]:
  if not solution:
    raise ValueError(f"record {record_id!r} has no solution; with_responses=True needs one")
  ids = tokenizer.encode(solution) + [tokenizer.eos_id]
  if len(ids) <= max_len:
    return np.asarray(ids, np.int32), False
  if not truncate:
    raise ValueError(
      f"record {record_id!r}: response has {len(ids)} tokens > "
      f"max_response_len={max_len}; pass truncate_responses=True"
    )
  # Keep the start: a truncated response (no eos) is still a valid teacher prefix.
  return np.asarray(ids[:max_len], np.int32), True


def encode_records(
  records: Sequence[dict],
  tokenizer: Tokenizer,
  *,
  max_prompt_len: int,
  truncate: bool = False,
  with_responses: bool = False,
  max_response_len: int | None = None,
  truncate_responses: bool = True,
) -> EncodedRecords:
  """Tokenizes every record now; raises on the first prompt that does not fit."""
  if not records:
    raise ValueError("no records to encode")
  if with_responses and not max_response_len:
    raise ValueError("with_responses=True needs max_response_len")
  prompts, p_trunc = zip(
    *(
      _encode_prompt(tokenizer, r["question"], max_prompt_len, truncate, r.get("id", i))
      for i, r in enumerate(records)
    )
  )
  responses = r_trunc = None
  if with_responses:
    responses, r_trunc = zip(
      *(
        _encode_response(
          tokenizer, r.get("solution", ""), max_response_len, truncate_responses, r.get("id", i)
        )
        for i, r in enumerate(records)
      )
    )
  return EncodedRecords(
    prompt_ids=list(prompts),
    response_ids=None if responses is None else list(responses),
    answers=[str(r["answer"]) for r in records],
    prompt_truncated_N=np.asarray(p_trunc, bool),
    response_truncated_N=None if r_trunc is None else np.asarray(r_trunc, bool),
    max_prompt_len=max_prompt_len,
    max_response_len=max_response_len if with_responses else None,
    pad_id=tokenizer.pad_id,
  )


def _stack(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0] if k != "answer"}
  # Object dtype: answers are arbitrary-length text, and fixed-width '<U' arrays
  # would change dtype from batch to batch.
  batch["answer"] = np.array([ex["answer"] for ex in examples], dtype=object)
  return batch


def batch_dataset(
  encoded: EncodedRecords,
  *,
  seed: int,
  batch_size: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
) -> grain.IterDataset:
  """Shuffled (per epoch, deterministically), repeated, batched examples.

  num_epochs=None repeats forever. drop_remainder=True keeps every batch the same
  shape (one jit compile); with False the final batch of a finite run is smaller.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if drop_remainder and num_epochs is not None and len(encoded) * num_epochs < batch_size:
    raise ValueError(
      f"{len(encoded)} records x {num_epochs} epochs cannot fill one batch "
      f"of {batch_size} with drop_remainder=True"
    )
  ds = grain.MapDataset.source(encoded)
  if shuffle:
    # Shuffle before repeat: grain folds the epoch into the seed, so each epoch
    # gets a fresh order and epochs never mix.
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_stack)
  # Data sits in memory: reader threads would only fight over the GIL.
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))


def prompt_dataset(
  records: Sequence[dict],
  tokenizer: Tokenizer,
  *,
  max_prompt_len: int,
  seed: int,
  batch_size: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  truncate: bool = False,
  with_responses: bool = False,
  max_response_len: int | None = None,
  truncate_responses: bool = True,
  drop_remainder: bool = True,
) -> grain.IterDataset:
  """encode_records + batch_dataset. Call those two directly to read the counters."""
  encoded = encode_records(
    records,
    tokenizer,
    max_prompt_len=max_prompt_len,
    truncate=truncate,
    with_responses=with_responses,
    max_response_len=max_response_len,
    truncate_responses=truncate_responses,
  )
  return batch_dataset(
    encoded,
    seed=seed,
    batch_size=batch_size,
    shuffle=shuffle,
    num_epochs=num_epochs,
    drop_remainder=drop_remainder,
  )
