"""Readers for local math datasets into one record shape.

Every reader returns a list of records `{"id", "question", "answer",
"solution"}` (all str; "solution" may be ""). Formats:

- GSM8K JSONL: question, answer (worked solution whose final line is `#### N`);
  gold answer = text after the last `####`, commas stripped.
- MATH JSON list or JSONL: problem, solution, answer.
- AIME JSONL: problem, answer (solution optional).
- AMC JSONL: question, answer (a number, e.g. 27.0 -> "27").

Bad data is an error, never skipped: `DataError` names the file, the 1-based
line where the offending record starts, and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

Record = dict[str, str]
_WS = re.compile(r"\s*")

# The files in ../shared/data, by short name -> (file, format).
SHARED_FILES = {
  "gsm8k_train": ("gsm8k_train.jsonl", "gsm8k"),
  "gsm8k_test": ("gsm8k_test.jsonl", "gsm8k"),
  "math500": ("math500.json", "math"),
  "aime24": ("aime24.jsonl", "aime"),
  "amc23": ("amc23.jsonl", "amc"),
}


class DataError(ValueError):
  """A malformed data file: the message names file, line and problem."""

  def __init__(self, path: str, line: int, problem: str):
    super().__init__(f"{path}:{line}: {problem}")
    self.path, self.line, self.problem = path, line, problem


def extract_hash_answer(text: str) -> str | None:
  """The GSM8K final answer: text after the last '####', commas stripped."""
  if "####" not in text:
    return None
  tail = text.rsplit("####", 1)[1].strip()
  # Only the rest of that line counts: anything after is not the answer.
  tail = tail.split("\n", 1)[0].strip()
  return tail.replace(",", "") or None


def _decode(path: str, line_no: int, raw: bytes) -> str:
  """One line's bytes as text (a UTF-8 BOM on the first line is allowed)."""
  try:
    return raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
  except UnicodeDecodeError as e:
    raise DataError(path, line_no, f"invalid UTF-8 at byte {e.start}") from None


def _iter_jsonl(path: str) -> Iterator[tuple[int, Any]]:
  """(line number, parsed value) per non-blank line; blank lines only at EOF."""
  pending_blank = None
  with open(path, "rb") as f:  # lines split on b"\n" only, decoded one by one
    for line_no, raw in enumerate(f, start=1):
      line = _decode(path, line_no, raw)
      if not line.strip():
        pending_blank = pending_blank or line_no
        continue
      if pending_blank is not None:
        # A hole in the middle of a JSONL file usually means a broken export.
        raise DataError(path, pending_blank, "blank line inside the file")
      try:
        yield line_no, json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(path, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from None


def _iter_json_list(path: str) -> Iterator[tuple[int, Any]]:
  """(line where the element starts, element) for a file holding one JSON list."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(path, raw.count(b"\n", 0, e.start) + 1, "invalid UTF-8") from None
  decoder = json.JSONDecoder()
  skip_ws = lambda pos: _WS.match(text, pos).end()
  line_of = lambda pos: text.count("\n", 0, pos) + 1
  pos = skip_ws(0)
  if not text.startswith("[", pos):
    raise DataError(path, line_of(pos), "expected a JSON list of objects")
  pos = skip_ws(pos + 1)
  if text.startswith("]", pos):
    return
  line, counted_to = 1, 0
  while True:
    # Decode element by element so each record keeps the line it starts on.
    try:
      value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise DataError(path, e.lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    line += text.count("\n", counted_to, pos)  # incremental: no quadratic rescans
    counted_to = pos
    yield line, value
    pos = skip_ws(end)
    if text.startswith("]", pos):
      if text[pos + 1 :].strip():
        raise DataError(path, line_of(pos + 1), "extra data after the JSON list")
      return
    if not text.startswith(",", pos):
      raise DataError(path, line_of(pos), "expected ',' or ']' between list elements")
    pos = skip_ws(pos + 1)


def _iter_file(path: str) -> Iterator[tuple[int, Any]]:
  """A JSON list file, or JSONL (also when its first record is itself a list: a first
  line that is a whole JSON value followed by more lines)."""
  with open(path, "rb") as f:
    head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] != b"[":
      return _iter_jsonl(path)
    f.seek(0)
    first, rest = f.readline(), f.read(4096)
  try:
    json.loads(first.decode("utf-8-sig"))
    jsonl = bool(rest.strip())
  except ValueError:
    jsonl = False
  return _iter_jsonl(path) if jsonl else _iter_json_list(path)


def _field_str(
  path: str, line: int, row: Any, key: str, *, required: bool = True, numeric_ok: bool = False
) -> str:
  """row[key] as a non-empty str; ints (and integral floats) allowed for answers."""
  if not isinstance(row, dict):
    raise DataError(path, line, f"expected a JSON object, got {type(row).__name__}")
  if key not in row:
    if required:
      raise DataError(path, line, f"missing field {key!r}")
    return ""
  value = row[key]
  if isinstance(value, str):
    if required and not value.strip():
      raise DataError(path, line, f"field {key!r} is empty")
    try:
      value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape (\ud800): no tokenizer takes it
      raise DataError(path, line, f"field {key!r} holds an unpaired surrogate") from None
    return value
  # bool is an int subclass but never a valid answer.
  if numeric_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
    if isinstance(value, float) and not math.isfinite(value):
      raise DataError(path, line, f"field {key!r} is {value} (not a finite number)")
    if isinstance(value, float) and value.is_integer():
      return str(int(value))
    return str(value)
  raise DataError(path, line, f"field {key!r} must be a string, got {type(value).__name__}")


def _record_id(path: str, row: dict, id_key: str, index: int) -> str:
  stem = os.path.splitext(os.path.basename(path))[0]
  if id_key in row and isinstance(row[id_key], (str, int)) and not isinstance(row[id_key], bool):
    return f"{stem}-{row[id_key]}"
  return f"{stem}-{index}"


def _parse_gsm8k(path: str, line: int, row: Any, index: int) -> Record:
  question = _field_str(path, line, row, "question")
  solution = _field_str(path, line, row, "answer")
  answer = extract_hash_answer(solution)
  if answer is None:
    raise DataError(path, line, "field 'answer' has no final '#### N' line")
  return {
    "id": _record_id(path, row, "id", index),
    "question": question,
    "answer": answer,
    "solution": solution,
  }


def _parse_math(path: str, line: int, row: Any, index: int) -> Record:
  question = _field_str(path, line, row, "problem")
  solution = _field_str(path, line, row, "solution")
  answer = _field_str(path, line, row, "answer", numeric_ok=True)
  return {
    "id": _record_id(path, row, "unique_id", index),
    "question": question,
    "answer": answer.strip(),
    "solution": solution,
  }


def _parse_aime(path: str, line: int, row: Any, index: int) -> Record:
  question = _field_str(path, line, row, "problem")
  answer = _field_str(path, line, row, "answer", numeric_ok=True)
  solution = _field_str(path, line, row, "solution", required=False)
  return {
    "id": _record_id(path, row, "id", index),
    "question": question,
    "answer": answer.strip(),
    "solution": solution,
  }


def _parse_amc(path: str, line: int, row: Any, index: int) -> Record:
  question = _field_str(path, line, row, "question")
  answer = _field_str(path, line, row, "answer", numeric_ok=True)
  return {
    "id": _record_id(path, row, "id", index),
    "question": question,
    "answer": answer.strip(),
    "solution": "",
  }


_PARSERS: dict[str, Callable[[str, int, Any, int], Record]] = {
  "gsm8k": _parse_gsm8k,
  "math": _parse_math,
  "aime": _parse_aime,
  "amc": _parse_amc,
}
FORMATS = tuple(_PARSERS)


def read_records(path: str, fmt: str) -> list[Record]:
  """Reads a JSONL (or, for any format, a JSON list) file of format `fmt`."""
  if fmt not in _PARSERS:
    raise ValueError(f"unknown data format {fmt!r}; expected one of {FORMATS}")
  parse = _PARSERS[fmt]
  records = [parse(path, line, row, i) for i, (line, row) in enumerate(_iter_file(path))]
  if not records:
    raise DataError(path, 1, "file holds no records")
  return records


def read_gsm8k(path: str) -> list[Record]:
  return read_records(path, "gsm8k")


def read_math(path: str) -> list[Record]:
  return read_records(path, "math")


def read_aime(path: str) -> list[Record]:
  return read_records(path, "aime")


def read_amc(path: str) -> list[Record]:
  return read_records(path, "amc")


def read_shared(name: str, data_dir: str) -> list[Record]:
  """One of SHARED_FILES (e.g. 'gsm8k_test', 'math500') from `data_dir`."""
  if name not in SHARED_FILES:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SHARED_FILES)}")
  filename, fmt = SHARED_FILES[name]
  return read_records(os.path.join(data_dir, filename), fmt)
