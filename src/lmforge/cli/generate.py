"""Generation commands: `lmforge generate` (one-shot, optionally streaming) and `lmforge chat`.

Both take every `GenerationConfig` field as an option (`--temperature`, `--num-beams`, `--json-schema`,
...): the option list is built from the config dataclass, so the CLI never lags behind the API.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Callable
from typing import Any

from lmforge.errors import LMForgeError

DEFAULT_MODEL = "smollm2"


def _config_fields() -> list[tuple[str, Any, Any, str]]:
    """(name, type, default, help) of every GenerationConfig field."""
    from lmforge.generate.config import GenerationConfig

    hints = typing.get_type_hints(GenerationConfig)
    docs = getattr(GenerationConfig, "FIELD_DOCS", {}) or {}
    out = []
    for f in dataclasses.fields(GenerationConfig):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        out.append((f.name, hints[f.name], default, docs.get(f.name, f.name.replace("_", " "))))
    return out


def _with_generation_options(fn: Callable) -> Callable:
    """Append every GenerationConfig field to `fn`'s signature and `Args:` docs, as keyword options."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    annotations = typing.get_type_hints(fn)
    doc = inspect.getdoc(fn) or ""
    lines = []
    taken = {p.name for p in params}
    for name, tp, default, help_text in _config_fields():
        if name in taken:
            continue
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp))
        annotations[name] = tp
        lines.append(f"    {name}: {help_text}")
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    fn.__doc__ = doc + ("\n" if "Args:" in doc else "\n\nArgs:\n") + "\n".join(lines)
    return fn


def _options(values: dict[str, Any]) -> dict[str, Any]:
    """Generation options that differ from the config defaults (so model defaults still apply)."""
    defaults = {name: default for name, _, default, _ in _config_fields()}
    return {k: v for k, v in values.items() if k in defaults and v != defaults[k]}


def _load(model: str):
    from lmforge.lm import load

    return load(model)


def generate(
    *,
    prompt: list[str] | None = None,
    model: str = DEFAULT_MODEL,
    stream: bool = False,
    chat_template: bool = False,
    draft: str | None = None,
    amateur: str | None = None,
    json_output: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Generate text for one or more prompts with any decoding strategy.

    Args:
        prompt: prompt text(s); several prompts run as one batch (default: read one from stdin).
        model: asset name (smollm2), checkpoint directory or .gguf file.
        stream: print text as it is generated (one prompt at a time).
        chat_template: wrap each prompt as a user message in the model's chat template.
        draft: draft model (same tokenizer) for speculative decoding.
        amateur: amateur model (same tokenizer) for contrastive decoding.
        json_output: print one JSON object per completion (text, tokens, finish reason, log-probs).
    """
    from lmforge import generate as api

    if not prompt:
        prompt = [sys.stdin.read()]
    lm = _load(model)
    extra = {
        "draft": _load(draft) if draft else None,
        "amateur": _load(amateur) if amateur else None,
    }
    opts = _options(options)
    if chat_template:
        inputs = [_chat_ids(lm, [{"role": "user", "content": p}]) for p in prompt]
    else:
        inputs = list(prompt)
    results: list[dict[str, Any]] = []
    if stream and not json_output:
        for i, item in enumerate(inputs):
            if len(inputs) > 1:
                print(f"--- [{i}]")
            for delta in api.stream(lm, item, **extra, **opts):
                print(delta.text, end="", flush=True)
            print()
        return results
    out = api.generate(lm, inputs if len(inputs) > 1 else inputs[0], **extra, **opts)
    completions = out if isinstance(out, list) else [out]
    for c in completions:
        record = dataclasses.asdict(c)
        results.append(record)
        if json_output:
            print(json.dumps(record, ensure_ascii=False))
        else:
            if len(completions) > 1:
                print(f"--- [{c.index}] ({c.finish_reason})")
            print(c.text)
    return results


def _chat_ids(lm: Any, messages: list[dict[str, str]]) -> list[int]:
    tok = lm.tokenizer
    if tok is None:
        raise LMForgeError("this model has no tokenizer, so it cannot chat")
    return tok.encode_chat(messages, add_generation_prompt=True)


CHAT_HELP = (
    "commands: /system TEXT (set the system prompt and restart), /reset (forget the conversation), "
    '/exit; end a line with \\ to continue it, or wrap several lines in """'
)


def read_message(read_line: Callable[[str], str]) -> str | None:
    """Read one user message: a line, lines joined by a trailing backslash, or a \"\"\" block.
    None at end of input."""
    try:
        line = read_line(">>> ")
    except EOFError:
        return None
    stripped = line.strip()
    if len(stripped) >= 6 and stripped.startswith('"""') and stripped.endswith('"""'):
        return stripped[3:-3]
    if stripped == '"""' or stripped.startswith('"""'):
        parts = [stripped[3:]] if stripped != '"""' else []
        while True:
            try:
                more = read_line("... ")
            except EOFError:
                break
            if more.rstrip().endswith('"""'):
                parts.append(more.rstrip()[:-3])
                break
            parts.append(more)
        return "\n".join(parts).strip("\n")
    parts = []
    while line.endswith("\\"):
        parts.append(line[:-1])
        try:
            line = read_line("... ")
        except EOFError:
            line = ""
            break
    parts.append(line)
    return "\n".join(parts)


def chat_loop(
    lm: Any,
    read_line: Callable[[str], str] = input,
    write: Callable[[str], None] | None = None,
    system: str | None = None,
    **options: Any,
) -> list[dict[str, str]]:
    """The interactive chat: keeps the history, streams each answer; returns the final history."""
    from lmforge.generate import chat

    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    write(CHAT_HELP + "\n")
    while True:
        message = read_message(read_line)
        if message is None or message.strip() in ("/exit", "/quit"):
            return history
        command = message.strip()
        if command == "/reset":
            history = [m for m in history if m["role"] == "system"]
            write("(conversation reset)\n")
            continue
        if command.startswith("/system"):
            text = command[len("/system") :].strip()
            history = [{"role": "system", "content": text}] if text else []
            write("(system prompt set; conversation reset)\n" if text else "(system prompt cleared)\n")
            continue
        if command in ("/help", "/?"):
            write(CHAT_HELP + "\n")
            continue
        if not command:
            continue
        history.append({"role": "user", "content": message})
        reply = []
        for delta in chat(lm, history, stream=True, **options):
            reply.append(delta.text)
            write(delta.text)
        write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})


def chat_command(model: str = DEFAULT_MODEL, system: str | None = None, **options: Any) -> None:
    """Chat with a model in the terminal through its chat template, streaming the answers.

    Args:
        model: asset name (smollm2), checkpoint directory or .gguf file.
        system: system prompt to start with (change it later with /system).
    """
    lm = _load(model)
    opts = _options(options)
    opts.setdefault("max_new_tokens", 512)
    chat_loop(lm, system=system, **opts)


def _build_commands() -> dict[str, Callable]:
    return {"generate": _with_generation_options(generate), "chat": _with_generation_options(chat_command)}


COMMANDS = _build_commands()
