"""Hugging Face chat templates rendered as transformers renders them (sandboxed jinja2),
each template compiled once per process."""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any
from typing import NoReturn


def render_chat(
  template: str, messages: list[dict], *, add_generation_prompt: bool = True, **context
) -> str:
  """Renders a HF chat template the way transformers does (sandboxed jinja2,
  trim_blocks + lstrip_blocks, raise_exception / strftime_now helpers)."""
  return _compiled_template(template).render(
    messages=messages, add_generation_prompt=add_generation_prompt, **context
  )


@functools.lru_cache(maxsize=16)
def _compiled_template(template: str) -> Any:
  """The template compiled once: jinja2 parses and compiles a template to Python on each
  `from_string` (~0.1 s for SmolLM2's), which dominated rendering a dataset's prompts."""
  try:
    from jinja2 import exceptions as jinja_exceptions
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError as e:
    raise ImportError("rendering a chat template needs jinja2 (pip install jinja2)") from e

  def raise_exception(message) -> NoReturn:
    raise jinja_exceptions.TemplateError(message)

  env = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
  )
  env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)
