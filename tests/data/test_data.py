"""Tests for dkd_jax.data: arithmetic task, tokenizer, readers, TFDS builder, grain pipelines."""

import json
import sys

import numpy as np
import pytest

from dkd_jax.data import arithmetic
from dkd_jax.data import pipeline
from dkd_jax.data import sources
from dkd_jax.data.arithmetic import ArithmeticConfig
from dkd_jax.data.arithmetic import CharTokenizer
from dkd_jax.data.protocols import Tokenizer
from dkd_jax.data.sources import DataError


class ByteTokenizer:
  """UTF-8 bytes + 3 specials: lets real GSM8K/MATH text through the pipeline."""

  vocab_size, pad_id, bos_id, eos_id = 259, 256, 257, 258

  def encode(self, text):
    return list(text.encode("utf-8"))

  def decode(self, ids):
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

  def render_prompt(self, question):
    return f"Question: {question}\nAnswer:"

  def tokens(self):
    return [chr(i) for i in range(256)] + ["<pad>", "<bos>", "<eos>"]


# ----------------------------------------------------------------- arithmetic


def test_arithmetic_deterministic_and_prefix_stable():
  a = arithmetic.make_records(50, seed=3)
  assert a == arithmetic.make_records(50, seed=3)
  assert a != arithmetic.make_records(50, seed=4)
  # Problem i depends on (seed, i) only: growing the set keeps earlier problems.
  assert arithmetic.make_records(10, seed=3) == a[:10]
  assert arithmetic.make_records(5, seed=3, start=20) == a[20:25]
  assert len({r["id"] for r in a}) == 50


def test_arithmetic_answers_verify():
  for r in arithmetic.make_records(300, seed=0):
    expr = r["question"]
    assert expr.endswith("=")
    # Python's own precedence is the reference for '*' before '+'/'-'.
    assert eval(expr[:-1]) == int(r["answer"])
    lines = r["solution"].split("\n")
    assert lines[-1] == f"#### {r['answer']}"
    for step in lines[:-1]:  # every worked step is itself correct
      lhs, rhs = step.split("=")
      assert eval(lhs) == int(rhs)
    assert arithmetic.score(r["solution"], r["answer"])
    assert not arithmetic.score(r["solution"], str(int(r["answer"]) + 1))
  assert not arithmetic.score("1+2=3", "3")  # no final line
  assert not arithmetic.score("#### x", "3")
  assert arithmetic.score("7*4=28\n#### 28\n", "28")


def test_arithmetic_lengths_vary_and_difficulty():
  recs = arithmetic.make_records(400, seed=1)
  n_operands = {len(r["solution"].split("\n")) for r in recs}  # steps + final line
  assert n_operands == {2, 3, 4, 5}
  lengths = [len(r["solution"]) for r in recs]
  assert max(lengths) >= 2 * min(lengths)
  easy = arithmetic.make_records(50, seed=1, config=ArithmeticConfig(max_operands=2))
  assert all(len(r["solution"].split("\n")) == 2 for r in easy)
  big = arithmetic.make_records(200, seed=1, config=ArithmeticConfig(max_digits=3, ops="+-"))
  assert any(len(s) == 3 for r in big for s in r["question"][:-1].replace("-", "+").split("+"))
  with pytest.raises(ValueError):
    ArithmeticConfig(min_operands=1)
  with pytest.raises(ValueError):
    ArithmeticConfig(ops="+/")


def test_char_tokenizer_round_trip():
  tok = CharTokenizer()
  assert isinstance(tok, Tokenizer)
  assert tok.vocab_size == len(tok.tokens()) <= 32
  assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
  for r in arithmetic.make_records(100, seed=2):
    for text in (tok.render_prompt(r["question"]), r["solution"]):
      ids = tok.encode(text)
      assert tok.decode(ids) == text
      assert all(tok.tokens()[i] == c for i, c in zip(ids, text))
      assert max(ids) < tok.vocab_size and min(ids) >= 3  # no specials from text
  assert tok.decode([tok.bos_id, tok.encode("7")[0], tok.eos_id]) == "<bos>7<eos>"
  with pytest.raises(ValueError, match="'z'"):
    tok.encode("1+z")


# -------------------------------------------------------------------- sources


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


GOOD_GSM = json.dumps({"question": "q?", "answer": "a\n#### 1,234"})


@pytest.mark.parametrize(
  "fmt,lines,bad_line,what",
  [
    ("gsm8k", [GOOD_GSM, GOOD_GSM, '{"question": "q", "answer": '], 3, "invalid JSON"),
    ("gsm8k", [GOOD_GSM, json.dumps({"question": "q"})], 2, "missing field 'answer'"),
    ("gsm8k", [json.dumps({"question": 5, "answer": "#### 1"})], 1, "must be a string"),
    ("gsm8k", [GOOD_GSM, json.dumps({"question": "q", "answer": "no final"})], 2, "####"),
    ("gsm8k", [GOOD_GSM, "", GOOD_GSM], 2, "blank line"),
    ("gsm8k", [GOOD_GSM, "[1, 2]"], 2, "expected a JSON object"),
    ("aime", [json.dumps({"problem": "p", "answer": True})], 1, "must be a string"),
    (
      "amc",
      [json.dumps({"question": "p", "answer": 1.0}), json.dumps({"question": "", "answer": 2})],
      2,
      "empty",
    ),
    ("math", [json.dumps({"problem": "p", "solution": "s", "answer": [1]})], 1, "'answer'"),
  ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, fmt, lines, bad_line, what):
  path = _write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
  with pytest.raises(DataError, match=what) as info:
    sources.read_records(path, fmt)
  assert info.value.line == bad_line
  assert str(info.value).startswith(f"{path}:{bad_line}: ")
  assert isinstance(info.value, ValueError)


def test_malformed_json_list_names_line(tmp_path):
  good = {"problem": "p", "solution": "s", "answer": "1"}
  text = json.dumps([good, good, {"problem": "p", "answer": "2"}], indent=2)
  path = _write(tmp_path, "math.json", text)
  with pytest.raises(DataError, match="missing field 'solution'") as info:
    sources.read_math(path)
  assert info.value.line == text.split("\n").index("  {", 10) + 1  # third element's line
  path = _write(tmp_path, "broken.json", '[\n {"problem": "p",\n  "solution" "s"}\n]')
  with pytest.raises(DataError, match="invalid JSON") as info:
    sources.read_math(path)
  assert info.value.line == 3
  assert sources.read_math(_write(tmp_path, "ok.json", json.dumps([good])))[0]["answer"] == "1"


def test_small_files_parse(tmp_path):
  gsm = sources.read_gsm8k(_write(tmp_path, "g.jsonl", GOOD_GSM + "\n\n"))  # blank at EOF ok
  assert gsm == [{"id": "g-0", "question": "q?", "answer": "1234", "solution": "a\n#### 1,234"}]
  amc = sources.read_amc(
    _write(
      tmp_path,
      "a.jsonl",
      json.dumps({"id": 7, "question": "q", "answer": 27.0})
      + "\n"
      + json.dumps({"question": "q", "answer": 2.5}),
    )
  )
  assert [(r["id"], r["answer"]) for r in amc] == [("a-7", "27"), ("a-1", "2.5")]
  with pytest.raises(DataError, match="no records"):
    sources.read_aime(_write(tmp_path, "e.jsonl", ""))


@pytest.mark.parametrize(
  "name,count",
  [("gsm8k_train", 7473), ("gsm8k_test", 1319), ("math500", 500), ("aime24", 30), ("amc23", 40)],
)
def test_shared_readers(shared_data, name, count):
  recs = sources.read_shared(name, shared_data)
  assert len(recs) == count
  assert len({r["id"] for r in recs}) == count
  for r in recs:
    assert set(r) == {"id", "question", "answer", "solution"}
    assert r["question"].strip() and r["answer"].strip()
  if name.startswith("gsm8k"):
    assert all(float(r["answer"]) == float(r["answer"]) for r in recs)  # numeric, no commas
    assert recs[0]["solution"].endswith("#### " + recs[0]["answer"])
  if name in ("aime24", "amc23"):
    assert all(r["answer"].lstrip("-").isdigit() for r in recs)


# ----------------------------------------------------------------------- tfds


def test_tfds_builder_without_tensorflow(shared_data, tmp_path):
  tfds_math = pytest.importorskip("dkd_jax.data.tfds_math")
  data_dir = str(tmp_path / "tfds")
  for config, name in [("aime24", "aime24"), ("amc23", "amc23")]:
    builder = tfds_math.prepare(config, manual_dir=shared_data, data_dir=data_dir)
    assert builder.info.splits["test"].num_examples == len(sources.read_shared(name, shared_data))
  src = tfds_math.data_source("aime24", "test", manual_dir=shared_data, data_dir=data_dir)
  # Same records in the same order as the plain reader (disable_shuffling).
  assert list(src) == sources.read_shared("aime24", shared_data)
  batch = next(
    iter(
      pipeline.prompt_dataset(
        src, ByteTokenizer(), max_prompt_len=64, truncate=True, seed=0, batch_size=4
      )
    )
  )
  assert batch["prompt_tokens"].shape == (4, 64)
  # The finding this test pins: prepare + read never imported TensorFlow.
  assert "tensorflow" not in sys.modules


def test_tfds_builder_custom_files_and_errors(tmp_path):
  tfds_math = pytest.importorskip("dkd_jax.data.tfds_math")
  manual = tmp_path / "manual"
  manual.mkdir()
  rows = [json.dumps({"question": f"q{i}", "answer": f"s\n#### {i}"}) for i in range(5)]
  (manual / "train.jsonl").write_text("\n".join(rows))
  (manual / "bad.jsonl").write_text(rows[0] + "\n{oops\n")
  config = tfds_math.LocalMathConfig(
    name="tiny", fmt="gsm8k", split_files=(("train", "train.jsonl"),)
  )
  builder = tfds_math.LocalMath(
    config=config, data_dir=str(tmp_path / "d"), file_format="array_record"
  )
  builder.download_and_prepare(
    download_config=tfds_math.tfds.download.DownloadConfig(manual_dir=str(manual))
  )
  recs = list(tfds_math.TfdsRecords(builder.as_data_source("train")))
  assert [r["answer"] for r in recs] == ["0", "1", "2", "3", "4"]
  bad = tfds_math.LocalMath(
    config=tfds_math.LocalMathConfig(
      name="bad", fmt="gsm8k", split_files=(("train", "bad.jsonl"),)
    ),
    data_dir=str(tmp_path / "d"),
    file_format="array_record",
  )
  with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
    bad.download_and_prepare(
      download_config=tfds_math.tfds.download.DownloadConfig(manual_dir=str(manual))
    )


# ------------------------------------------------------------------- pipeline


def _arith(n=64, seed=0):
  return arithmetic.make_records(n, seed=seed)


def test_pipeline_shapes_and_padding():
  tok, recs = CharTokenizer(), _arith()
  ds = pipeline.prompt_dataset(
    recs, tok, max_prompt_len=20, seed=0, batch_size=8, with_responses=True, max_response_len=64
  )
  batch = next(iter(ds))
  dtypes = {k: v.dtype for k, v in batch.items()}
  assert dtypes == {
    "prompt_tokens": np.int32,
    "prompt_len": np.int32,
    "index": np.int32,
    "prompt_truncated": bool,
    "answer": object,
    "response_tokens": np.int32,
    "response_len": np.int32,
    "response_truncated": bool,
  }
  assert batch["prompt_tokens"].shape == (8, 20) and batch["response_tokens"].shape == (8, 64)
  for b in range(8):
    rec = recs[batch["index"][b]]
    p_len, r_len = batch["prompt_len"][b], batch["response_len"][b]
    prompt_T, response_T = batch["prompt_tokens"][b], batch["response_tokens"][b]
    assert prompt_T[0] == tok.bos_id
    assert tok.decode(prompt_T[1:p_len]) == tok.render_prompt(rec["question"])
    assert (prompt_T[p_len:] == tok.pad_id).all()
    assert tok.decode(response_T[: r_len - 1]) == rec["solution"]
    assert response_T[r_len - 1] == tok.eos_id and (response_T[r_len:] == tok.pad_id).all()
    assert batch["answer"][b] == rec["answer"]
  assert not batch["prompt_truncated"].any() and not batch["response_truncated"].any()
  no_resp = next(iter(pipeline.prompt_dataset(recs, tok, max_prompt_len=20, seed=0, batch_size=4)))
  assert "response_tokens" not in no_resp


def test_pipeline_epochs_shuffle_and_finite():
  tok, recs = CharTokenizer(), _arith(24)
  ds = pipeline.prompt_dataset(recs, tok, max_prompt_len=20, seed=5, batch_size=6, num_epochs=2)
  idx = np.concatenate([b["index"] for b in ds])
  assert len(idx) == 48
  first, second = idx[:24], idx[24:]
  assert sorted(first) == sorted(second) == list(range(24))  # epochs never mix
  assert not np.array_equal(first, second)  # reshuffled per epoch
  assert not np.array_equal(first, np.arange(24))
  plain = pipeline.prompt_dataset(
    recs,
    tok,
    max_prompt_len=20,
    seed=5,
    batch_size=10,
    num_epochs=1,
    shuffle=False,
    drop_remainder=False,
  )
  sizes = [len(b["index"]) for b in plain]
  assert sizes == [10, 10, 4]
  assert np.array_equal(np.concatenate([b["index"] for b in plain]), np.arange(24))


def test_iterator_checkpoint_round_trip():
  tok, recs = CharTokenizer(), _arith(30)
  make = lambda: pipeline.prompt_dataset(
    recs, tok, max_prompt_len=20, seed=9, batch_size=8, with_responses=True, max_response_len=64
  )
  it = iter(make())
  for _ in range(5):  # crosses an epoch boundary (30 records, batches of 8)
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  expected = [next(it) for _ in range(6)]
  restored = iter(make())  # a fresh pipeline, as after a restart
  restored.set_state(state)
  for want, got in zip(expected, [next(restored) for _ in range(6)]):
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(want[k], got[k])


def test_prompt_too_long_errors_or_truncates():
  tok = CharTokenizer()
  recs = _arith(40)
  lens = np.array([1 + len(tok.encode(tok.render_prompt(r["question"]))) for r in recs])
  limit = int(np.median(lens))
  too_long = recs[int(np.argmax(lens > limit))]
  with pytest.raises(ValueError, match=f"{too_long['id']}.*max_prompt_len={limit}"):
    pipeline.encode_records(recs, tok, max_prompt_len=limit)
  enc = pipeline.encode_records(recs, tok, max_prompt_len=limit, truncate=True)
  assert enc.num_truncated_prompts == int((lens > limit).sum()) > 0
  i = int(np.argmax(lens > limit))
  ex = enc[i]
  assert ex["prompt_truncated"] and ex["prompt_len"] == limit
  # BOS stays first, and the END of the prompt (where generation starts) is kept.
  assert ex["prompt_tokens"][0] == tok.bos_id
  full = tok.encode(tok.render_prompt(recs[i]["question"]))
  assert list(ex["prompt_tokens"][1:]) == full[-(limit - 1) :]
  ds = pipeline.batch_dataset(enc, seed=0, batch_size=40, num_epochs=1, shuffle=False)
  assert int(next(iter(ds))["prompt_truncated"].sum()) == enc.num_truncated_prompts


def test_response_truncation_counted():
  tok, recs = CharTokenizer(), _arith(40)
  enc = pipeline.encode_records(
    recs, tok, max_prompt_len=20, with_responses=True, max_response_len=20
  )
  lens = np.array([len(r["solution"]) + 1 for r in recs])
  assert enc.num_truncated_responses == int((lens > 20).sum()) > 0
  cut = int(np.argmax(lens > 20))
  assert tok.decode(enc[cut]["response_tokens"]) == recs[cut]["solution"][:20]
  with pytest.raises(ValueError, match="max_response_len=20"):
    pipeline.encode_records(
      recs,
      tok,
      max_prompt_len=20,
      with_responses=True,
      max_response_len=20,
      truncate_responses=False,
    )
  with pytest.raises(ValueError, match="no solution"):
    pipeline.encode_records(
      [{"id": "x", "question": "1+1=", "answer": "2", "solution": ""}],
      tok,
      max_prompt_len=20,
      with_responses=True,
      max_response_len=8,
    )


def test_pipeline_on_gsm8k(shared_data):
  recs = sources.read_shared("gsm8k_test", shared_data)
  tok = ByteTokenizer()
  enc = pipeline.encode_records(
    recs, tok, max_prompt_len=256, truncate=True, with_responses=True, max_response_len=256
  )
  assert 0 < enc.num_truncated_prompts < len(recs)
  batch = next(iter(pipeline.batch_dataset(enc, seed=0, batch_size=16)))
  assert batch["prompt_tokens"].shape == (16, 256)
  assert all(recs[i]["answer"] == a for i, a in zip(batch["index"], batch["answer"]))


def test_iterator_orbax_checkpoint(tmp_path):
  """The train loop's path: grain's orbax handler saves/restores our iterator."""
  ocp = pytest.importorskip("orbax.checkpoint")
  import grain

  tok, recs = CharTokenizer(), _arith(30)
  make = lambda: pipeline.prompt_dataset(recs, tok, max_prompt_len=20, seed=1, batch_size=8)
  it = iter(make())
  next(it), next(it)
  with ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",)) as mgr:
    mgr.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
    want = next(it)["index"]
    restored = iter(make())
    mgr.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  np.testing.assert_array_equal(next(restored)["index"], want)


def test_run_reads_local_file_through_tfds(shared_data, tmp_path):
  """A run's --config.data.path goes through a TFDS (array_record) dataset."""
  import sys

  from configs import common
  from dkd_jax.runs import tasks

  c = common.base("tiny")
  c.data.task, c.data.path = "gsm8k", f"{shared_data}/gsm8k_test.jsonl"
  train, held = tasks.records_for(c, str(tmp_path))
  assert len(train) + len(held) == 1319 and len(held) == c.eval.num_problems
  assert "<<" not in train[0]["solution"] and train[0]["answer"]
  assert (tmp_path / "tfds").is_dir() and "tensorflow" not in sys.modules
  c.data.reader = "plain"
  assert tasks.records_for(c, str(tmp_path))[0] == train
