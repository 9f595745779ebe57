"""Instruction tuning data: JSONL chat records (`{"messages": [{"role", "content"}, ...]}`) rendered
with the model's chat template, with the loss on assistant tokens only.

The mask comes from the template itself, not from guessing at its markup: for assistant message i we
render the conversation up to message i with the generation prompt (everything the model is given)
and up to message i + 1 without it (everything it should produce); the tokens between the two are
the assistant's — its content and the end-of-turn token the template writes. Each rendering must be a
token prefix of the next; a template that rewrites earlier turns is refused rather than mis-masked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.io.jsonl import iter_jsonl

ROLES = ("system", "user", "assistant", "tool")


def read_chat_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """Conversations from a JSONL file, each line an object with a `messages` list."""
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"chat data file not found: {path}")
    conversations = []
    for lineno, record in iter_jsonl(path.read_text(encoding="utf-8"), path):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise LMForgeError(
                f'{path}:{lineno}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}'
            )
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise LMForgeError(
                    f"{path}:{lineno}: each message needs a role ({', '.join(ROLES)}) and string content"
                )
        if not any(m["role"] == "assistant" for m in messages):
            raise LMForgeError(f"{path}:{lineno}: the conversation has no assistant message to learn from")
        conversations.append(messages)
    if not conversations:
        raise LMForgeError(f"{path}: no conversations")
    return conversations


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    return tokenizer.encode_chat(messages, add_generation_prompt=add_generation_prompt)


def assistant_mask(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """(token ids of the whole conversation, True on assistant tokens)."""
    if not getattr(tokenizer, "chat_template", None):
        raise LMForgeError("the model's tokenizer has no chat template; fine-tune on --text instead")
    ids = _render(tokenizer, messages, add_generation_prompt=False)
    mask = [False] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if through[: len(prompt)] != prompt or ids[: len(through)] != through:
            raise LMForgeError(
                "the chat template does not render conversations incrementally (an earlier turn changes "
                "when later ones are added), so assistant tokens cannot be located; use a simpler template"
            )
        for t in range(len(prompt), len(through)):
            mask[t] = True
    return ids, mask


def build_examples(
    tokenizer: Any, conversations: list[list[dict[str, str]]], max_tokens: int
) -> list[tuple[list[int], list[bool]]]:
    """Tokenized, masked examples cut to `max_tokens` (= seq_len + 1: inputs and shifted targets);
    conversations left with no assistant token after the cut are dropped."""
    examples = []
    for messages in conversations:
        ids, mask = assistant_mask(tokenizer, messages)
        ids, mask = ids[:max_tokens], mask[:max_tokens]
        if any(mask[1:]):
            examples.append((ids, mask))
    if not examples:
        raise LMForgeError(
            f"no conversation has an assistant token within {max_tokens} tokens; raise --seq-len"
        )
    return examples
