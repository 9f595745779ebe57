"""OpenAI response bodies and stream chunks for chat and text completions, built from batcher events."""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lmforge.generate.api import Completion
from lmforge.generate.batching import Event


class TokenText:
    """A token's text and bytes as OpenAI's logprobs show them (cached: the same ids recur)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one per server, lives as long as the model
    def token_bytes(self, token_id: int) -> bytes:
        tok = self.tokenizer
        if hasattr(tok, "token_bytes"):
            return tok.token_bytes(token_id)
        return tok.decode([token_id]).encode("utf-8")

    def text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def chat_logprobs(
        self, token_ids: list[int], logprobs: list[float] | None, tops: list[dict[int, float]] | None
    ) -> dict[str, Any]:
        """`choice.logprobs` of a chat completion: {"content": [{token, logprob, bytes, top_logprobs}]}."""
        content = []
        for i, token in enumerate(token_ids):
            alternatives = (tops[i] if tops and i < len(tops) else {}).items()
            content.append(
                {
                    **self._entry(token, logprobs[i] if logprobs else None),
                    "top_logprobs": [self._entry(t, lp) for t, lp in alternatives],
                }
            )
        return {"content": content}

    def _entry(self, token: int, logprob: float | None) -> dict[str, Any]:
        return {"token": self.text(token), "logprob": logprob, "bytes": list(self.token_bytes(token))}

    def completion_logprobs(
        self,
        token_ids: list[int],
        logprobs: list[float] | None,
        tops: list[dict[int, float]] | None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """`choice.logprobs` of a text completion: tokens, token_logprobs, top_logprobs, text_offset."""
        texts = [self.text(t) for t in token_ids]
        offsets = []
        for text in texts:
            offsets.append(offset)
            offset += len(text)
        top = None
        if tops is not None:
            top = [{self.text(t): lp for t, lp in alternatives.items()} for alternatives in tops]
        return {"tokens": texts, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class Reply:
    """What one request answers, chat or text completion, whole or as chunks."""

    chat: bool
    model: str
    tokens: TokenText
    logprobs: int | None  # None: off
    prompt_tokens: int
    echo_texts: list[str] | None = None  # echo: each choice's prompt text, by choice index
    id: str = field(default_factory=lambda: "")
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0
    offsets: dict[int, int] = field(default_factory=dict)  # completions' text_offset per choice

    def __post_init__(self) -> None:
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    # -- whole replies ---------------------------------------------------------------------------

    def body(self, completions: dict[int, Completion]) -> dict[str, Any]:
        choices = [self._choice(i, completions[i]) for i in sorted(completions)]
        self.completion_tokens = sum(len(c.token_ids) for c in completions.values())
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage(self.prompt_tokens, self.completion_tokens),
            "system_fingerprint": None,
        }

    def _choice(self, index: int, c: Completion) -> dict[str, Any]:
        logprobs = None
        if self.chat:
            if self.logprobs is not None:
                logprobs = self.tokens.chat_logprobs(c.token_ids, c.logprobs, c.top_logprobs)
            message = {"role": "assistant", "content": c.text}
            return {
                "index": index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
            }
        echo = self.echo_texts[index] if self.echo_texts else ""
        if self.logprobs is not None:
            logprobs = self.tokens.completion_logprobs(c.token_ids, c.logprobs, c.top_logprobs, len(echo))
        return {"index": index, "text": echo + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason}

    # -- stream chunks ---------------------------------------------------------------------------

    def opening(self, indices: list[int], include_usage: bool) -> list[str]:
        """The chunks before any token: the assistant role (chat) or the echoed prompt (completions)."""
        if self.chat:
            choices = [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for i in indices
            ]
        elif self.echo_texts:
            choices = [
                {"index": i, "text": self.echo_texts[i], "logprobs": None, "finish_reason": None}
                for i in indices
            ]
            self.offsets = {i: len(self.echo_texts[i]) for i in indices}
        else:
            return []
        return [self._chunk(choices, include_usage)]

    def chunk(self, index: int, event: Event, include_usage: bool) -> str | None:
        """The chunk for one event (None when it adds nothing: text held back, no log-probs asked)."""
        self.completion_tokens += len(event.token_ids)
        wants_logprobs = self.logprobs is not None and event.token_ids
        if not event.text and not event.finished and not wants_logprobs:
            return None
        logprobs = None
        if wants_logprobs:
            if self.chat:
                logprobs = self.tokens.chat_logprobs(event.token_ids, event.logprobs, event.top_logprobs)
            else:
                offset = self.offsets.get(index, 0)
                logprobs = self.tokens.completion_logprobs(
                    event.token_ids, event.logprobs, event.top_logprobs, offset
                )
                self.offsets[index] = offset + sum(len(t) for t in logprobs["tokens"])
        choice: dict[str, Any] = {"index": index}
        if self.chat:
            choice["delta"] = {"content": event.text} if event.text or not event.finished else {}
        else:
            choice["text"] = event.text
        choice["logprobs"] = logprobs
        choice["finish_reason"] = event.finish_reason
        return self._chunk([choice], include_usage)

    def usage_chunk(self) -> str:
        body = self._envelope([])
        body["usage"] = usage(self.prompt_tokens, self.completion_tokens)
        return sse(body)

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> str:
        body = self._envelope(choices)
        if include_usage:
            body["usage"] = None
        return sse(body)

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def sse(data: Any) -> str:
    """One server-sent event carrying a JSON object (or the literal [DONE])."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"
