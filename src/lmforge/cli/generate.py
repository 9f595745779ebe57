"""Generation commands: `lmforge generate` (one-shot, optionally streaming) and `lmforge chat`.

Both take every `GenerationConfig` field as an option (`--temperature`, `--num-beams`, `--json-schema`,
...), appended from the config dataclass, so the CLI never lags behind the API. Only the options a user
types are passed on: the model's own generation defaults fill the rest, and a typed value wins even
when it equals the library's default.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

import lmforge
from lmforge.errors import LMForgeError
from lmforge.options import with_options

DEFAULT_MODEL = "smollm2"
CHAT_MAX_NEW_TOKENS = 512  # a chat reply's length when neither the user nor the model sets one


@with_options(lmforge.GenerationConfig)
def generate(
    *,
    prompt: list[str] | None = None,
    model: str = DEFAULT_MODEL,
    stream: bool = False,
    chat_template: bool = False,
    draft: str | None = None,
    amateur: str | None = None,
    image: str | None = None,
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
        image: image file the prompt asks about (a vision-language model, e.g. from quickstart --recipe vlm).
        json_output: print one JSON object per completion (text, tokens, finish reason, log-probs).
    """
    lm = lmforge.load(model)
    companions = {k: lmforge.load(m) if m else None for k, m in [("draft", draft), ("amateur", amateur)]}
    companions.update({"image": image} if image else {})  # a vision-language model's input
    texts = prompt or [sys.stdin.read()]
    inputs = [_chat_ids(lm, [{"role": "user", "content": p}]) for p in texts] if chat_template else texts
    if stream and not json_output:
        for i, item in enumerate(inputs):
            if len(inputs) > 1:
                print(f"--- [{i}]")
            for delta in lm.stream(item, **companions, **options):
                print(delta.text, end="", flush=True)
            print()
        return []
    out = lm.generate(inputs if len(inputs) > 1 else inputs[0], **companions, **options)
    return _print_completions(out if isinstance(out, list) else [out], json_output)


def _print_completions(completions: list[Any], json_output: bool) -> list[dict[str, Any]]:
    """One JSON object per completion, or its text (with a header when there are several)."""
    records = [dataclasses.asdict(c) for c in completions]
    for c, record in zip(completions, records):
        if json_output:
            print(json.dumps(record, ensure_ascii=False))
        else:
            if len(completions) > 1:
                print(f"--- [{c.index}] ({c.finish_reason})")
            print(c.text)
    return records


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
        for delta in lm.chat(history, stream=True, **options):
            reply.append(delta.text)
            write(delta.text)
        write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})


@with_options(lmforge.GenerationConfig)
def chat_command(
    model: str = DEFAULT_MODEL, system: str | None = None, image: str | None = None, **options: Any
) -> None:
    """Chat with a model in the terminal through its chat template, streaming the answers.

    A reply is at most 512 tokens (half the context for short-context models) unless --max-new-tokens
    or the model's own generation config says otherwise.

    Args:
        model: asset name (smollm2), checkpoint directory or .gguf file.
        system: system prompt to start with (change it later with /system).
        image: image file the conversation is about (a vision-language model).
    """
    lm = lmforge.load(model)
    if "max_new_tokens" not in options and "max_new_tokens" not in lm.generation_config:
        options["max_new_tokens"] = min(CHAT_MAX_NEW_TOKENS, lm.config.max_seq_len // 2)
    chat_loop(lm, system=system, **options, **({"image": image} if image else {}))


COMMANDS = {"generate": generate, "chat": chat_command}
