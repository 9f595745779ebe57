"""OpenAI's request and response shapes, translated to and from lmforge's generation options.

A request body holds OpenAI's own fields (declared below with `option`, once) and, as extra fields
(as vLLM takes them), any `GenerationConfig` option the running batch serves: `top_k`, `min_p`,
`repetition_penalty`, `regex`, `ignore_eos`, ... The request schema in /openapi.json is both sets of
fields (`request_schema`), and a body is checked by the same code that checks the CLI's and the
Python API's options (`GenerationConfig`), so the server never keeps a copy of them.

OpenAI's names map onto ours: `max_tokens`/`max_completion_tokens` -> `max_new_tokens`, `min_tokens`
(vLLM) -> `min_new_tokens`, `logprobs`/`top_logprobs` -> `logprobs`/`top_logprobs`, `response_format`
json_object / json_schema -> `json_schema`. As in OpenAI's API a request samples (temperature 1 unless
the model's generation defaults or the request say otherwise); `temperature: 0` is greedy.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.generate.config import GenerationConfig
from lmforge.options import check_value, json_schema, nearest, option, same_as

# GenerationConfig options a continuous batch does not serve per request (whole-call strategies and the
# step compiled at load time), and those OpenAI names itself (declared in the request fields below)
NOT_SERVED = (
    "num_return_sequences",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "penalty_alpha",
    "contrastive_alpha",
    "prompt_lookup",
    "num_draft_tokens",
    "prompt_lookup_max_ngram",
    "compile",
    "aot",
)
OPENAI_OWNED = ("logprobs", "top_logprobs")
MAX_TOP_LOGPROBS = 20


@dataclass
class ChatRequest:
    """The OpenAI fields of `POST /v1/chat/completions` (GenerationConfig options come on top)."""

    messages: list[dict[str, Any]] = option(
        help='the conversation: {"role": "system" | "user" | "assistant", "content": text} objects'
    )
    model: str | None = option(None, "model id from GET /v1/models (default: the served generation model)")
    max_completion_tokens: int | None = option(None, "most tokens to generate (OpenAI's newer name)")
    max_tokens: int | None = option(
        None, "most tokens to generate (default: the server's --max-tokens, capped to the context)"
    )
    min_tokens: int | None = option(None, "tokens to generate before a stop token may end (vLLM's name)")
    n: int = option(1, "choices to generate (sampled ones differ; with a seed, choice i uses seed + i)")
    stream: bool = option(False, "send the reply as server-sent events, ending with data: [DONE]")
    stream_options: dict[str, Any] | None = option(
        None, '{"include_usage": true} adds a last chunk with the token usage'
    )
    logprobs: bool = option(False, "return the log-probability of each generated token")
    top_logprobs: int | None = option(
        None, f"with logprobs: the 0-{MAX_TOP_LOGPROBS} most likely alternatives"
    )
    response_format: dict[str, Any] | None = option(
        None,
        '{"type": "text" | "json_object" | "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
    )
    user: str | None = option(None, "an end-user id (accepted, not used)")


@dataclass
class CompletionRequest:
    """The OpenAI fields of `POST /v1/completions` (GenerationConfig options come on top)."""

    prompt: str | list[str] | list[int] | list[list[int]] = option(
        help="prompt text, or token ids, or a list of either (one choice set per prompt)"
    )
    model: str | None = same_as(ChatRequest, "model")
    max_tokens: int | None = same_as(ChatRequest, "max_tokens")
    min_tokens: int | None = same_as(ChatRequest, "min_tokens")
    n: int = same_as(ChatRequest, "n")
    stream: bool = same_as(ChatRequest, "stream")
    stream_options: dict[str, Any] | None = same_as(ChatRequest, "stream_options")
    logprobs: int | None = option(
        None, f"return each token's log-probability and this many (0-{MAX_TOP_LOGPROBS}) alternatives"
    )
    echo: bool = option(False, "put the prompt text before the completion in the reply")
    response_format: dict[str, Any] | None = same_as(ChatRequest, "response_format")
    user: str | None = same_as(ChatRequest, "user")


@dataclass
class EmbeddingRequest:
    """`POST /v1/embeddings`."""

    input: str | list[str] = option(help="text, or a list of texts, to embed")
    model: str | None = option(None, "model id from GET /v1/models (default: the server's embedding model)")
    encoding_format: str = option("float", "float (a list of numbers) or base64 (little-endian float32)")
    dimensions: int | None = option(None, "must equal the model's embedding size when given")
    user: str | None = same_as(ChatRequest, "user")


@dataclass
class TokenizeRequest:
    """`POST /tokenize`: text or a conversation -> token ids (as /v1/completions or /v1/chat sees them)."""

    prompt: str | None = option(None, "text to tokenize")
    messages: list[dict[str, Any]] | None = option(None, "a conversation to render with the chat template")
    model: str | None = same_as(ChatRequest, "model")
    add_special_tokens: bool = option(True, "add the tokens the tokenizer adds around a text (e.g. BOS)")
    add_generation_prompt: bool = option(True, "with messages: end with the assistant's turn opening")


@dataclass
class DetokenizeRequest:
    """`POST /detokenize`: token ids -> text."""

    tokens: list[int] = option(help="token ids to decode")
    model: str | None = same_as(ChatRequest, "model")


class APIError(Exception):
    """An error answered in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


# -- the request schema ------------------------------------------------------------------------------


def generation_fields() -> list[str]:
    """The GenerationConfig options a request may give as extra fields."""
    skip = set(NOT_SERVED) | set(OPENAI_OWNED)
    return [f.name for f in dataclasses.fields(GenerationConfig) if f.name not in skip]


MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}},
                        "required": ["type", "text"],
                    },
                },
            ]
        },
    },
    "required": ["role", "content"],
}


def request_schema(fields: type, generation: bool = True, models: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema of a request body: the endpoint's own fields (+ the served GenerationConfig
    options); `models` names the ids `model` may take."""
    schema = json_schema(fields)
    required = [f.name for f in dataclasses.fields(fields) if f.default is dataclasses.MISSING]
    properties = dict(schema["properties"])
    if generation:
        extra = json_schema(GenerationConfig, skip=(*NOT_SERVED, *OPENAI_OWNED))["properties"]
        extra["stop"] = {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}],
            "description": extra["stop"]["description"],
        }
        properties = {**properties, **extra}
    if "messages" in properties:  # the shape chat_messages accepts
        described = {"description": properties["messages"].get("description", "")}
        item = {"type": "array", "items": MESSAGE_SCHEMA}
        nullable = "messages" not in required
        properties["messages"] = {**({"anyOf": [item, {"type": "null"}]} if nullable else item), **described}
    if models and "model" in properties:
        properties["model"] = {
            "anyOf": [{"enum": models}, {"type": "null"}],
            **_described(properties["model"]),
        }
    return {**schema, "properties": properties, "required": required}


def _described(prop: dict[str, Any]) -> dict[str, Any]:
    return {"description": prop["description"]} if "description" in prop else {}


# -- parsing -----------------------------------------------------------------------------------------


@dataclass
class Parsed:
    """A generation request, checked: what the handler submits and how it answers."""

    model: str
    prompts: list[list[int]]  # token ids of each prompt (a chat request has one)
    options: list[dict[str, Any]]  # GenerationConfig options of each prompt (max_new_tokens fitted to it)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None  # None: off; else how many alternatives per token
    # the request field each option came from (max_new_tokens <- max_tokens, ...): errors name it
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def choice_options(self, prompt: int, choice: int) -> dict[str, Any]:
        """Options of one choice for one prompt: a given seed moves on by one per choice."""
        options = self.options[prompt]
        seed = options.get("seed")
        return options if seed is None else {**options, "seed": seed + choice}

    @property
    def constraint(self) -> str | None:
        """The output constraint asked for (its option name), if any."""
        return next(
            (k for k in ("json_schema", "regex", "choices") if self.options[0].get(k) is not None), None
        )


def check_fields(body: Any, fields: type, generation: bool = True) -> dict[str, Any]:
    """Refuse a body that is not an object, unknown fields (naming the nearest), strategies the batch
    does not serve, and OpenAI fields of the wrong type; return the body."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    own = {f.name for f in dataclasses.fields(fields)}
    known = own | (set(generation_fields()) if generation else set())
    for name in body:
        if generation and name in NOT_SERVED:
            raise bad_request(
                f"{name} is not served: the server's continuous batch runs greedy or sampled decoding "
                "(use `lmforge generate` for beam search, contrastive or speculative decoding)",
                name,
            )
        if name not in known:
            guess = nearest(name, known)
            hint = f"; did you mean {guess}?" if guess else ""
            raise bad_request(f"unknown parameter {name}{hint}", name, "unknown_parameter")
    hints = typing.get_type_hints(fields)
    for f in dataclasses.fields(fields):
        if f.name in body:
            try:
                check_value(f.name, body[f.name], hints[f.name], "request")
            except LMForgeError as exc:
                raise bad_request(str(exc), f.name) from None
        elif f.default is dataclasses.MISSING:
            raise bad_request(f"missing required parameter {f.name}", f.name, "missing_parameter")
    return body


def generation_options(body: dict[str, Any], lm: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The GenerationConfig options of a request, and which request field each came from."""
    names = set(generation_fields())
    options = {k: v for k, v in body.items() if k in names}
    source = {k: k for k in options}
    for alias, ours in (("min_tokens", "min_new_tokens"), ("max_tokens", "max_new_tokens")):
        if body.get(alias) is not None:
            options[ours], source[ours] = body[alias], alias
    if body.get("max_completion_tokens") is not None:
        options["max_new_tokens"], source["max_new_tokens"] = (
            body["max_completion_tokens"],
            "max_completion_tokens",
        )
    fmt = body.get("response_format")
    if fmt is not None:
        schema = response_format_schema(fmt)
        if schema is not None:
            if "json_schema" in options:
                raise bad_request("give response_format or json_schema, not both", "response_format")
            options["json_schema"], source["json_schema"] = schema, "response_format"
    if "do_sample" not in options:  # OpenAI samples unless the temperature is 0
        defaults = getattr(lm, "generation_config", None) or {}
        temperature = options.get("temperature", defaults.get("temperature", 1.0))
        options["do_sample"] = temperature != 0
    return options, source


def response_format_schema(fmt: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a response_format asks for (None for plain text)."""
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                "response_format",
            )
        return spec.get("schema") or {"type": "object"}
    raise bad_request(
        f"response_format type must be text, json_object or json_schema, not {kind!r}", "response_format"
    )


def validate_options(options: dict[str, Any], source: dict[str, str], lm: Any) -> GenerationConfig:
    """Check options as every lmforge front end does (GenerationConfig against the model's vocabulary);
    a refusal names the request field it came from."""
    hints = typing.get_type_hints(GenerationConfig)
    for name, value in options.items():  # JSON types first: the loose forms the CLI may give are text
        if not (name == "stop" and isinstance(value, str)):
            try:
                check_value(name, value, hints[name], "request")
            except LMForgeError as exc:
                raise option_error(exc, source) from None
    try:
        config = GenerationConfig.from_hf(getattr(lm, "generation_config", None) or {}, **options)
        config.validate(lm.model.config.vocab_size)
    except LMForgeError as exc:
        raise option_error(exc, source) from None
    except (TypeError, ValueError, OverflowError) as exc:  # a value no check foresaw: still the request's
        raise bad_request(f"invalid generation options: {type(exc).__name__}: {exc}") from None
    return config


def option_error(exc: Exception, source: dict[str, str]) -> APIError:
    """A 400 for an option lmforge refused, with `param` the request field the option came from."""
    message = str(exc)
    match = re.search(r"option (\w+)", message)
    name = match.group(1) if match else None
    param = source.get(name, name) if name else None
    if param and param != name:
        message = f"{message} (from {param})"
    return bad_request(message, param)


def include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not body.get("stream"):
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")
    value = opts.get("include_usage", False)
    if not isinstance(value, bool):
        raise bad_request("stream_options.include_usage must be true or false", "stream_options")
    return value


def check_n(n: int, prompts: int, limit: int) -> int:
    """n, when the request's n x prompts sequences fit the server at all (else retrying cannot help)."""
    if n < 1:
        raise bad_request("n must be at least 1", "n")
    if n * prompts > limit:
        what = f"n={n} choices for {prompts} prompts" if prompts > 1 else f"n={n} choices"
        raise bad_request(f"{what} exceed the {limit} sequences this server holds (batch plus queue)", "n")
    return n


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages in the shape a chat template reads: role and text content (text parts joined)."""
    if not messages:
        raise bad_request("messages must hold at least one message", "messages")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad_request(
                f"messages[{i}].role must be system, developer, user or assistant, not {role!r}", "messages"
            )
        content = m.get("content")
        if isinstance(content, list):
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content
            ):
                raise bad_request(f"messages[{i}].content parts must be text parts", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise bad_request(f"messages[{i}].content must be a string or a list of text parts", "messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def prompt_items(prompt: Any) -> list[str | list[int]]:
    """The prompts of a completions request: a text, token ids, or a list of either."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt is empty", "prompt")
    if all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def fit_context(
    options: dict[str, Any],
    prompt_length: int,
    context: int,
    default_max: int,
    param: str,
    source: dict[str, str],
) -> dict[str, Any]:
    """Options for one prompt: max_new_tokens defaulted (and capped to the room the context leaves), or
    the request refused when its prompt plus max_tokens does not fit."""
    room = context - prompt_length
    if room < 1:
        raise bad_request(
            f"the prompt has {prompt_length} tokens, and the model's context is {context}: shorten it",
            param,
            "context_length_exceeded",
        )
    if "max_new_tokens" not in options:
        return {**options, "max_new_tokens": min(default_max, room)}
    wanted = options["max_new_tokens"]
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > room:
        field = source.get("max_new_tokens", "max_new_tokens")
        raise bad_request(
            f"the prompt ({prompt_length} tokens) plus {field}={wanted} exceeds the model's context of "
            f"{context} tokens",
            field,
            "context_length_exceeded",
        )
    return options
