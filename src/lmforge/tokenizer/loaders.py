"""Tokenizer formats: GGUF metadata, tiktoken rank files, SentencePiece `.model`, BERT vocab.txt.

Each reader builds the `tokenizers` pipeline the format implies and returns it with the facts the
format keeps beside it (special tokens, chat template, BOS/EOS) as `TokenizerParts`; `Tokenizer`
(core.py) is built from those (`Tokenizer.from_gguf`, `.from_tiktoken`, ...). Core imports this module;
this module never imports core.

| source | model | pre-tokenizer | decoder |
|---|---|---|---|
| GGUF `gpt2` (SmolLM2, Llama 3, Qwen2) | byte-level BPE, merges from the file | regex chosen by `tokenizer.ggml.pre` + ByteLevel | ByteLevel |
| GGUF `llama` (Llama 2, TinyLlama) | SentencePiece BPE with byte fallback | Metaspace | `▁`->space, bytes, strip |
| tiktoken ranks | byte-level BPE, merges recovered from ranks | Split(pattern) + ByteLevel | ByteLevel |
| SentencePiece `.model` | BPE or Unigram from the proto | its normalizer spec + Metaspace | as above |
| BERT `vocab.txt` | WordPiece | BertNormalizer + BertPreTokenizer | WordPiece |

The GGUF pre-tokenizer regexes are llama.cpp's (the same table transformers uses for GGUF files).
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, Unigram, WordPiece

from lmforge.errors import LMForgeError

if TYPE_CHECKING:
    pass


@dataclass
class TokenizerParts:
    """A tokenizer as a format describes it: the engine and the facts kept beside it (the arguments of
    `Tokenizer`)."""

    backend: Backend
    special_tokens: dict[str, str | None] = field(default_factory=dict)
    chat_template: str | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    model_max_length: int | None = None


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (spaces become `Ġ`, newlines `Ċ`)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_level_spelling(data: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in data)


# ---- GGUF -----------------------------------------------------------------------------------------

# llama.cpp token types (gguf `tokenizer.ggml.token_type`)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# `tokenizer.ggml.pre` -> (regexes applied in order, each isolating its matches). The GPT-2 regex is
# the ByteLevel pre-tokenizer's own; SmolLM adds a split into single digits before it.
GGUF_PRE_SPLITS: dict[str, list[str]] = {
    "default": [GPT2_REGEX],
    "gpt2": [GPT2_REGEX],
    "gpt-2": [GPT2_REGEX],
    "smollm": [r"\p{N}", GPT2_REGEX],
    "starcoder": [r"\p{N}", GPT2_REGEX],
    "refact": [r"\p{N}", GPT2_REGEX],
    **dict.fromkeys(
        ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "dbrx", "smaug-bpe", "lfm2"],
        [LLAMA3_REGEX],
    ),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "megrez"], [QWEN2_REGEX]),
    **dict.fromkeys(["gpt-4o", "llama4"], [GPT4O_REGEX]),
    "tekken": [TEKKEN_REGEX],
}


def _gguf_list(meta: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> list | None:
    """`meta[key]` checked to be a list of `kind` (None if absent): GGUF metadata is untrusted input."""
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise LMForgeError(
            f"GGUF metadata '{key}' is {value!r:.40}, expected a list of {getattr(kind, '__name__', kind)}"
        )
    return value


def _post_processor(bos: str | None, eos: str | None, vocab: dict[str, int]) -> processors.TemplateProcessing:
    """`[bos] $A [eos]` (each optional) for single texts; pairs repeat it, as Llama's tokenizer.json does."""
    single = ([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else [])
    pair = single + ([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else [])
    missing = [t for t in (bos, eos) if t and t not in vocab]
    if missing:
        raise LMForgeError(f"special token {missing[0]!r:.40} is not in the vocabulary")
    specials = [(t, vocab[t]) for t in {bos, eos} if t]
    try:
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    except Exception as exc:  # the Rust side raises plain Exceptions (a token it cannot parse)
        raise LMForgeError(f"cannot add {bos!r:.40} / {eos!r:.40} around the text ({exc})") from None


def _gguf_added_tokens(backend: Backend, tokens: list[str], types: list[int], byte_level: bool) -> None:
    """Control (and unknown) tokens become special added tokens, user-defined ones plain added tokens,
    so the engine matches them whole. In a byte-level vocabulary a 'control' token spelled outside the
    byte alphabet is a llama.cpp mislabel and is left alone (as transformers does)."""
    alphabet = set(bytes_to_unicode().values())
    special, plain = [], []
    for token, kind in zip(tokens, types, strict=False):
        if kind in (CONTROL, UNKNOWN) and not (byte_level and not set(token) <= alphabet):
            special.append(AddedToken(token, normalized=False, special=True))
        elif kind == USER_DEFINED:
            plain.append(AddedToken(token, normalized=False, special=False))
    if special:
        backend.add_special_tokens(special)
    if plain:
        backend.add_tokens(plain)


def gguf_parts(meta: dict[str, Any]) -> TokenizerParts:
    """The tokenizer a GGUF file's metadata describes (`tokenizer.ggml.*` keys)."""
    model = meta.get("tokenizer.ggml.model")
    tokens = _gguf_list(meta, "tokenizer.ggml.tokens", str)
    if model is None or not tokens:
        raise LMForgeError("this GGUF file has no tokenizer (no tokenizer.ggml.model / tokens metadata)")
    types = _gguf_list(meta, "tokenizer.ggml.token_type", int) or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise LMForgeError(f"GGUF tokenizer has {len(tokens)} tokens but {len(types)} token types")
    if model == "gpt2":
        backend = _gguf_byte_level(meta, tokens)
        byte_level = True
        default_bos = False
    elif model == "llama":
        backend = _gguf_sentencepiece(meta, tokens, types)
        byte_level = False
        default_bos = True
    else:
        raise LMForgeError(
            f"GGUF tokenizer type {model!r:.40} is not supported (supported: gpt2, llama); "
            "convert the model's tokenizer.json and load the directory instead"
        )
    _gguf_added_tokens(backend, tokens, types, byte_level)

    def token_of(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    specials = {
        "bos_token": token_of("bos_token_id"),
        "eos_token": token_of("eos_token_id"),
        "unk_token": token_of("unknown_token_id"),
        "pad_token": token_of("padding_token_id"),
    }
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", default_bos))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    vocab = backend.get_vocab(with_added_tokens=True)
    backend.post_processor = _post_processor(
        specials["bos_token"] if add_bos else None, specials["eos_token"] if add_eos else None, vocab
    )
    max_len = meta.get(f"{meta.get('general.architecture')}.context_length")
    template = meta.get("tokenizer.chat_template")
    return TokenizerParts(
        backend,
        specials,
        chat_template=template if isinstance(template, str) else None,
        add_bos_token=add_bos,
        add_eos_token=add_eos,
        model_max_length=max_len if isinstance(max_len, int) else None,
    )


def _bpe(vocab: dict[str, int], merges: list[tuple[str, ...]], **options: Any) -> BPE:
    """A BPE model, refusing merges the vocabulary cannot hold (the Rust side would panic on them)."""
    bad = next((m for m in merges if len(m) != 2 or m[0] + m[1] not in vocab), None)
    if bad is not None:
        raise LMForgeError(
            f"tokenizer merge {' '.join(bad)!r:.40} makes a token that is not in the vocabulary"
        )
    try:
        return BPE(vocab, merges, **options)
    except Exception as exc:  # the Rust side raises plain Exceptions
        raise LMForgeError(f"invalid BPE tokenizer ({str(exc).splitlines()[0]})") from None


def _gguf_byte_level(meta: dict[str, Any], tokens: list[str]) -> Backend:
    alphabet = set(bytes_to_unicode().values())
    # Tokens are stored in the byte alphabet; the odd one stored as raw text is respelled.
    vocab = {
        (t if set(t) <= alphabet else byte_level_spelling(t.encode("utf-8"))): i for i, t in enumerate(tokens)
    }
    merges = [tuple(m.split(" ", 1)) for m in _gguf_list(meta, "tokenizer.ggml.merges", str) or []]
    if not merges:
        raise LMForgeError("GGUF gpt2-type tokenizer has no tokenizer.ggml.merges; the file is incomplete")
    backend = Backend(_bpe(vocab, merges, fuse_unk=False, byte_fallback=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    splits = GGUF_PRE_SPLITS.get(pre) if isinstance(pre, str) else None
    if splits is None:
        import warnings

        warnings.warn(f"unknown GGUF pre-tokenizer '{pre}'; using GPT-2's regex", stacklevel=3)
        splits = [GPT2_REGEX]
    backend.pre_tokenizer = byte_level_pre_tokenizer(splits)
    backend.decoder = decoders.ByteLevel()
    return backend


def byte_level_pre_tokenizer(splits: list[str]) -> pre_tokenizers.PreTokenizer:
    """Regex splits then the byte-to-character mapping; GPT-2's own regex uses ByteLevel's built-in one."""
    if splits[-1] == GPT2_REGEX:
        steps = [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in splits[:-1]]
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps = [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in splits]
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


def _spm_merges(pieces: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Merges a SentencePiece BPE vocabulary implies: every split of a normal piece into two normal
    pieces, best score first (SentencePiece merges the highest-scoring pair)."""
    normal = {
        p: (s, i) for i, (p, s, t) in enumerate(zip(pieces, scores, types, strict=False)) if t == NORMAL
    }
    ranked = []
    for piece, (score, index) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, index, left, right))
    return [(left, right) for _, _, left, right in sorted(ranked)]


def _spm_decoder(add_dummy_prefix: bool, byte_fallback: bool) -> decoders.Decoder:
    steps = [decoders.Replace("▁", " ")]
    if byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    return decoders.Sequence(steps)


def _gguf_sentencepiece(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Backend:
    scores = _gguf_list(meta, "tokenizer.ggml.scores", (int, float)) or [
        -float(i) for i in range(len(tokens))
    ]
    if len(scores) != len(tokens):
        raise LMForgeError(f"GGUF tokenizer has {len(tokens)} tokens but {len(scores)} scores")
    vocab = {t: i for i, t in enumerate(tokens)}
    if merges := _gguf_list(meta, "tokenizer.ggml.merges", str):
        merges = [tuple(m.split(" ", 1)) for m in merges]
    else:
        merges = _spm_merges(tokens, scores, types)
    unk_index = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_index] if isinstance(unk_index, int) and 0 <= unk_index < len(tokens) else None
    has_bytes = any(t == BYTE for t in types)
    backend = Backend(_bpe(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=has_bytes))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # SentencePiece (and llama.cpp) add the dummy prefix even when the text starts with a space;
    # Metaspace skips it then, so a leading space is doubled first
    backend.normalizer = normalizers.Replace(Regex(r"\A "), "  ") if prefix else None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix else "never", split=False
    )
    backend.decoder = _spm_decoder(prefix, has_bytes)
    return backend


# ---- BERT vocab.txt -------------------------------------------------------------------------------


def bert_vocab_parts(path: str | Path, config: dict[str, Any] | None = None) -> TokenizerParts:
    """A BERT WordPiece tokenizer from `vocab.txt` (one token per line, id = line number), with the
    normalization options of tokenizer_config.json (`do_lower_case`, `strip_accents`,
    `tokenize_chinese_chars`)."""
    path = Path(path)
    config = config or {}
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise LMForgeError(f"{path}: empty vocab.txt")
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token.rstrip("\r"), i)
    names = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    specials = {}
    for name, default in names.items():
        value = config.get(name, default)
        token = value.get("content") if isinstance(value, dict) else value
        if token is not None and token in vocab:
            specials[name] = token
    if "unk_token" not in specials:
        raise LMForgeError(f"{path}: the vocabulary has no unknown token ({names['unk_token']})")
    backend = Backend(WordPiece(vocab, unk_token=specials["unk_token"], max_input_chars_per_word=100))
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials.values()])
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"),
        lowercase=bool(config.get("do_lower_case", True)),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_token, sep_token = specials.get("cls_token"), specials.get("sep_token")
    if cls_token and sep_token:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
        )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    max_len = config.get("model_max_length")
    return TokenizerParts(backend, specials, model_max_length=max_len if isinstance(max_len, int) else None)


# ---- tiktoken rank files --------------------------------------------------------------------------

# tiktoken's pattern for GPT-2 (r50k_base)
TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """A tiktoken rank file: one `base64(token bytes) rank` per line."""
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"{path}: no such tiktoken rank file")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise LMForgeError(f"{path}:{n}: not a tiktoken rank line (expected 'base64 rank')") from None
    if not ranks:
        raise LMForgeError(f"{path}: empty tiktoken rank file")
    return ranks


def _bpe_split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's merge loop on one token, using only ranks below `max_rank`."""
    parts = [bytes([b]) for b in token]
    while True:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best is None:
            return parts
        parts = parts[:best] + [parts[best] + parts[best + 1]] + parts[best + 2 :]


def tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from ranks: a multi-byte token is the merge of the two parts tiktoken's own
    loop reaches using only lower ranks. Ordered by the rank of the result, which is tiktoken's priority."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _bpe_split(ranks, token, rank)
        if len(parts) != 2:
            raise LMForgeError(f"token of rank {rank} cannot be built from two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def tiktoken_parts(
    path: str | Path,
    pattern: str = TIKTOKEN_GPT2_PATTERN,
    special_tokens: dict[str, int] | None = None,
    eos_token: str | None = None,
) -> TokenizerParts:
    """A byte-level BPE tokenizer from a tiktoken rank file. `pattern` is the pre-tokenization regex
    (GPT-2's by default); `special_tokens` maps text to id. Without it, `<|endoftext|>` gets the first
    id after the ranks, as in GPT-2."""
    ranks = read_tiktoken_ranks(path)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise LMForgeError(f"{path}: ranks are not the ids 0..{len(ranks) - 1} without gaps")
    vocab = {byte_level_spelling(t): r for t, r in ranks.items()}
    merges = [(byte_level_spelling(a), byte_level_spelling(b)) for a, b in tiktoken_merges(ranks)]
    backend = Backend(BPE(vocab, merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    if special_tokens is None:
        special_tokens = {"<|endoftext|>": len(ranks)}
        eos_token = eos_token or "<|endoftext|>"
    for text, index in sorted(special_tokens.items(), key=lambda kv: kv[1]):
        if index != backend.get_vocab_size(with_added_tokens=True):
            raise LMForgeError(
                f"special token {text!r} must take the next free id {backend.get_vocab_size()}, not {index}"
            )
        backend.add_special_tokens([AddedToken(text, normalized=False, special=True)])
    specials = {"eos_token": eos_token, "bos_token": eos_token} if eos_token else {}
    return TokenizerParts(backend, specials)


# ---- SentencePiece .model -------------------------------------------------------------------------


def sentencepiece_parts(path: str | Path) -> TokenizerParts:
    """A SentencePiece `.model` (BPE or Unigram) with its normalizer spec, encoding like
    `SentencePieceProcessor.encode` (needs the `sentencepiece` and `protobuf` packages to read the proto)."""
    path = Path(path)
    if not path.is_file():
        raise LMForgeError(f"{path}: no such SentencePiece model")
    try:
        from sentencepiece import sentencepiece_model_pb2 as spm_pb2
    except ImportError:
        raise LMForgeError(
            "reading a SentencePiece .model needs `pip install sentencepiece protobuf`"
        ) from None
    proto = spm_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception:
        raise LMForgeError(f"{path}: not a SentencePiece model file") from None
    if not proto.pieces:
        raise LMForgeError(f"{path}: not a SentencePiece model file (no pieces)")
    pieces = [p.piece for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [p.type for p in proto.pieces]
    trainer, norm = proto.trainer_spec, proto.normalizer_spec
    byte_fallback = trainer.byte_fallback
    if trainer.model_type == 2:  # BPE
        vocab = {p: i for i, p in enumerate(pieces)}
        user_defined = [p for p, t in zip(pieces, types, strict=True) if t == USER_DEFINED]
        backend = Backend(
            BPE(
                vocab,
                _spm_merges(pieces, scores, types),
                unk_token=trainer.unk_piece,
                fuse_unk=True,
                byte_fallback=byte_fallback,
                ignore_merges=bool(user_defined),
            )
        )
    elif trainer.model_type == 1:  # UNIGRAM
        backend = Backend(
            Unigram(
                list(zip(pieces, scores, strict=True)), unk_id=trainer.unk_id, byte_fallback=byte_fallback
            )
        )
        user_defined = [p for p, t in zip(pieces, types, strict=True) if t == USER_DEFINED]
    else:
        raise LMForgeError(
            f"{path}: SentencePiece model type {trainer.model_type} is not supported (BPE, Unigram are)"
        )
    steps: list[normalizers.Normalizer] = []
    if norm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if norm.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if norm.add_dummy_prefix:
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))  # SentencePiece prefixes even a leading ▁
    backend.normalizer = normalizers.Sequence(steps)
    pre: list[pre_tokenizers.PreTokenizer] = []
    if norm.add_dummy_prefix:
        pre.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False))
    if user_defined:
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if pre:
        backend.pre_tokenizer = pre_tokenizers.Sequence(pre)
    backend.decoder = _spm_decoder(norm.add_dummy_prefix, byte_fallback)
    control = [p for p, t in zip(pieces, types, strict=True) if t in (CONTROL, UNKNOWN)]
    backend.add_special_tokens([AddedToken(p, normalized=False, special=True) for p in control])

    def piece(index: int) -> str | None:
        return pieces[index] if 0 <= index < len(pieces) else None

    specials = {
        "unk_token": piece(trainer.unk_id),
        "bos_token": piece(trainer.bos_id),
        "eos_token": piece(trainer.eos_id),
        "pad_token": piece(trainer.pad_id),
    }
    return TokenizerParts(backend, specials)
