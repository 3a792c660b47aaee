"""Hugging Face tokenizers for real checkpoints, offline.

`HFTokenizer` wraps a local `tokenizer.json` (the `tokenizers` library) plus the chat
template of `tokenizer_config.json` / `chat_template.jinja` (`chat_template.render_chat`) and
satisfies `dkd_jax.data.protocols.Tokenizer`. `write_gguf_tokenizer` rebuilds a
byte-level BPE `tokenizer.json` from a GGUF file's tokenizer metadata, so a GGUF
checkpoint becomes a HF directory that transformers and we both read.
`check_same_vocab` refuses a teacher/student pair whose vocabularies differ.

Export goes the other way (`export_info`): a run's tokenizer as GGUF tokenizer
metadata, from which `write_gguf_tokenizer` also writes the HF files. A per-symbol
tokenizer (the arithmetic task's `CharTokenizer`) becomes a byte-level BPE without
merges, so transformers, llama.cpp and we all encode it to the same ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from tokenizers import AddedToken
from tokenizers import Tokenizer
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import processors

from dkd_jax.models import chat_template

# llama.cpp token types (gguf.TokenType): CONTROL tokens are specials such as
# <|im_end|>; USER_DEFINED ones are added tokens matched whole in the text.
_CONTROL, _USER_DEFINED = 3, 4


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerInfo:
  """The tokenizer metadata of a GGUF file (`tokenizer.ggml.*`, `tokenizer.chat_template`)."""

  model: str  # "gpt2" = byte-level BPE
  pre: str  # llama.cpp pre-tokenizer name, e.g. "smollm"
  tokens: list[str]
  token_types: list[int] | None
  merges: list[str]
  bos_id: int | None
  eos_id: int
  pad_id: int | None
  unk_id: int | None
  add_bos: bool
  chat_template: str | None


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
  """The split rules llama.cpp uses for a `tokenizer.ggml.pre` name."""
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in ("default", "gpt2", "gpt-2"):
    return byte_level
  if pre == "smollm":
    # SmolLM splits every digit on its own before the GPT-2 regex.
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  raise ValueError(f"GGUF pre-tokenizer {pre!r} unsupported; supported: default, gpt2, smollm")


def tokenizer_from_gguf(info: GGUFTokenizerInfo) -> Tokenizer:
  """A `tokenizers.Tokenizer` equal to the GGUF's byte-level BPE tokenizer."""
  if info.model != "gpt2":
    raise ValueError(
      f"GGUF tokenizer model {info.model!r} unsupported; supported: gpt2 (byte-level BPE)"
    )
  vocab = {tok: i for i, tok in enumerate(info.tokens)}
  if len(vocab) != len(info.tokens):
    raise ValueError("GGUF vocabulary has duplicate token strings")
  merges = [tuple(m.split(" ")) for m in info.merges]
  if any(len(m) != 2 for m in merges):
    raise ValueError("a GGUF merge is not two space-separated byte-level tokens")
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  tok.pre_tokenizer = _pre_tokenizer(info.pre)
  tok.decoder = decoders.ByteLevel()
  types = info.token_types or [1] * len(info.tokens)
  tok.add_special_tokens(
    [
      AddedToken(t, special=True, normalized=False)
      for t, ty in zip(info.tokens, types)
      if ty == _CONTROL
    ]
  )
  tok.add_tokens(
    [
      AddedToken(t, special=False, normalized=False)
      for t, ty in zip(info.tokens, types)
      if ty == _USER_DEFINED
    ]
  )
  if info.add_bos and info.bos_id is not None:
    bos = info.tokens[info.bos_id]
    tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, info.bos_id)]
    )
  return tok


def write_gguf_tokenizer(info: GGUFTokenizerInfo, out_dir: str, max_len: int) -> None:
  """Writes tokenizer.json + tokenizer_config.json + special_tokens_map.json."""
  tokenizer_from_gguf(info).save(os.path.join(out_dir, "tokenizer.json"))
  name = lambda i: None if i is None else info.tokens[i]
  specials = {
    "bos_token": name(info.bos_id),
    "eos_token": name(info.eos_id),
    "pad_token": name(info.pad_id),
    "unk_token": name(info.unk_id),
  }
  specials = {k: v for k, v in specials.items() if v is not None}
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    **specials,
    "add_bos_token": info.add_bos,
    "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": max_len,
  }
  if info.chat_template:
    config["chat_template"] = info.chat_template
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
    json.dump(specials, f, indent=2, ensure_ascii=False)


def _token_text(value) -> str | None:
  """tokenizer_config.json spells a special token as a string or an AddedToken dict."""
  return value.get("content") if isinstance(value, dict) else value


def _read_config(path: str) -> dict:
  config_file = os.path.join(path, "tokenizer_config.json")
  config = {}
  if os.path.exists(config_file):
    with open(config_file) as f:
      config = json.load(f)
  jinja_file = os.path.join(path, "chat_template.jinja")  # transformers >= 4.50 layout
  if os.path.exists(jinja_file) and not config.get("chat_template"):
    with open(jinja_file) as f:
      config["chat_template"] = f.read()
  return config


class HFTokenizer:
  """A HF tokenizer directory (or a bare tokenizer.json) as a `Tokenizer`.

  `bos_id` follows the pipeline's contract: it is the BOS id only when the model
  wants one added (the tokenizer's own post-processor or `add_bos_token` adds it)
  and the rendered prompt does not already start with it; otherwise None.
  `pad_id` is the configured pad token, else EOS (positions are masked anyway).
  """

  def __init__(
    self,
    path: str,
    *,
    eos_token: str | None = None,
    pad_token: str | None = None,
    bos_token: str | None = None,
  ):
    tok_dir = os.path.dirname(path) if path.endswith(".json") else path
    tok_file = path if path.endswith(".json") else os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_file):
      raise FileNotFoundError(f"no tokenizer.json at {tok_file}")
    self.path = tok_dir
    self._tok = Tokenizer.from_file(tok_file)
    config = _read_config(tok_dir)
    self.chat_template: str | None = config.get("chat_template")
    if isinstance(self.chat_template, list):  # named templates: take the default one
      self.chat_template = {t["name"]: t["template"] for t in self.chat_template}.get("default")
    self._bos_text = bos_token or _token_text(config.get("bos_token"))
    self._eos_text = eos_token or _token_text(config.get("eos_token"))
    self.eos_id = self._id(self._eos_text, "eos_token")
    pad_text = pad_token or _token_text(config.get("pad_token"))
    self.pad_id = self._id(pad_text, "pad_token") if pad_text else self.eos_id
    self._vocab = self._build_vocab()
    self.vocab_size = len(self._vocab)
    self.bos_id = self._bos_to_prepend(config)

  def _id(self, text: str | None, field: str) -> int:
    if not text:
      raise ValueError(f"tokenizer has no {field}; pass {field}= to HFTokenizer")
    i = self._tok.token_to_id(text)
    if i is None:
      raise ValueError(f"{field}={text!r} is not in the vocabulary")
    return i

  def _build_vocab(self) -> list[str]:
    by_id = {i: t for t, i in self._tok.get_vocab(with_added_tokens=True).items()}
    # Ids a tokenizer never assigns stay "" so tokens()[i] is still the string of id i.
    return [by_id.get(i, "") for i in range(max(by_id) + 1)]

  def _bos_to_prepend(self, config: dict) -> int | None:
    if not self._bos_text or self._tok.token_to_id(self._bos_text) is None:
      return None
    bos = self._tok.token_to_id(self._bos_text)
    adds = config.get("add_bos_token") or self._tok.encode("a").ids[:1] == [bos]
    if not adds or self.render_prompt("a").startswith(self._bos_text):
      return None
    return bos

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode(list(ids), skip_special_tokens=False)

  def encode_offsets(self, text: str) -> tuple[list[int], list[int]]:
    """(ids, each id's character end offset in `text`): the library's own offsets, which
    stay right where one character is split over several byte-level tokens (they share
    its span), unlike decoding tokens one by one."""
    enc = self._tok.encode(text, add_special_tokens=False)
    return list(enc.ids), [end for _, end in enc.offsets]

  def tokens(self) -> list[str]:
    return list(self._vocab)

  def render_prompt(self, question: str) -> str:
    if not self.chat_template:
      return question
    return chat_template.render_chat(
      self.chat_template,
      [{"role": "user", "content": question}],
      bos_token=self._bos_text or "",
      eos_token=self._eos_text or "",
    )


def check_same_vocab(teacher_tok, student_tok) -> None:
  """Refuses a pair whose vocabularies differ (ids would mean different strings)."""
  t, s = teacher_tok.tokens(), student_tok.tokens()
  if t == s:
    return
  first = next((i for i, (a, b) in enumerate(zip(t, s)) if a != b), min(len(t), len(s)))
  get = lambda v: repr(v[first]) if first < len(v) else "<absent>"
  raise ValueError(
    f"teacher and student vocabularies differ: teacher has {len(t)} tokens, "
    f"student {len(s)}; first difference at id {first}: teacher {get(t)} vs "
    f"student {get(s)}"
  )


# ----------------------------------------------------------------------------- export

_NORMAL = 1
# Split regexes of byte-level tokenizers -> llama.cpp's `tokenizer.ggml.pre` name, which
# llama.cpp and transformers' GGUF loader turn back into the same split.
_SPLIT_PRE = {
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
  r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def _byte_spelling(text: str) -> str:
  """`text` in the byte-level alphabet (' ' -> 'Ġ', '\\n' -> 'Ċ'), as the library spells it."""
  spell = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  return "".join(piece for piece, _ in spell.pre_tokenize_str(text))


def symbol_tokenizer_info(tok) -> GGUFTokenizerInfo:
  """A per-symbol `Tokenizer` (each id one single-byte character, or a whole special
  token such as '<eos>') as a byte-level BPE with no merges: the same ids for every text."""
  tokens, types = [], []
  for i, t in enumerate(tok.tokens()):
    special = len(t) > 1
    if not special and len(t.encode("utf-8")) != 1:
      raise ValueError(
        f"token {i} ({t!r}) is neither one byte nor a special token; a "
        "per-symbol tokenizer exports only single-byte characters"
      )
    tokens.append(t if special else _byte_spelling(t))
    types.append(_CONTROL if special else _NORMAL)
  return GGUFTokenizerInfo(
    model="gpt2",
    pre="default",
    tokens=tokens,
    token_types=types,
    merges=[],
    bos_id=tok.bos_id,
    eos_id=tok.eos_id,
    pad_id=tok.pad_id,
    unk_id=None,
    add_bos=tok.bos_id is not None,
    chat_template=getattr(tok, "chat_template", None),
  )


def _pre_name(pre: dict | None) -> str:
  """llama.cpp's pre-tokenizer name for a tokenizer.json `pre_tokenizer`, or ValueError."""
  steps = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
  kinds = [p["type"] for p in steps]
  if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
    return "gpt-2"
  if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
    return "smollm"
  if kinds == ["Split", "ByteLevel"]:
    name = _SPLIT_PRE.get(steps[0]["pattern"].get("Regex"))
    if name:
      return name
  raise ValueError(
    f"tokenizer.json pre_tokenizer {kinds} has no llama.cpp equivalent known "
    "here (known: gpt-2, smollm, qwen2); export --format=hf instead"
  )


def hf_tokenizer_info(tok: HFTokenizer) -> GGUFTokenizerInfo:
  """A byte-level BPE `HFTokenizer` as GGUF tokenizer metadata."""
  with open(os.path.join(tok.path, "tokenizer.json")) as f:
    spec = json.load(f)
  model = spec["model"]
  if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("decoder")):
    raise ValueError(
      f"{tok.path}/tokenizer.json is not a byte-level BPE; GGUF export "
      "supports that kind only (export --format=hf instead)"
    )
  added = {a["id"]: a for a in spec.get("added_tokens", [])}
  tokens = tok.tokens()
  types = [
    (_CONTROL if added[i]["special"] else _USER_DEFINED) if i in added else _NORMAL
    for i in range(len(tokens))
  ]
  merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
  return GGUFTokenizerInfo(
    model="gpt2",
    pre=_pre_name(spec.get("pre_tokenizer")),
    tokens=tokens,
    token_types=types,
    merges=merges,
    bos_id=tok.bos_id,
    eos_id=tok.eos_id,
    pad_id=tok.pad_id,
    unk_id=None,
    add_bos=tok.bos_id is not None,
    chat_template=tok.chat_template,
  )


def export_info(tok) -> GGUFTokenizerInfo:
  """Any run tokenizer (an `HFTokenizer` or a per-symbol one) as GGUF tokenizer metadata."""
  return hf_tokenizer_info(tok) if isinstance(tok, HFTokenizer) else symbol_tokenizer_info(tok)


# ----------------------------------------------------------------------------- training

BPE_SPECIALS = ("<pad>", "<bos>", "<eos>")
# Plain prompts: the question then a newline (the built-in tasks' format); BOS is added
# by the pipeline, so the template leaves it out.
PLAIN_TEMPLATE = (
  "{% for message in messages %}{{ message['content'] }}"
  "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}"
  "{% endif %}{% endfor %}"
)


def train_bpe(texts: Sequence[str], out_dir: str, vocab_size: int) -> HFTokenizer:
  """A byte-level BPE trained on `texts` (seconds for the chain task), written as a HF
  tokenizer directory in `out_dir` (an existing one is read back, not retrained).

  Ids 0-2 are <pad>, <bos>, <eos>; the alphabet is the training text's own characters.
  Text is split before merging as GPT-2's byte-level BPE splits it (runs of letters, of
  digits, of other symbols, of spaces), so a token is a whole number ('150') or symbol run
  and never crosses from a digit to an operator. Without that split, merges such as '=3'
  and '0\n?' cut numbers apart: a chain student warm-started on such tokens reached Avg@8
  0.16 where the character student reached 0.35 (0.40 with the split; BUILD_NOTES, issue
  24). Text with characters the alphabet lacks does not round-trip, which
  `data.alignment` reports."""
  from tokenizers import trainers

  if os.path.exists(os.path.join(out_dir, "tokenizer.json")):
    return HFTokenizer(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  tok = Tokenizer(models.BPE(fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=list(BPE_SPECIALS),
    initial_alphabet=[],
    show_progress=False,
  )
  tok.train_from_iterator(list(texts), trainer)
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  pad, bos, eos = BPE_SPECIALS
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": bos,
    "eos_token": eos,
    "pad_token": pad,
    "add_bos_token": True,
    "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "chat_template": PLAIN_TEMPLATE,
  }
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  return HFTokenizer(out_dir)
