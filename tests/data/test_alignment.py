"""Character-offset alignment of one text under two tokenizers, built with the batch."""

import numpy as np
import pytest

from dkd_jax.data import alignment
from dkd_jax.data import arithmetic
from dkd_jax.data import chain
from dkd_jax.data import packing
from dkd_jax.models import tokenizer as tok_lib


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
  train, _ = chain.make_splits(500, 4, chain.ChainConfig())
  texts = [r["question"] + "\n" + r["solution"] for r in train]
  return tok_lib.train_bpe(texts, str(tmp_path_factory.mktemp("bpe")), 96)


def _chunks(tok, ids, seg):
  out = {}
  for i, c in zip(ids, seg):
    if c >= 0:
      out[c] = out.get(c, "") + tok.decode([i])
  return out


def test_chunks_have_the_same_text_on_both_sides(bpe):
  char = arithmetic.CharTokenizer()
  text = "3*4=12\n?3*4=12\n7+12=19\n#### 19"
  s_ids, t_ids = bpe.encode(text), char.encode(text)
  assert len(s_ids) < len(t_ids)  # BPE tokens span several characters
  ends_s, _ = alignment.token_ends(bpe, s_ids, "student")
  ends_t, _ = alignment.token_ends(char, t_ids, "teacher")
  ch_s, ch_t, n = alignment.align(ends_s, ends_t)
  assert n == len(s_ids)  # every BPE boundary is a character boundary
  a, b = _chunks(bpe, s_ids, ch_s), _chunks(char, t_ids, ch_t)
  assert a == b and "".join(a[c] for c in range(n)) == text
  # two BPE tokenisations cut differently: chunks join tokens on both sides
  ch_1, ch_2, m = alignment.align([2, 4, 6], [1, 4, 5, 6])
  assert m == 2 and list(ch_1) == [0, 0, 1] and list(ch_2) == [0, 0, 1, 1]


def test_batch_arrays_one_tokenizer_is_one_token_per_chunk():
  char = arithmetic.CharTokenizer()
  prompts = [[char.bos_id] + char.encode("1+2=\n"), [char.bos_id] + char.encode("3*4=\n")]
  resp = [char.encode("1+2=3\n#### 3") + [char.eos_id], char.encode("3*4=12")]
  R = max(len(r) for r in resp)
  P = max(len(p) for p in prompts)
  pad = lambda rows, w: np.array([r + [0] * (w - len(r)) for r in rows])
  tokens, mask = packing.pack(
    pad(prompts, P), [len(p) for p in prompts], pad(resp, R), [len(r) for r in resp], 0
  )
  out, _ = alignment.xtok_arrays(tokens, mask, prompts, char, char, tokens.shape[1])
  np.testing.assert_array_equal(out["xtok_tokens"], tokens)
  np.testing.assert_array_equal(out["xtok_seg_s"], out["xtok_seg_t"])
  live = out["xtok_seg_s"] >= 0
  np.testing.assert_array_equal(live, mask > 0)
  assert list(out["xtok_seg_s"][0][live[0]]) == list(range(len(resp[0])))  # EOS: own chunk


def test_teacher_width_cuts_whole_chunks(bpe):
  char = arithmetic.CharTokenizer()
  prompt_s, prompt_t = [bpe.bos_id] + bpe.encode("1+2=\n"), [1] + char.encode("1+2=\n")
  resp = bpe.encode("1+2=3\n?1+2=3\n#### 3") + [bpe.eos_id]
  tokens, mask = packing.pack(
    np.array([prompt_s]), [len(prompt_s)], np.array([resp]), [len(resp)], 0
  )
  width = len(prompt_t) + 7
  out, _ = alignment.xtok_arrays(tokens, mask, [prompt_t], bpe, char, width)
  seg_s, seg_t = out["xtok_seg_s"][0], out["xtok_seg_t"][0]
  kept_s, kept_t = set(seg_s[seg_s >= 0]), set(seg_t[seg_t >= 0])
  assert kept_s == kept_t and 0 < len(kept_s) < len(resp)
  t_tokens = out["xtok_tokens"][0]
  s_text = "".join(bpe.decode([tokens[0, t + 1]]) for t in np.flatnonzero(seg_s >= 0))
  t_text = "".join(char.decode([t_tokens[t + 1]]) for t in np.flatnonzero(seg_t >= 0))
  assert s_text == t_text and len(t_text) <= 7


def test_decodings_that_disagree_are_reported_with_the_text(bpe):
  char = arithmetic.CharTokenizer()
  with pytest.raises(alignment.DecodeMismatch, match=r"'A1\+2'"):
    alignment.encode_exact(bpe, "A1+2", "teacher")  # 'A' is outside the BPE alphabet
  with pytest.raises(alignment.DecodeMismatch, match="cannot encode the text 'x=1'"):
    alignment.encode_exact(char, "x=1", "teacher")

  class Lower(arithmetic.CharTokenizer):  # a normalising tokenizer: 'Q' reads as 'q'
    def decode(self, ids):
      return super().decode(ids).lower()

  with pytest.raises(alignment.DecodeMismatch, match="decodes back as 'q: 1'"):
    alignment.encode_exact(Lower(), "Q: 1", "teacher")


def test_vocab_map(bpe):
  char = arithmetic.CharTokenizer()
  V = char.vocab_size
  ident = alignment.vocab_map(char, char, V + 3, V + 2)  # model vocabs padded past V
  assert list(ident[: V + 2]) == list(range(V + 2)) and ident[V + 2] == -1
  m = alignment.vocab_map(char, bpe, V)
  for v in range(3, V):
    if m[v] >= 0:
      assert bpe.decode([int(m[v])]) == char.decode([v])
  assert m[char.eos_id] == bpe.eos_id and m[char.encode("7")[0]] >= 0
  assert m[char.encode("Q")[0]] == -1


def test_a_textless_sampled_token_ends_the_text_as_a_penalty_chunk(bpe):
  """A sampled BOS/PAD has no text: the text before it is aligned, it becomes a chunk the
  teacher scores at LOGP_FLOOR, and what follows is outside the loss."""
  char = arithmetic.CharTokenizer()
  prompt_s, prompt_t = [bpe.bos_id] + bpe.encode("1+2=\n"), [1] + char.encode("1+2=\n")
  head = bpe.encode("1+2=3")
  resp = head + [bpe.bos_id] + bpe.encode("7") + [bpe.eos_id]
  tokens, mask = packing.pack(
    np.array([prompt_s]), [len(prompt_s)], np.array([resp]), [len(resp)], 0
  )
  out, _ = alignment.xtok_arrays(tokens, mask, [prompt_t], bpe, char, 64)
  seg_s = out["xtok_seg_s"][0][len(prompt_s) - 1 : len(prompt_s) - 1 + len(resp)]
  n = len(head)
  assert list(seg_s) == list(range(n)) + [n, -1, -1] and out["xtok_pen"][0] == n
  assert "".join(char.decode([t]) for t in out["xtok_tokens"][0][len(prompt_t) :] if t) == "1+2=3"


def _split_one_token(bpe, ids):
  """ids with its first multi-character token spelled as two shorter tokens."""
  for j, i in enumerate(ids):
    text = bpe.decode([i])
    for cut in range(1, len(text)):
      a, b = bpe.encode(text[:cut]), bpe.encode(text[cut:])
      if len(a) == 1 and len(b) == 1:
        return ids[:j] + a + b + ids[j + 1 :], j
  raise AssertionError("no token of the text splits into two tokens")


def test_a_noncanonical_spelling_ends_the_text_as_a_penalty_chunk(bpe):
  """The teacher scores text, so '=' then '1' would share '=1's probability: per-chunk
  reverse KL drifts a sampling student to short-token spellings (issue 24). The first id
  that departs from the canonical spelling is a penalty chunk; what follows is out."""
  char = arithmetic.CharTokenizer()
  prompt_s, prompt_t = [bpe.bos_id] + bpe.encode("1+2=\n"), [1] + char.encode("1+2=\n")
  canon = bpe.encode("3*4=12\n#### 12")
  odd, j = _split_one_token(bpe, canon)
  assert bpe.decode(odd) == bpe.decode(canon) and odd != canon
  assert alignment.first_noncanonical(bpe, odd + [bpe.eos_id], None) == j
  assert alignment.first_noncanonical(bpe, canon + [bpe.eos_id], None) is None
  assert alignment.first_noncanonical(bpe, canon[:3] + [bpe.bos_id], 3) == 3  # textless first
  rows = [odd + [bpe.eos_id], canon + [bpe.eos_id]]
  R = max(map(len, rows))
  tokens, mask = packing.pack(
    np.array([prompt_s] * 2),
    [len(prompt_s)] * 2,
    np.array([r + [0] * (R - len(r)) for r in rows]),
    list(map(len, rows)),
    0,
  )
  out, noncanonical = alignment.xtok_arrays(tokens, mask, [prompt_t] * 2, bpe, char, 64)
  at = len(prompt_s) - 1
  seg = list(out["xtok_seg_s"][0][at : at + len(rows[0])])
  assert seg == list(range(j)) + [j] + [-1] * (len(rows[0]) - j - 1)
  assert out["xtok_pen"][0] == j and out["xtok_pen"][1] == -1
  assert list(out["xtok_seg_s"][1][at : at + len(rows[1])]) == list(range(len(rows[1])))
  assert list(noncanonical) == [True, False]


def test_a_bpe_teacher_aligns_by_its_offsets(bpe):
  """The other direction (character student, BPE teacher): the teacher side uses the
  library's offsets; chunks join several student characters."""
  char = arithmetic.CharTokenizer()
  text = "7+12=19\n?7+12=19\n#### 19"
  ids, ends = alignment.teacher_encode(bpe, text)
  ends_s, _ = alignment.token_ends(char, char.encode(text), "student")
  np.testing.assert_array_equal(ends, alignment.token_ends(bpe, ids, "teacher")[0])
  ch_s, ch_t, n = alignment.align(ends_s, ends)
  assert n == len(ids) < len(text)
  assert _chunks(char, char.encode(text), ch_s) == _chunks(bpe, ids, ch_t)


def test_retokenize_a_teacher_response_for_the_student(bpe):
  """Sequence-level KD's data: the teacher's text in the student's ids, EOS when finished,
  cut at the first id with no text."""
  char = arithmetic.CharTokenizer()
  text = "3*4=12\n#### 12"
  done = char.encode(text) + [char.eos_id]
  assert alignment.retokenize(char, bpe, done, True) == bpe.encode(text) + [bpe.eos_id]
  assert alignment.retokenize(char, bpe, char.encode(text), False) == bpe.encode(text)
  cut = char.encode("3*4") + [char.bos_id] + char.encode("=12") + [char.eos_id]
  assert alignment.retokenize(char, bpe, cut, True) == bpe.encode("3*4")
