"""Constrained output: a choice list, a regular expression or a JSON schema, as a token-level automaton.

How it works:
1. The tokenizer's vocabulary becomes a *token table*: for each id, the exact bytes the token adds to
   the text (`token_table`), None for special tokens. Byte-level BPE pieces (GPT-2, Llama 3, SmolLM2,
   Qwen2) are written in GPT-2's printable alphabet (`Ġ` for a space byte, ...), so each character is
   mapped back through the inverse of `bytes_to_unicode()`; SentencePiece pieces map `▁` to a space and
   `<0xNN>` to the byte NN. A token may be part of a UTF-8 character: the automaton works on bytes.
2. A choice list becomes the regex `(c1|c2|...)` (escaped); a JSON schema becomes a regex with
   outlines-core's `build_regex_from_schema` (objects with properties in schema order, arrays, strings,
   numbers, integers, booleans, null, enums, required fields, minItems/maxItems, min/maxLength).
3. outlines-core (Rust) compiles the regex to a byte-level DFA and walks it over every token's bytes,
   giving an `Index`: state -> {allowed token: next state}. `TokenAutomaton` wraps it: the allowed mask
   of a state (cached as a bool tensor), the next state, whether a state accepts. Stop tokens (EOS) are
   allowed only in accepting states and lead to `FINISHED`.
4. `Constraint` holds one automaton state per row and is what decoding strategies use:
   `mask(scores)` sets forbidden logits to -inf, `advance(tokens)` moves every row, `reorder(index)`
   follows beams, `rollback(n)` / `snapshot()` / `restore()` undo steps (speculative decoding).

Rows that finished (emitted a stop token) or that were given a token the automaton forbids (the engine
pads finished rows) stop constraining: `FINISHED` / `DEAD` states allow every token, so padding never
makes a row of -inf scores.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lmforge.errors import LMForgeError

FINISHED = -1  # a stop token was accepted: the row is done
DEAD = -2  # the row took a token the automaton forbids (padding after another stop rule): unconstrained

TokenTable = list[bytes | None]


# -- the token table ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


@lru_cache(maxsize=1)
def _byte_level_translation() -> dict[int, str]:
    """str.translate table: alphabet char -> chr(byte); chars below 256 outside the alphabet -> U+FFFF."""
    table = {c: "\uffff" for c in range(256)}
    table.update({ord(ch): chr(b) for ch, b in _unicode_to_bytes().items()})
    return table


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def piece_to_bytes(piece: str, kind: str) -> bytes:
    """The bytes one vocabulary piece adds to the text. `kind`: "byte_level", "sentencepiece" or "text"."""
    if kind == "byte_level":
        try:  # each alphabet character -> the latin-1 character of its byte; any other char fails
            return piece.translate(_byte_level_translation()).encode("latin-1")
        except UnicodeEncodeError:
            return piece.encode("utf-8")
    if kind == "sentencepiece":
        m = _BYTE_PIECE.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")
    return piece.encode("utf-8")


def _hf_backend(tokenizer: Any) -> Any | None:
    """The `tokenizers.Tokenizer` inside a tokenizer object, if there is one."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:  # pragma: no cover
        return None
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer
    for name in ("backend", "backend_tokenizer", "_tokenizer", "tokenizer", "hf", "_hf", "_backend"):
        inner = getattr(tokenizer, name, None)
        if isinstance(inner, HFTokenizer):
            return inner
    return None


def _decoder_kind(decoder: dict | None) -> str:
    """byte_level / sentencepiece / text from a tokenizer.json decoder description."""
    if not decoder:
        return "text"
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
    if "ByteLevel" in kinds:
        return "byte_level"
    if "ByteFallback" in kinds or "Metaspace" in kinds:
        return "sentencepiece"
    if any(
        d.get("type") == "Replace" and "\u2581" in json.dumps(d) for d in decoder.get("decoders", []) or []
    ):
        return "sentencepiece"
    return "text"


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_table(tokenizer: Any, vocab_size: int | None = None) -> TokenTable:
    """For each token id, the bytes it adds to the text; None for special tokens (never constrained in).

    Accepts a `tokenizers.Tokenizer`, an object wrapping one (lmforge's Tokenizer, a transformers fast
    tokenizer), an object with `token_table()` / `token_bytes(id)`, or a ready list of bytes/str pieces.
    Anything else falls back to `decode([id])`, exact for tokens that are whole characters; tokens that
    decode to U+FFFD (part of a character) are left out rather than guessed.
    """
    try:
        cached = _TABLES.get(tokenizer)
    except TypeError:  # not weak-referenceable (a list, a Rust object): no cache
        cached = None
    if cached is not None and (vocab_size is None or len(cached) == vocab_size):
        return cached
    gc_was_on = gc.isenabled()
    gc.disable()  # reading ~50k pieces (and the merges in tokenizer.json) would trigger full collections
    try:
        table = _read_table(tokenizer, vocab_size)
    finally:
        if gc_was_on:
            gc.enable()
    if vocab_size is not None:
        table = table[:vocab_size] + [None] * max(0, vocab_size - len(table))
    table = [t if t else None for t in table]  # empty pieces never help a constraint
    with contextlib.suppress(TypeError):
        _TABLES[tokenizer] = table
    return table


def _read_table(tokenizer: Any, vocab_size: int | None) -> TokenTable:
    if isinstance(tokenizer, (list, tuple)):
        table = [p.encode("utf-8") if isinstance(p, str) else p for p in tokenizer]
    elif callable(getattr(tokenizer, "token_table", None)):
        table = list(tokenizer.token_table())
    elif (backend := _hf_backend(tokenizer)) is not None:
        table = _table_from_hf(backend)
        for i in getattr(tokenizer, "all_special_ids", None) or []:  # named specials (eos, bos, ...)
            if 0 <= i < len(table):
                table[i] = None
    elif callable(
        method := getattr(tokenizer, "token_bytes", None) or getattr(tokenizer, "id_to_bytes", None)
    ):
        n = vocab_size or tokenizer.vocab_size
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        table = [None if i in special else method(i) for i in range(n)]
    elif callable(getattr(tokenizer, "decode", None)):
        n = vocab_size or tokenizer.vocab_size
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        table = [None if i in special else _decoded_piece(tokenizer, i) for i in range(n)]
    else:
        raise LMForgeError(
            f"cannot read a vocabulary from {type(tokenizer).__name__}; pass a list of token bytes"
        )
    return table


def _decoded_piece(tokenizer: Any, token_id: int) -> bytes | None:
    """A token's bytes from `decode([id])`; None when that cannot be exact (part of a UTF-8 character
    decodes to U+FFFD), so a constraint never relies on a guessed spelling."""
    text = tokenizer.decode([token_id])
    return None if "\ufffd" in text else text.encode("utf-8")


def _table_from_hf(backend: Any) -> TokenTable:
    spec = json.loads(backend.to_str())
    kind = _decoder_kind(spec.get("decoder"))
    vocab = backend.get_vocab(with_added_tokens=True)
    table: TokenTable = [None] * (max(vocab.values()) + 1 if vocab else 0)
    for piece, i in vocab.items():
        table[i] = piece_to_bytes(piece, kind)
    for added in spec.get("added_tokens", []):
        table[added["id"]] = None if added.get("special") else added["content"].encode("utf-8")
    return table


def token_table_from_gguf(meta: dict[str, Any]) -> TokenTable:
    """The token table from GGUF tokenizer metadata (`tokenizer.ggml.*`): control tokens are None."""
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type")
    kind = "byte_level" if meta.get("tokenizer.ggml.model") == "gpt2" else "sentencepiece"
    table: TokenTable = []
    for i, piece in enumerate(tokens):
        ttype = types[i] if types else 1
        table.append(None if ttype in (2, 3) else piece_to_bytes(piece, kind))  # 2 unknown, 3 control
    return table


# -- compiling ---------------------------------------------------------------------------------------

_REGEX_META = set("\\.+*?()|[]{}^$#&-~")


def escape_regex(text: str) -> str:
    """Escape `text` for outlines-core's regex syntax (Rust `regex`): only meta characters."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)


def choices_regex(choices: Sequence[str]) -> str:
    return "(" + "|".join(escape_regex(c) for c in choices) + ")"


def json_schema_regex(schema: dict[str, Any] | str, whitespace: str | None = None) -> str:
    """The regex of every JSON text valid under `schema` (outlines-core), or a one-line error."""
    from outlines_core.json_schema import build_regex_from_schema

    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return build_regex_from_schema(text, whitespace) if whitespace else build_regex_from_schema(text)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LMForgeError(f"cannot compile json_schema: {first}") from None


@dataclass(eq=False)
class TokenAutomaton:
    """A compiled constraint: per-state allowed tokens and transitions over one vocabulary (immutable)."""

    pattern: str
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    index: Any  # outlines_core.Index
    initial_state: int
    mask_cache_size: int = 1024  # masks of V bools each: 48 MiB at V = 49152
    _masks: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _finals: frozenset[int] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        self._finals = frozenset(self.index.get_final_states())
        self._eos = torch.tensor(self.eos_token_ids, dtype=torch.long)

    # functional interface: states are plain ints

    def is_accepting(self, state: int) -> bool:
        """The text so far matches the whole pattern (a stop token may end it here)."""
        return state == FINISHED or state in self._finals

    def is_complete(self, state: int) -> bool:
        """The row finished with a stop token in an accepting state."""
        return state == FINISHED

    def forbidden(self, state: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(V,) bool: tokens `state` forbids (cached per state and device; FINISHED/DEAD forbid none)."""
        key = (state if state not in (FINISHED, DEAD) else DEAD, str(device))
        mask = self._masks.get(key)
        if mask is not None:
            self._masks.move_to_end(key)
            return mask
        mask = torch.ones(self.vocab_size, dtype=torch.bool)
        if state in (FINISHED, DEAD):
            mask[:] = False
        else:
            ids = np.asarray(self.index.get_allowed_tokens(state) or [], dtype=np.int64)
            ids = ids[ids < self.vocab_size]
            mask[torch.from_numpy(ids)] = False
            mask[self._eos] = state not in self._finals
            if bool(mask.all()):  # a dead end in this vocabulary: let the row stop rather than fail
                mask[self._eos] = False
        mask = mask.to(device)
        self._masks[key] = mask
        if len(self._masks) > self.mask_cache_size:
            self._masks.popitem(last=False)
        return mask

    def allowed(self, state: int) -> torch.Tensor:
        """(V,) bool: tokens allowed in `state` (stop tokens only where the text so far matches)."""
        return ~self.forbidden(state)

    def forbidden_mask(self, states: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, V) bool: forbidden tokens of each row's state."""
        return torch.stack([self.forbidden(s, device) for s in states])

    def next_state(self, state: int, token: int) -> int:
        if state in (FINISHED, DEAD):
            return state
        if token in self.eos_token_ids:
            return FINISHED if state in self._finals else DEAD
        nxt = self.index.get_next_state(state, token)
        return DEAD if nxt is None else int(nxt)

    def advance(self, states: Sequence[int], token_ids: Sequence[int] | torch.Tensor) -> list[int]:
        tokens = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
        return [self.next_state(s, int(t)) for s, t in zip(states, tokens, strict=True)]

    def accepts(self, token_ids: Sequence[int]) -> bool:
        """Whether this token sequence (optionally ending in a stop token) is a complete match."""
        state = self.initial_state
        for t in token_ids:
            state = self.next_state(state, int(t))
            if state == DEAD:
                return False
        return self.is_accepting(state)

    def new(self, rows: int) -> Constraint:
        """A `Constraint` with `rows` rows in the initial state."""
        return Constraint(self, [self.initial_state] * rows)


_COMPILED: OrderedDict[tuple, TokenAutomaton] = OrderedDict()


_VOCABULARIES: dict[tuple, Any] = {}


def _pieces(table: TokenTable, eos: tuple[int, ...], vocab_size: int) -> dict[bytes, list[int]]:
    """bytes -> token ids (several ids may spell the same bytes), stop tokens left out."""
    pieces: dict[bytes, list[int]] = {}
    gc_was_on = gc.isenabled()
    gc.disable()  # ~50k small lists would trigger full collections over torch's heap: 7x slower
    try:
        for i, piece in enumerate(table[:vocab_size]):
            if piece and i not in eos:
                pieces.setdefault(piece, []).append(i)
    finally:
        if gc_was_on:
            gc.enable()
    return pieces


def compile_regex(
    pattern: str,
    table: TokenTable,
    eos_token_ids: int | Sequence[int],
    vocab_size: int | None = None,
) -> TokenAutomaton:
    """Compile `pattern` over a token table; a pattern the vocabulary cannot produce or that does not
    parse is a one-line LMForgeError. Compiled automata are cached per (pattern, vocabulary)."""
    from outlines_core import Index, Vocabulary

    eos = (eos_token_ids,) if isinstance(eos_token_ids, int) else tuple(int(t) for t in eos_token_ids)
    if not eos:
        raise LMForgeError(
            "constrained output needs a stop token to end on, and there is none (no EOS in the tokenizer, "
            "or ignore_eos=True): pass stop_token_ids"
        )
    vocab_size = vocab_size or len(table)
    vocab_key = (hash(tuple(table)), eos, vocab_size)
    key = (pattern, *vocab_key)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    try:
        vocabulary = _VOCABULARIES.get(vocab_key)
        if vocabulary is None:
            vocabulary = _VOCABULARIES[vocab_key] = Vocabulary(eos[0], _pieces(table, eos, vocab_size))
            if len(_VOCABULARIES) > 4:
                del _VOCABULARIES[next(iter(_VOCABULARIES))]
        index = Index(pattern, vocabulary)
    except (ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        try:  # Python's parser names plain syntax errors more clearly than the DFA builder
            re.compile(pattern)
        except re.error as py_exc:
            first = f"{py_exc}"
        if len(first) > 200:
            first = first[:197] + "..."
        raise LMForgeError(f"cannot compile the output constraint {pattern[:60]!r}: {first}") from None
    automaton = TokenAutomaton(pattern, vocab_size, eos, index, int(index.get_initial_state()))
    _COMPILED[key] = automaton
    if len(_COMPILED) > 16:
        _COMPILED.popitem(last=False)
    return automaton


def compile_constraint(
    table: TokenTable,
    eos_token_ids: int | Sequence[int],
    *,
    choices: Sequence[str] | None = None,
    regex: str | None = None,
    json_schema: dict[str, Any] | str | None = None,
    vocab_size: int | None = None,
) -> TokenAutomaton:
    """Compile exactly one of `choices`, `regex`, `json_schema` over the token table."""
    given = [
        n for n, v in (("choices", choices), ("regex", regex), ("json_schema", json_schema)) if v is not None
    ]
    if len(given) != 1:
        raise LMForgeError(
            f"give exactly one of choices, regex, json_schema (got {', '.join(given) or 'none'})"
        )
    if choices is not None:
        if not choices or not all(isinstance(c, str) and c for c in choices):
            raise LMForgeError("choices must be a non-empty list of non-empty strings")
        pattern = choices_regex(choices)
    elif regex is not None:
        pattern = regex
    else:
        pattern = json_schema_regex(json_schema)
    return compile_regex(pattern, table, eos_token_ids, vocab_size)


# -- per-row state -----------------------------------------------------------------------------------


@dataclass
class Constraint:
    """One automaton state per row, moved along as tokens are chosen.

    `mask(scores)` -> scores with forbidden tokens at -inf; `advance(tokens)`; `reorder(index)` for beam
    search; `rollback(n)`, `snapshot()`/`restore()` for speculative decoding; `clone()`.
    """

    automaton: TokenAutomaton
    states: list[int]
    max_history: int = 64
    history: list[list[int]] = field(default_factory=list, repr=False)

    @property
    def size(self) -> int:
        return len(self.states)

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores (B, V) with forbidden tokens at -inf. If an earlier processor already removed every
        allowed token of a row, that row falls back to a uniform choice among the allowed tokens."""
        if scores.shape[0] != len(self.states):
            raise ValueError(f"constraint has {len(self.states)} rows but scores have {scores.shape[0]}")
        forbidden = self.automaton.forbidden_mask(self.states, scores.device)
        V = scores.shape[-1]
        if forbidden.shape[-1] != V:  # model head wider/narrower than the automaton's vocabulary
            pad = torch.ones(
                forbidden.shape[0], max(0, V - forbidden.shape[-1]), dtype=torch.bool, device=scores.device
            )
            forbidden = torch.cat([forbidden, pad], dim=-1)[:, :V]
        out = scores.masked_fill(forbidden, float("-inf"))
        empty = out.amax(dim=-1) == float("-inf")
        if bool(empty.any()):
            out[empty] = torch.where(forbidden[empty], float("-inf"), 0.0).to(out.dtype)
        return out

    def advance(self, token_ids: Sequence[int] | torch.Tensor) -> None:
        self.history.append(self.states)
        if len(self.history) > self.max_history:
            del self.history[0]
        self.states = self.automaton.advance(self.states, token_ids)

    def rollback(self, steps: int) -> None:
        """Undo the last `steps` advances (at most `max_history`)."""
        if steps > len(self.history):
            raise ValueError(f"cannot roll back {steps} steps; only {len(self.history)} are kept")
        if steps > 0:
            self.states = self.history[-steps]
            del self.history[-steps:]

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.states)

    def restore(self, snapshot: Sequence[int]) -> None:
        self.states = list(snapshot)
        self.history.clear()

    def reorder(self, index: torch.Tensor | Sequence[int]) -> None:
        """Select/reorder rows (beam search); `index` may repeat rows."""
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        self.states = [self.states[i] for i in idx]
        self.history = [[h[i] for i in idx] for h in self.history]

    def clone(self) -> Constraint:
        return Constraint(
            self.automaton, list(self.states), self.max_history, [list(h) for h in self.history]
        )

    def is_complete(self, row: int) -> bool:
        """The row ended with a stop token after a full match."""
        return self.automaton.is_complete(self.states[row])

    def is_accepting(self, row: int) -> bool:
        """The row's text so far is a full match (it may stop now)."""
        return self.automaton.is_accepting(self.states[row])


# -- from generation options -------------------------------------------------------------------------


def from_config(
    config: Any,
    tokenizer: Any,
    vocab_size: int,
    eos_token_ids: int | Sequence[int] | None = None,
) -> Callable[[int], Constraint] | None:
    """Compile the constraint that `config` asks for (or return None); the result makes a fresh
    `Constraint` for a number of rows. Also validates `config` against `vocab_size`, so every bad option
    fails here, before any model work."""
    if hasattr(config, "validate"):
        config.validate(vocab_size)
    kind = getattr(config, "constraint_kind", None)
    if kind is None:
        return None
    if tokenizer is None:
        raise LMForgeError(f"a {kind} constraint needs the model's tokenizer to know what each token spells")
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        eos_token_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    extra = list(getattr(config, "stop_token_ids", None) or [])
    eos_list = list(
        dict.fromkeys([*([eos_token_ids] if isinstance(eos_token_ids, int) else eos_token_ids), *extra])
    )
    table = token_table(tokenizer, vocab_size)
    automaton = compile_constraint(
        table,
        eos_list,
        choices=config.choices,
        regex=config.regex,
        json_schema=config.json_schema,
        vocab_size=vocab_size,
    )
    return automaton.new
