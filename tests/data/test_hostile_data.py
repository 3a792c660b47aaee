"""Property-based tests (hypothesis) of the data readers against hostile files: truncated
lines, wrong types, missing fields, empty or enormous answers, odd unicode, invalid UTF-8,
NaN numbers; the TFDS builder; NaN in the cached teacher top-k. Each record is read
correctly, or the file is refused at start with the file:line of the first bad record
(`DataError`); nothing else (no other exception, no silently wrong record)."""

import json
import math
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from dkd_jax.data import sources
from dkd_jax.data import topk_store

SETTINGS = settings(
  max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text with odd unicode: any code point but unpaired surrogates (those are "bad" below).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
  lambda s: s.strip()
)
NUMBER = st.one_of(st.integers(-(10**12), 10**12), st.integers(0, 999).map(float))
ENORMOUS = st.integers(0, 9).map(lambda d: str(d) * 200_000)

BAD_KINDS = (
  "truncated",
  "not_an_object",
  "missing_question",
  "wrong_type",
  "empty_answer",
  "nan_answer",
  "surrogate",
  "invalid_utf8",
)


@st.composite
def rows(draw):
  """[(kind, line bytes, expected record or None)] for a MATH-format JSONL file."""
  out = []
  for _ in range(draw(st.integers(1, 6))):
    q, sol = draw(TEXT), draw(TEXT)
    ans = draw(st.one_of(TEXT, NUMBER, ENORMOUS))
    good = {"problem": q, "solution": sol, "answer": ans}
    kind = draw(st.sampled_from(("good",) * 4 + BAD_KINDS))
    if kind == "good":
      want = ans.strip() if isinstance(ans, str) else str(int(ans) if ans == int(ans) else ans)
      line = json.dumps(good).encode()
      out.append((kind, line, (q, sol, want)))
      continue
    out.append((kind, _bad_line(draw, kind, good), None))
  return out


def _bad_line(draw, kind: str, good: dict) -> bytes:
  """One record line broken the way `kind` says."""
  text = json.dumps(good)
  if kind == "truncated":
    return text.encode()[: draw(st.integers(1, 10))]
  if kind == "not_an_object":
    return json.dumps([good["problem"], good["answer"]]).encode()
  if kind == "missing_question":
    return json.dumps({"solution": good["solution"], "answer": "1"}).encode()
  if kind == "wrong_type":
    value = draw(st.sampled_from([1, None, [good["problem"]]]))
    return json.dumps(dict(good, problem=value)).encode()
  if kind == "empty_answer":
    return json.dumps(dict(good, answer=" ")).encode()
  if kind == "nan_answer":
    return json.dumps(dict(good, answer=draw(st.sampled_from([math.nan, math.inf])))).encode()
  if kind == "surrogate":
    return text.replace('"problem": "', '"problem": "\\ud800', 1).encode()
  return text.encode()[:-1] + b"\xff}"  # invalid_utf8


def _write(lines, bom=False) -> str:
  fd, path = tempfile.mkstemp(suffix=".jsonl")
  with os.fdopen(fd, "wb") as f:
    f.write((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
  return path


def _check(path, spec, read):
  bad = [i for i, (kind, _, _) in enumerate(spec) if kind != "good"]
  if bad:
    with pytest.raises(sources.DataError) as e:
      read(path)
    assert e.value.path == path and e.value.line == bad[0] + 1, (spec[bad[0]][0], str(e.value))
    assert "\n" not in str(e.value)
  else:
    records = read(path)
    got = [(r["question"], r["solution"], r["answer"]) for r in records]
    assert got == [want for _, _, want in spec]


@SETTINGS
@given(rows(), st.booleans())
def test_jsonl_reader_reads_or_refuses_at_the_first_bad_line(spec, bom):
  path = _write([line for _, line, _ in spec], bom)
  try:
    _check(path, spec, lambda p: sources.read_records(p, "math"))
  finally:
    os.remove(path)


@SETTINGS
@given(rows())
def test_json_list_reader_names_the_line_a_bad_element_starts_on(spec):
  if any(k in ("truncated", "invalid_utf8") for k, _, _ in spec):
    return  # a cut element breaks the list's syntax itself (tested above, line-wise)
  fd, path = tempfile.mkstemp(suffix=".json")
  with os.fdopen(fd, "wb") as f:
    f.write(b"[\n" + b",\n".join(line for _, line, _ in spec) + b"\n]\n")
  bad = [i for i, (k, _, _) in enumerate(spec) if k != "good"]
  try:
    if bad:
      with pytest.raises(sources.DataError) as e:
        sources.read_records(path, "math")
      assert e.value.line == bad[0] + 2
    else:
      assert len(sources.read_records(path, "math")) == len(spec)
  finally:
    os.remove(path)


@settings(max_examples=6, deadline=None)
@given(rows())
def test_tfds_builder_gives_the_plain_readers_records_or_their_error(spec):
  from dkd_jax.data import tfds_math

  path = _write([line for _, line, _ in spec])
  data_dir = tempfile.mkdtemp()
  try:
    _check(
      path,
      spec,
      lambda p: tfds_math.records_from_file(p, "math", data_dir=data_dir, log=lambda _: None),
    )
  finally:
    os.remove(path)


@settings(max_examples=25, deadline=None)
@given(
  st.lists(st.integers(1, 6), min_size=1, max_size=5),
  st.one_of(st.none(), st.tuples(st.integers(0, 4), st.sampled_from([np.nan, np.inf, -np.inf]))),
)
def test_topk_cache_with_nan_is_refused_at_start_naming_the_record(lengths, poison):
  rows_ = []
  for i, n in enumerate(lengths):
    logp = np.sort(np.log(np.random.default_rng(i).dirichlet(np.ones(4), n)), axis=1)[:, ::-1]
    rows_.append((np.tile(np.arange(4, dtype=np.int32), (n, 1)), logp.astype(np.float32)))
  if poison is not None and poison[0] < len(rows_):
    rows_[poison[0]][1][0, 1] = poison[1]
  path = os.path.join(tempfile.mkdtemp(), "topk.array_record")
  topk_store.write(path, rows_)
  source = topk_store.TopKSource(path, expected_len=len(lengths))
  if poison is not None and poison[0] < len(rows_):
    with pytest.raises(ValueError, match=rf"record {poison[0]} .*non-finite log-prob"):
      source.check(vocab=4, lengths=lengths)
  else:
    source.check(vocab=4, lengths=lengths)
    with pytest.raises(ValueError, match="token id outside"):
      source.check(vocab=3, lengths=lengths)
    with pytest.raises(ValueError, match="rows for a response"):
      source.check(vocab=4, lengths=[n + 1 for n in lengths])


@settings(max_examples=40, deadline=None)
@given(
  st.lists(st.text("0123456789+-*/=()., ", min_size=1, max_size=40), min_size=1, max_size=5),
  st.integers(2, 30),
  st.booleans(),
)
def test_prompts_longer_than_the_limit_are_cut_or_refused_at_start(questions, limit, truncate):
  from dkd_jax.data import arithmetic
  from dkd_jax.data import pipeline

  tok = arithmetic.CharTokenizer()
  records = [{"id": f"f-{i}", "question": q, "answer": "1"} for i, q in enumerate(questions)]
  lens = [1 + len(tok.encode(tok.render_prompt(q))) for q in questions]
  if not truncate and max(lens) > limit:
    first = next(i for i, n in enumerate(lens) if n > limit)
    with pytest.raises(ValueError, match=f"record 'f-{first}'.*max_prompt_len={limit}"):
      pipeline.encode_records(records, tok, max_prompt_len=limit, truncate=truncate)
    return
  enc = pipeline.encode_records(records, tok, max_prompt_len=limit, truncate=truncate)
  for ids, n, cut in zip(enc.prompt_ids, lens, enc.prompt_truncated_N):
    assert len(ids) == min(n, limit) and bool(cut) == (n > limit)
    assert ids[0] == tok.bos_id and np.all((ids >= 0) & (ids < tok.vocab_size))
