"""Rollouts for training: continuous batching over the generation engine.

`rollout(engine, params, prompts, ...)` keeps every decode slot busy: when a
sequence finishes (EOS or its length limit), the next prompt is prefilled and
inserted into that slot. While prompts wait, the host looks at the decode state only
every `sync_every` decode steps (one jitted `lax.while_loop` in between), so a slot
can idle for at most sync_every - 1 steps after its sequence ends; once none wait
(always, for a batch that fits the slots) one call decodes to the end, stopping on the
device when every slot is done.

The same function rolls out the student and the teacher: an engine is just a
graphdef + config, and params are passed per call (live student params included).

Result layout (numpy, ready for the train step; same packing as `data.packing.pack`):
  tokens      int32 [N, P+R]  prompt ++ response, right-padded with pad_id
  loss_mask   f32   [N, P+R]  targets = tokens[:, 1:]; loss_mask[:, t] = 1 iff
                              tokens[:, t+1] is a response token (position t predicts t+1)
  logprobs    f32   [N, P+R]  aligned with loss_mask: log p_model(tokens[t+1] | tokens[:t+1])
                              at temperature 1, 0 where loss_mask is 0
  sampling_logprobs           same, under the distribution actually sampled from
  entropies   f32   [N, P+R]  same alignment: entropy (nats, temperature 1) of the model's
                              distribution over tokens[t+1]
  prompt_tokens int32 [N, P], response_tokens int32 [N, R] (pad_id padded)
  prompt_len, response_len int32 [N]; truncated bool [N] (hit max_new_tokens without EOS;
  an EOS is part of the response); prompt_truncated bool [N]
P is the input array's width (or the longest prompt for a list), R = max_new_tokens.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import jax
import numpy as np

from dkd_jax.core import rng
from dkd_jax.core import sharding
from dkd_jax.data import packing
from dkd_jax.generate.decode_state import DecodeState
from dkd_jax.generate.decode_state import Prefix

RESPONSE_KEYS = ("logprob", "sampling_logprob", "entropy")


def prepare_prompts(
  prompts, prompt_lens, max_len: int, truncate: bool
) -> tuple[list[np.ndarray], np.ndarray, int]:
  """(list of int32 arrays, prompt_truncated bool [N], width P) with validation.

  Truncation (opt-in) keeps the first token (BOS) and the end of the prompt, like
  the data pipeline: the chat template's assistant header lives at the end.
  """
  if isinstance(prompts, (np.ndarray, jax.Array)):
    arr = np.asarray(prompts)
    if arr.ndim != 2 or prompt_lens is None:
      raise ValueError("array prompts must be [N, P] with prompt_lens [N]")
    lens = np.asarray(prompt_lens).reshape(-1)
    if len(lens) != arr.shape[0]:
      raise ValueError(f"prompt_lens has {len(lens)} entries for {arr.shape[0]} prompts")
    rows, width = [arr[i, : int(lens[i])] for i in range(arr.shape[0])], arr.shape[1]
  else:
    rows, width = [np.asarray(p, np.int32).reshape(-1) for p in prompts], None
  out, cut = [], np.zeros((len(rows),), bool)
  for i, row in enumerate(rows):
    if len(row) == 0:
      raise ValueError(f"prompt {i} is empty; a prompt needs at least one token (e.g. BOS)")
    if len(row) > max_len:
      if not truncate:
        raise ValueError(
          f"prompt {i} has {len(row)} tokens > max_prefill_length={max_len}; "
          "raise it or pass truncate_prompts=True"
        )
      row, cut[i] = np.concatenate([row[:1], row[len(row) - max_len + 1 :]]), True
    out.append(np.asarray(row, np.int32))
  if not out:
    raise ValueError("no prompts given")
  return out, cut, max(width or 0, max(len(r) for r in out))


@jax.jit
def _fold_keys(base, idx_N) -> jax.Array:
  """Raw key data of fold_in(base, i) for each i (one compile per key kind and width)."""
  return jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(base, i)))(idx_N)


def request_keys(seed, n: int) -> np.ndarray:
  """uint32 [n, 2]: request i's key is fold_in(base, i), independent of scheduling;
  `seed` is an int (base = key(seed)), a typed PRNG key (e.g. from `dkd_jax.core.rng`)
  or a key's raw uint32 [2] data (`rng.key_data`). Threefry keys are folded on the host
  (`rng.fold_in_data`, the same bits): no device call per rollout. Other key kinds: one
  module-level jit, its width padded to a power of two (compiled once per width)."""
  is_key = isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
  if is_key and str(jax.random.key_impl(seed)) == "threefry2x32":
    seed = np.asarray(jax.random.key_data(seed))
  elif not is_key and not isinstance(seed, np.ndarray):
    seed = rng.key_data_of_seed(int(seed))  # raw data, or a typed key of another kind
  if isinstance(seed, np.ndarray):
    return rng.fold_in_data(seed, np.arange(int(n), dtype=np.uint32)).reshape(int(n), 2)
  base = seed
  width = 1 << max(int(n) - 1, 0).bit_length()
  return np.asarray(_fold_keys(base, np.arange(width, dtype=np.uint32)))[:n]


def _harvest(state, slots: Sequence[int], eos_ids, host=None) -> dict[int, dict]:
  """Host copies of the finished slots' responses (one transfer per buffer; gathered
  across processes when the decode state spans several hosts); `host`: (num_B, out)
  already copied."""
  num_B, out = host or sharding.to_host((state.num_B, dict(state.out)))
  got = {}
  for s in slots:
    n = int(num_B[s])
    row = {k: out[k][s, :n].copy() for k in out}
    row["truncated"] = not (n > 0 and int(row["token"][-1]) in eos_ids)
    got[s] = row
  return got


def _assemble(prompts, cut, width, rows, max_new, pad_id) -> dict[str, np.ndarray]:
  """Packs prompts and responses into the layout in the module docstring."""
  N = len(prompts)
  prompt_NxP = np.full((N, width), pad_id, np.int32)
  resp_NxR = np.full((N, max_new), pad_id, np.int32)
  p_len = np.array([len(p) for p in prompts], np.int32)
  r_len = np.array([len(rows[i]["token"]) for i in range(N)], np.int32)
  for i, p in enumerate(prompts):
    prompt_NxP[i, : len(p)] = p
    resp_NxR[i, : r_len[i]] = rows[i]["token"]
  tokens, mask = packing.pack(prompt_NxP, p_len, resp_NxR, r_len, pad_id)
  result = {
    "tokens": tokens,
    "loss_mask": mask,
    "prompt_tokens": prompt_NxP,
    "response_tokens": resp_NxR,
    "prompt_len": p_len,
    "response_len": r_len,
    "truncated": np.array([rows[i]["truncated"] for i in range(N)], bool),
    "prompt_truncated": cut,
  }
  for key in RESPONSE_KEYS:
    aligned = np.zeros(tokens.shape, np.float32)
    for i in range(N):
      aligned[i, p_len[i] - 1 : p_len[i] + r_len[i] - 1] = rows[i][key]
    result[key + "s" if key != "entropy" else "entropies"] = aligned
  return result


class _Slots:
  """One rollout's slot bookkeeping: which request owns each decode slot, the requests
  still waiting, the finished rows, and the prefixes of prompts with samples to insert."""

  def __init__(self, engine, params, rows_in, keys, sampler, max_new, G, pad_id):
    self.engine, self.params, self.rows_in, self.keys = engine, params, rows_in, keys
    self.sampler, self.max_new, self.G, self.pad_id = sampler, max_new, G, pad_id
    self.B = engine.max_concurrent_decodes
    self.pending = collections.deque((i, j) for i in range(len(rows_in)) for j in range(G))
    self.owner = [-1] * self.B
    self.done_rows: dict[int, dict] = {}
    self.live: dict[int, object] = {}  # prompt -> its prefix, until its last sample is in

  def prefix_of(self, i) -> Prefix:
    if i not in self.live:
      padded, n = self.engine.pad_to_bucket(self.rows_in[i], self.pad_id)
      self.live[i] = self.engine.prefill_multisampling(
        params=self.params,
        padded_tokens=padded,
        true_length=n,
        sampler=self.sampler,
        rng=self.keys[i],
        max_new_tokens=self.max_new,
        num_samples=self.G,
      )[0]
    return self.live[i]

  def prefill_rows(self, ids) -> tuple[Prefix, list[int]]:
    """(prefix, row of each id) from one batched prefill of `ids`: padded to the bucket of
    the longest and to a power-of-two count (repeats of the first prompt), so a run
    compiles one shape per (bucket, count) it meets: a rollout's first fill is B prompts,
    its refills a few (splitting by bucket instead recompiled mid-run: BUILD_NOTES)."""
    rows_in = self.rows_in
    rows = ids + ids[:1] * ((1 << (len(ids) - 1).bit_length()) - len(ids))
    width = self.engine.bucket_for(max(len(rows_in[i]) for i in ids))
    padded = np.full((len(rows), width), self.pad_id, np.int32)
    for r, i in enumerate(rows):
      padded[r, : len(rows_in[i])] = rows_in[i]
    prefix, _ = self.engine.prefill_batch(
      params=self.params,
      padded_tokens=padded,
      true_lengths=[len(rows_in[i]) for i in rows],
      sampler=self.sampler,
      rngs=self.keys[rows],
      max_new_tokens=self.max_new,
    )
    return prefix, list(range(len(ids)))

  def fill(self, state) -> DecodeState:
    """Inserts waiting requests into the free slots."""
    free = [slot for slot, who in enumerate(self.owner) if who < 0]
    todo = [self.pending.popleft() for _ in range(min(len(free), len(self.pending)))]
    if not todo:
      return state
    if self.G == 1:  # one batched prefill, one insert call
      prefix, rows = self.prefill_rows([i for i, _ in todo])
      state = self.engine.insert_many(prefix, state, free[: len(todo)], rows)
    else:  # one insert call per prompt: its samples into their slots
      by_prompt = collections.defaultdict(list)
      for slot, (i, j) in zip(free, todo):
        by_prompt[i].append((slot, j))
      for i, placed in by_prompt.items():
        state = self.engine.insert_many(self.prefix_of(i), state, *zip(*placed))
        if placed[-1][1] == self.G - 1:
          del self.live[i]
    for slot, (i, j) in zip(free, todo):
      self.owner[slot] = i * self.G + j
    return state

  def run(self, sync_every: int) -> dict[int, dict]:
    """Decodes until every request is done; the finished rows by request."""
    B, owner = self.B, self.owner
    state = self.fill(self.engine.init_decode_state())
    while any(o >= 0 for o in owner):
      # With requests waiting, come back as soon as enough slots free up to refill (an
      # eighth of the slots: fewer host syncs than one per freed slot), at the latest
      # after sync_every steps; else when all are done (every slot's limit <= max_new).
      if self.pending:
        steps, stop = sync_every, min(B, sum(o < 0 for o in owner) + max(1, B // 8))
      else:
        steps, stop = self.max_new, B
      state = self.engine.generate_steps(self.params, state, steps, self.sampler, stop)
      # The one host sync per call; the last call (every slot done) brings the outputs.
      host = (
        None if self.pending else sharding.to_host((state.done_B, state.num_B, dict(state.out)))
      )
      done_B = sharding.to_host(state.done_B) if host is None else host[0]
      finished = [s for s, o in enumerate(owner) if o >= 0 and done_B[s]]
      if finished:
        for s, row in _harvest(state, finished, self.engine.eos_ids, host and host[1:]).items():
          self.done_rows[owner[s]], owner[s] = row, -1
        state = self.fill(state)
    return self.done_rows


def rollout(
  engine,
  params,
  prompts,
  *,
  prompt_lens=None,
  sampler=None,
  seed: int = 0,
  max_new_tokens: int | None = None,
  sync_every: int = 8,
  truncate_prompts: bool = False,
  pad_id: int = 0,
  samples_per_prompt: int = 1,
) -> dict[str, np.ndarray]:
  """Generates `samples_per_prompt` (G) responses per prompt (list of token lists, or
  [N, P] + prompt_lens); the result has N*G rows, prompt-major (row i*G + j is sample j
  of prompt i). With G > 1 each prompt is prefilled once (`prefill_multisampling`: sample
  j uses fold_in(request key i, j)) and its prefix inserted into G slots as they free up.
  With G = 1 the requests that go into free slots together are prefilled together
  (`Engine.prefill_batch`, one call); a request's tokens do not depend on which others
  share its call."""
  if sync_every < 1:
    raise ValueError(f"sync_every={sync_every} must be >= 1")
  G = int(samples_per_prompt)
  if G < 1:
    raise ValueError(f"samples_per_prompt={samples_per_prompt} must be >= 1")
  sampler = sampler or engine.default_sampler
  max_new = engine.max_decode_length if max_new_tokens is None else int(max_new_tokens)
  rows_in, cut, width = prepare_prompts(
    prompts, prompt_lens, engine.max_prefill_length, truncate_prompts
  )
  keys = request_keys(seed, len(rows_in))
  # Requests that all fit in the slots at once (a training batch) are one prefill, one
  # insert and one decode call that stops on the device when every slot is done: the
  # host waits once. Otherwise the blocks are split per layer once for the many calls.
  if len(rows_in) * G > engine.max_concurrent_decodes or G > 1:
    params = engine.decode_params(params)
  slots = _Slots(engine, params, rows_in, keys, sampler, max_new, G, pad_id)
  done_rows = slots.run(sync_every)
  return _assemble(
    [r for r in rows_in for _ in range(G)], np.repeat(cut, G), width, done_rows, max_new, pad_id
  )


def token_mean(result: dict, key: str = "entropies") -> float:
  """Mean of a per-token field over response tokens (e.g. the curriculum's entropy)."""
  mask = result["loss_mask"]
  return float(np.sum(result[key] * mask) / max(np.sum(mask), 1.0))
