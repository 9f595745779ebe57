"""Chat templates: Hugging Face's Jinja conventions, rendered in a sandbox.

A chat template comes from tokenizer_config.json or GGUF metadata (`tokenizer.chat_template`), i.e.
from whoever published the model, so it is untrusted code: it runs in Jinja's
`ImmutableSandboxedEnvironment` with the same globals transformers provides (`raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII, `trim_blocks` + `lstrip_blocks`), so the same template
renders the same string here and in transformers.

Encoding a rendered chat has one trap: a user who types `<|im_start|>system` would inject a control
token. `encode_chat` wraps every special-token text found in the *inputs* (messages, tools, extra
variables) with private-use markers before rendering; after rendering, only unmarked special-token
text (written by the template itself) becomes special ids, and the marked text is encoded as the plain
text it is. Without injected text the ids equal `encode(render(...), allow_special=True)`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmforge.errors import LMForgeError

if TYPE_CHECKING:
    from lmforge.tokenizer.core import Tokenizer

# Private-use characters (plane 15) that mark special-token text coming from user inputs.
MARK_START, MARK_END = "\U000f0001", "\U000f0002"


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
) -> str:
    # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template in the sandbox (cached: templates are long and reused per request)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise LMForgeError(f"chat template has a syntax error at line {exc.lineno}: {exc.message}") from None


def _check_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise LMForgeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise LMForgeError(
                f"message {i} must be a dict with a 'role' (and usually 'content'), got {message!r}"
            )
        out.append({k: v for k, v in message.items() if v is not None})  # as transformers: drop None values
    return out


def render_chat(
    tok: Tokenizer,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` with the tokenizer's chat template (or `chat_template`). Extra keyword
    arguments (`tools`, `documents`, `enable_thinking`, ...) are template variables; the special
    tokens (`bos_token`, `eos_token`, ...) are available as their text, as in transformers."""
    template = chat_template or tok.chat_template
    if not template:
        raise LMForgeError(
            "this tokenizer has no chat template: pass chat_template=... (a Jinja string), or use a model "
            "whose tokenizer_config.json or GGUF metadata has one"
        )
    variables = {**tok.special_tokens, **kwargs}
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    try:
        return compile_template(template).render(
            messages=_check_messages(messages), add_generation_prompt=add_generation_prompt, **variables
        )
    except jinja2.exceptions.SecurityError as exc:
        raise LMForgeError(f"chat template tried an unsafe operation and was stopped: {exc}") from None
    except jinja2.exceptions.TemplateError as exc:
        raise LMForgeError(f"chat template refused the conversation: {exc}") from None


def _special_texts(tok: Tokenizer) -> list[str]:
    texts = {t.content for t in tok.backend.get_added_tokens_decoder().values() if t.special}
    return sorted(texts, key=len, reverse=True)


def _mark(value: Any, pattern: re.Pattern[str]) -> Any:
    """Wrap special-token text inside every string of `value` (recursively) with the markers."""
    if isinstance(value, str):
        value = value.replace(MARK_START, "").replace(MARK_END, "")  # nobody forges a marker
        return pattern.sub(lambda m: MARK_START + m.group(0) + MARK_END, value)
    if isinstance(value, dict):
        return {k: _mark(v, pattern) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v, pattern) for v in value]
    return value


def encode_chat(
    tok: Tokenizer,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    allow_special: bool = False,
    chat_template: str | None = None,
    **kwargs: Any,
) -> list[int]:
    """Token ids of a rendered conversation; special-token text from the inputs stays plain text
    unless `allow_special` (see the module docstring)."""
    if allow_special:
        text = render_chat(tok, messages, add_generation_prompt, chat_template, **kwargs)
        return tok.encode(text, allow_special=True)
    specials = _special_texts(tok)
    if not specials:
        return tok.encode(render_chat(tok, messages, add_generation_prompt, chat_template, **kwargs))
    special_re = re.compile("|".join(re.escape(s) for s in specials))
    marked_messages = _mark(list(messages), special_re)
    marked_kwargs = _mark(kwargs, special_re)
    text = render_chat(tok, marked_messages, add_generation_prompt, chat_template, **marked_kwargs)
    # a marked special text is user input; a bare one was written by the template; lone markers
    # (a template that slices strings can cut a pair apart) are dropped
    scan = re.compile(
        f"{MARK_START}({special_re.pattern}){MARK_END}|({special_re.pattern})|{MARK_START}|{MARK_END}"
    )
    ids: list[int] = []
    buffer: list[str] = []
    pos = 0
    for match in scan.finditer(text):
        buffer.append(text[pos : match.start()])
        pos = match.end()
        if match.group(1) is not None:
            buffer.append(match.group(1))
        elif match.group(2) is not None:
            ids += tok.encode("".join(buffer))
            buffer = []
            ids.append(tok.token_to_id(match.group(2)))
    buffer.append(text[pos:])
    ids += tok.encode("".join(buffer))
    return ids
