"""Aligning one text under two tokenizers: chunks whose character boundaries coincide.

Cross-tokenizer distillation compares log-probabilities of the same text. Each token's
characters are its decoded piece; the end offsets of both token sequences are computed,
their common offsets are the chunk boundaries, and every token belongs to the chunk that
ends at the first common boundary at or after its own end. `xtok_arrays` turns the packed
student batch (prompt ++ response, `data.packing`) into what the train step consumes:
the teacher's tokens of the same prompt and response text, and per target position the
chunk it predicts (segment ids, -1 outside the loss), all padded to static shapes.

Host-side numpy, built with the batch. Text the two tokenizers cannot both reproduce
(normalisation, byte fallback, unknown characters) raises `DecodeMismatch` naming the
text, never a silent misalignment.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from dkd_jax.data.protocols import Tokenizer

NO_CHUNK = -1
# The teacher's log-probability of a chunk that has no text (a sampled PAD / BOS / padded
# id): it cannot produce it, so a large finite penalty stands in for log 0.
LOGP_FLOOR = -20.0


class DecodeMismatch(ValueError):
  """Two tokenizers (or one tokenizer's pieces and its whole decoding) disagree on a text."""


@functools.lru_cache(maxsize=8)
def _pieces(tok: Tokenizer) -> tuple[str, ...]:
  """The decoded text of every id alone (specials as their literal text)."""
  return tuple(tok.decode([i]) for i in range(tok.vocab_size))


def pieces(tok: Tokenizer) -> tuple[str, ...]:
  return _pieces(tok)


def token_ends(tok: Tokenizer, ids: Sequence[int], role: str) -> tuple[np.ndarray, str]:
  """(character end offset of each id, the text): the ids' pieces must concatenate to the
  tokenizer's own decoding, else offsets would point into the wrong characters."""
  table = pieces(tok)
  ids = [int(i) for i in ids]
  text = "".join(table[i] for i in ids)
  whole = tok.decode(ids)
  if whole != text:
    raise DecodeMismatch(
      f"{role} tokenizer: decoding ids one by one gives {text!r} but decoding them "
      f"together gives {whole!r}; per-token character offsets are undefined (byte "
      "fallback or a normalising decoder)"
    )
  return np.cumsum([len(table[i]) for i in ids], dtype=np.int64), text


def encode_exact(tok: Tokenizer, text: str, role: str) -> list[int]:
  """`tok.encode(text)`, refusing a tokenizer whose decoding does not give `text` back."""
  try:
    ids = tok.encode(text)
  except ValueError as e:
    raise DecodeMismatch(f"{role} tokenizer cannot encode the text {text!r}: {e}") from None
  back = "".join(pieces(tok)[i] for i in ids)
  if back != text or tok.decode(ids) != text:
    raise DecodeMismatch(
      f"the {role} tokenizer does not reproduce the text: {text!r} decodes back as "
      f"{tok.decode(ids)!r} (normalisation, byte fallback or unknown characters); the two "
      "tokenizers would score different strings"
    )
  return ids


def teacher_encode(tok: Tokenizer, text: str) -> tuple[list[int], np.ndarray]:
  """(teacher ids of `text`, their character end offsets). A tokenizer with
  `encode_offsets` (`HFTokenizer`) gives offsets that stay right inside multi-byte
  characters; otherwise the ids' decoded pieces must add up (`token_ends`). Either way the
  ids must decode back to `text` (`DecodeMismatch` otherwise)."""
  if not hasattr(tok, "encode_offsets"):
    ids = encode_exact(tok, text, "teacher")
    return ids, token_ends(tok, ids, "teacher")[0]
  ids, ends = tok.encode_offsets(text)
  ends = np.maximum.accumulate(np.asarray(ends, np.int64)) if ends else np.zeros(0, np.int64)
  if tok.decode(ids) != text or (len(ends) and ends[-1] != len(text)):
    raise DecodeMismatch(
      f"the teacher tokenizer does not reproduce the text: {text!r} decodes back as "
      f"{tok.decode(ids)!r} (normalisation, byte fallback or unknown characters); the two "
      "tokenizers would score different strings"
    )
  return ids, ends


def align(ends_s, ends_t) -> tuple[np.ndarray, np.ndarray, int]:
  """(chunk of each student token, chunk of each teacher token, number of chunks) for two
  tokenisations of one text, given each token's character end offset."""
  ends_s, ends_t = np.asarray(ends_s, np.int64), np.asarray(ends_t, np.int64)
  last_s = int(ends_s[-1]) if len(ends_s) else 0
  last_t = int(ends_t[-1]) if len(ends_t) else 0
  if last_s != last_t:
    raise DecodeMismatch(f"texts differ in length: {last_s} vs {last_t} characters")
  common = np.intersect1d(ends_s, ends_t)
  return np.searchsorted(common, ends_s), np.searchsorted(common, ends_t), len(common)


def vocab_map(
  teacher: Tokenizer, student: Tokenizer, teacher_vocab: int, student_vocab: int | None = None
) -> np.ndarray:
  """[teacher_vocab] int32: the student id whose decoded string equals teacher id v's, or
  -1 (unshared, ambiguous, or a padded model id). EOS maps to EOS whatever its text. One
  tokenizer (or an equal token list) maps every model id to itself, padded ids included
  (up to the smaller model vocabulary), which is what the same-vocabulary kernel compares."""
  out = np.full((teacher_vocab,), -1, np.int32)
  if teacher is student or teacher.tokens() == student.tokens():
    n = min(teacher_vocab, teacher_vocab if student_vocab is None else student_vocab)
    out[:n] = np.arange(n)
    return out
  by_text: dict[str, list[int]] = {}
  for i, p in enumerate(pieces(student)):
    by_text.setdefault(p, []).append(i)
  counts: dict[str, int] = {}
  for p in pieces(teacher):
    counts[p] = counts.get(p, 0) + 1
  for v, p in enumerate(pieces(teacher)[:teacher_vocab]):
    ids = by_text.get(p, [])
    if p and len(ids) == 1 and counts[p] == 1:
      out[v] = ids[0]
  out[teacher.eos_id] = student.eos_id
  return out


def _response(tokens_T, mask_T) -> tuple[int, int]:
  """(prompt length p, response length r) of one packed row: mask[t] = 1 for t in [p-1, p+r-1)."""
  on = np.flatnonzero(mask_T > 0)
  if not len(on):
    return 0, 0
  return int(on[0]) + 1, len(on)


def textless(tok: Tokenizer, i: int) -> bool:
  """A sampled id with no text of its own the other model could score: PAD, BOS, a padded
  model id, or a piece of a multi-byte character (it decodes alone to U+FFFD; such a
  token is penalised even when the next one would complete the character)."""
  return i in (tok.pad_id, tok.bos_id) or i >= tok.vocab_size or "\ufffd" in pieces(tok)[i]


def first_noncanonical(tok: Tokenizer, resp: list[int], bad: int | None) -> int | None:
  """The first response position (before `bad`, the first textless id, and any EOS) whose
  id departs from `tok.encode` of the response's text, else `bad`. The teacher scores
  text, and many spellings of one text (BPE '=' then '1', or '=1') share its probability,
  so per-chunk reverse KL against it rewards the spellings with the most short tokens;
  the student, sampling its own ids, drifts to spellings its data never used (issue 24:
  every row within 50 steps, Avg@8 0.16 -> 0.04). The target is therefore the teacher's
  text distribution on canonical spellings only (a normalised distribution over token
  sequences): a departing id is a penalty chunk like a textless one."""
  end = bad if bad is not None else len(resp)
  if end and resp[end - 1] == tok.eos_id:
    end -= 1
  canon = tok.encode(tok.decode(resp[:end]))
  j = next((j for j, (a, b) in enumerate(zip(resp[:end], canon)) if a != b), None)
  if j is None and len(canon) != end:  # one is a prefix of the other: they part at the end
    j = min(len(canon), end)
    j = j if j < end else None
  return j if j is not None else bad


def _row(
  tok_s, tok_t, resp_s, prompt_t, width_t: int
) -> tuple[list, np.ndarray, np.ndarray, int, bool]:
  """One row: (teacher tokens, chunk of each student response token, chunk of each teacher
  response token, the penalty chunk or -1, whether the spelling departed). EOS is a chunk
  of its own. A textless student
  token (`textless`), or the first one that departs from the text's canonical spelling
  (`first_noncanonical`), ends the text: it is a chunk the teacher scores at `LOGP_FLOOR`
  (the penalty chunk) and what follows it is outside the loss. Chunks cut by the teacher's
  width are -1."""
  resp_s = [int(i) for i in resp_s]
  textless_at = next((j for j, i in enumerate(resp_s) if textless(tok_s, i)), None)
  bad = first_noncanonical(tok_s, resp_s, textless_at)
  eos = bad is None and len(resp_s) > 0 and resp_s[-1] == tok_s.eos_id
  body = resp_s[:bad] if bad is not None else resp_s[:-1] if eos else resp_s
  ends_s, text = token_ends(tok_s, body, "student")
  t_body, ends_t = teacher_encode(tok_t, text)
  ch_s, ch_t, n = align(ends_s, ends_t)
  pen = NO_CHUNK
  if eos:
    t_body = t_body + [tok_t.eos_id]
    ch_s, ch_t = np.append(ch_s, n), np.append(ch_t, n)
  elif bad is not None:
    pen = n
    ch_s = np.concatenate([ch_s, [n], np.full(len(resp_s) - bad - 1, NO_CHUNK)])
  room = width_t - len(prompt_t)
  if room < 0:
    raise ValueError(
      f"teacher prompt of {len(prompt_t)} tokens does not fit the teacher width {width_t}; "
      "raise config.objective.xtok.teacher_len (0 = twice the student's prompt + response)"
    )
  if len(t_body) > room:  # whole chunks only: drop every chunk the cut touches
    cut = ch_t[room]
    t_body, ch_t = t_body[:room], ch_t[:room]
    ch_s = np.where(ch_s >= cut, NO_CHUNK, ch_s)
    ch_t = np.where(ch_t >= cut, NO_CHUNK, ch_t)
    pen = NO_CHUNK
  return list(prompt_t) + t_body, ch_s.astype(np.int64), ch_t, pen, bad != textless_at


def xtok_arrays(
  tokens_BxT,
  loss_mask_BxT,
  teacher_prompts: Sequence[Sequence[int]],
  student_tok: Tokenizer,
  teacher_tok: Tokenizer,
  width_t: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """The cross-tokenizer part of one batch, for one teacher.

  tokens_BxT / loss_mask_BxT: the packed student batch; teacher_prompts[b]: row b's prompt
  in teacher ids (BOS included when the teacher wants one). Returns `xtok_tokens` [B, U]
  (teacher prompt ++ the response text re-encoded by the teacher ++ EOS when the student's
  row ended with one), `xtok_seg_s` [B, T] and `xtok_seg_t` [B, U]: the chunk predicted at
  each target position (position t predicts t+1), -1 outside the loss; `xtok_pen` [B]: the
  row's penalty chunk (a textless student token, scored at `LOGP_FLOOR`) or -1. Also
  returns, for the host's log only, [B] bool: the row's spelling departed from the
  canonical one (`first_noncanonical`; the loss shows it only as a penalty chunk)."""
  B, T = tokens_BxT.shape
  out_t = np.full((B, width_t), teacher_tok.pad_id, np.int32)
  seg_s = np.full((B, T), NO_CHUNK, np.int32)
  seg_t = np.full((B, width_t), NO_CHUNK, np.int32)
  pen = np.full((B,), NO_CHUNK, np.int32)
  noncanonical = np.zeros((B,), bool)
  for b in range(B):
    p, r = _response(tokens_BxT[b], loss_mask_BxT[b])
    if r == 0:
      continue
    row, ch_s, ch_t, pen[b], noncanonical[b] = _row(
      student_tok, teacher_tok, tokens_BxT[b, p : p + r], teacher_prompts[b], width_t
    )
    out_t[b, : len(row)] = row
    seg_s[b, p - 1 : p - 1 + r] = ch_s
    pt = len(teacher_prompts[b])
    seg_t[b, pt - 1 : pt - 1 + len(ch_t)] = ch_t
  arrays = {"xtok_tokens": out_t, "xtok_seg_s": seg_s, "xtok_seg_t": seg_t, "xtok_pen": pen}
  return arrays, noncanonical


def retokenize(
  tok_from: Tokenizer, tok_to: Tokenizer, ids: Sequence[int], finished: bool
) -> list[int]:
  """A response in one tokenizer's ids (EOS trimmed) as the other's: its text up to the
  first textless id, encoded, plus the other's EOS when the response had finished (and was
  not cut at a textless id). What sequence-level KD trains the student on."""
  ids = [int(i) for i in ids]
  if ids and finished and ids[-1] == tok_from.eos_id:
    ids = ids[:-1]
  cut = next((j for j, i in enumerate(ids) if textless(tok_from, i) or i == tok_from.eos_id), None)
  text = tok_from.decode(ids[:cut] if cut is not None else ids)
  out = tok_to.encode(text)
  return out + ([tok_to.eos_id] if finished and cut is None else [])


def teacher_prompt_ids(tok: Tokenizer, question: str) -> list[int]:
  """A question as the teacher's prompt: its rendering, encoded, BOS first when wanted."""
  ids = tok.encode(tok.render_prompt(question))
  return ([tok.bos_id] if tok.bos_id is not None else []) + ids
