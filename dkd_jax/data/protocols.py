"""The tokenizer contract every data path and the generation engine rely on.

Two implementations exist: `arithmetic.CharTokenizer` (the tiny built-in task)
and an HF `tokenizer.json` wrapper (in the model-loading code). Everything in
`dkd_jax.data` only talks to this protocol, so swapping tokenizers never touches
the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from typing import runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
  """Text <-> ids for one model.

  Conventions the pipeline depends on:
  - `encode` adds NO special tokens. The pipeline prepends `bos_id` to every
    prompt when it is not None and appends `eos_id` to dataset responses. A
    tokenizer whose `render_prompt` text already begins with its BOS marker (some
    chat templates do) should report `bos_id = None` so it is not doubled.
  - `decode` decodes every id it is given, specials included (as their literal
    token text); it does not stop at EOS. The caller trims at `eos_id` first.
  - `tokens()[i]` is the string of id i; `len(tokens()) == vocab_size` except
    that a model's embedding may be padded beyond it.
  """

  vocab_size: int
  pad_id: int
  eos_id: int
  bos_id: int | None

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def render_prompt(self, question: str) -> str:
    """The text the model is conditioned on (chat template or plain format)."""
    ...

  def tokens(self) -> list[str]: ...
