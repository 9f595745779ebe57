"""Train a tokenizer: byte-level BPE, WordPiece (BERT) or Unigram (SentencePiece style).

| algorithm | pre-tokenization | specials (ids from 0) | `add_special_tokens=True` adds |
|---|---|---|---|
| `bpe` | GPT-2 regex + byte-level alphabet (all 256 bytes, so any Unicode text round-trips) | `<\\|endoftext\\|>` | nothing (GPT-2 style) |
| `wordpiece` | BERT normalizer (lowercase / strip accents / CJK split options) + BERT pre-tokenizer | `[PAD] [UNK] [CLS] [SEP] [MASK]` | `[CLS] ... [SEP]` |
| `unigram` | NFKC + Metaspace (`▁` marks a space, SentencePiece style) | `<unk> <s> </s> <pad>` | `<s>` |

Inputs are text files, directories (every `.txt`/`.md`/`.text`/`.jsonl` file below them), JSON Lines
files with a text field (`data.jsonl:body`, default field `text`), and the built-in corpus
`shakespeare`. Files are read as UTF-8; invalid byte sequences are replaced with U+FFFD and counted in
a warning rather than stopping a long run for one bad byte.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, Unigram, WordPiece

from lmforge.errors import LMForgeError
from lmforge.io.jsonl import iter_jsonl
from lmforge.options import check_types, configure, option
from lmforge.tokenizer.core import SPECIAL_NAMES, Tokenizer

Algorithm = Literal["bpe", "wordpiece", "unigram"]
ALGORITHMS = ("bpe", "wordpiece", "unigram")
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl"}

DEFAULT_SPECIALS: dict[str, dict[str, str]] = {
    "bpe": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
    "wordpiece": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    "unigram": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}


@dataclass
class Source:
    path: Path
    field: str | None = None  # JSON Lines: the field holding the text


@dataclass
class CorpusStats:
    """Counted while the trainer streams the corpus."""

    files: int = 0
    documents: int = 0
    chars: int = 0
    replaced: int = 0  # invalid UTF-8 sequences replaced with U+FFFD
    bad_files: int = 0
    has_text: bool = False  # any non-whitespace character at all

    def count(self, text: str) -> str:
        self.documents += 1
        self.chars += len(text)
        self.has_text = self.has_text or not text.isspace() and bool(text)
        return text


def resolve_inputs(inputs: Sequence[str | Path], jsonl_field: str = "text") -> list[Source]:
    """Expand names, directories and `file.jsonl:field` into a list of files to read."""
    if not inputs:
        raise LMForgeError(
            "no training input: give text files, directories, file.jsonl[:field] or 'shakespeare'"
        )
    sources: list[Source] = []
    for item in inputs:
        text = str(item)
        if text in ("shakespeare", "shakespeare-train") and not Path(text).exists():
            from lmforge.assets import shakespeare_files

            sources += [Source(p) for p in shakespeare_files(include_held_out=text == "shakespeare")]
            continue
        field = None
        path = Path(text)
        if not path.exists() and ":" in text:
            head, _, field = text.rpartition(":")
            path = Path(head)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise LMForgeError(
                    f"{path}: no text files in this directory (looked for {', '.join(sorted(TEXT_SUFFIXES))})"
                )
            sources += [Source(p, jsonl_field if p.suffix.lower() == ".jsonl" else None) for p in found]
        elif path.is_file():
            if field is None and path.suffix.lower() == ".jsonl":
                field = jsonl_field
            sources.append(Source(path, field))
        else:
            raise LMForgeError(f"training input not found: {text}")
    return sources


def _read_text(path: Path, stats: CorpusStats) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="replace")
        stats.replaced += text.count("\ufffd") - data.count("\ufffd".encode())
        stats.bad_files += 1
        return text


def iter_documents(
    sources: Sequence[Source], stats: CorpusStats | None = None, by_line: bool = False
) -> Iterator[str]:
    """Yield the documents of every source: JSONL records, text in ~1 MB blocks (or lines)."""
    stats = stats if stats is not None else CorpusStats()
    for source in sources:
        stats.files += 1
        text = _read_text(source.path, stats)
        if source.field is not None:
            for n, record in iter_jsonl(text, source.path):
                if not isinstance(record, dict) or source.field not in record:
                    raise LMForgeError(
                        f"{source.path}:{n}: no field '{source.field}' (choose it with file.jsonl:FIELD)"
                    )
                value = record[source.field]
                if not isinstance(value, str):
                    raise LMForgeError(f"{source.path}:{n}: field '{source.field}' is not a string")
                yield stats.count(value)
        else:
            # Big files go in ~1 MB blocks of whole lines, so progress moves and memory stays flat;
            # `by_line` yields single lines instead (HF's Unigram trainer is ~5x faster on lines).
            block: list[str] = []
            size = 0
            for line in text.splitlines(keepends=True):
                if by_line:
                    yield stats.count(line)
                    continue
                block.append(line)
                size += len(line)
                if size >= 1 << 20:
                    yield stats.count("".join(block))
                    block, size = [], 0
            if block:
                yield stats.count("".join(block))


def build_untrained(
    algorithm: Algorithm,
    special_tokens: dict[str, str],
    lowercase: bool,
    strip_accents: bool | None,
    split_cjk: bool = True,
) -> tuple[Backend, dict[str, str]]:
    """The pipeline of each algorithm, before its model is trained."""
    if algorithm == "bpe":
        backend = Backend(BPE(fuse_unk=False))
        backend.normalizer = normalizers.Lowercase() if lowercase else None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
    elif algorithm == "wordpiece":
        backend = Backend(WordPiece(unk_token=special_tokens["unk_token"], max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=split_cjk, strip_accents=strip_accents, lowercase=lowercase
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    elif algorithm == "unigram":
        backend = Backend(Unigram())
        steps = [normalizers.NFKC()]
        if lowercase:
            steps.append(normalizers.Lowercase())
        if strip_accents:
            steps += [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    else:
        raise LMForgeError(
            f"unknown tokenizer algorithm '{algorithm}'; choose one of {', '.join(ALGORITHMS)}"
        )
    return backend, special_tokens


def _trainer(
    algorithm: str, vocab_size: int, min_frequency: int, specials: list[str], unk: str | None, progress: bool
):
    if algorithm == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=progress,
        )
    if algorithm == "wordpiece":
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=progress,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token=unk,
        show_progress=progress,
        max_piece_length=16,
    )


@dataclass
class TokenizerTrainConfig:
    """How a tokenizer is trained; every field is a `lmforge tokenizer train` option."""

    algorithm: Algorithm = option(
        "bpe", "bpe (byte-level, lossless), wordpiece (BERT) or unigram (SentencePiece style)"
    )
    vocab_size: int = option(8000, "vocabulary size, special tokens included")
    min_frequency: int = option(2, "minimum count of a merge (bpe, wordpiece)")
    special_tokens: dict[str, str] | None = option(
        None,
        "JSON mapping of roles to texts replacing the algorithm's named special tokens, e.g. "
        '\'{"bos_token": "<s>", "eos_token": "</s>"}\' (wordpiece needs an unk_token)',
    )
    extra_special_tokens: list[str] = option(
        help='more special tokens, e.g. "<|im_start|>" "<|im_end|>"', default_factory=list
    )
    lowercase: bool | None = option(None, "lowercase the text (unset: on for wordpiece, off otherwise)")
    strip_accents: bool | None = option(
        None, "remove accents (unset: as lowercase for wordpiece, off otherwise)"
    )
    jsonl_field: str = option("text", "text field of .jsonl inputs given without :FIELD")
    show_progress: bool = option(True, "show the trainer's progress bars")
    chat_template: str | None = option(None, "a Jinja chat template to store with the tokenizer")

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise LMForgeError(
                f"unknown tokenizer algorithm '{self.algorithm}'; choose one of {', '.join(ALGORITHMS)}"
            )
        self.extra_special_tokens = list(self.extra_special_tokens)
        check_types(self)


def train_tokenizer(
    inputs: Sequence[str | Path] = (),
    algorithm: Algorithm | None = None,
    vocab_size: int | None = None,
    *,
    texts: Iterable[str] | None = None,
    output: str | Path | None = None,
    config: TokenizerTrainConfig | None = None,
    **options: Any,
) -> Tokenizer:
    """Train a tokenizer on files/directories/JSONL/`shakespeare` (or on `texts`) and optionally save it.

    Args:
        inputs: files, directories, `file.jsonl[:field]`, or `shakespeare`.
        algorithm: the config's algorithm, also taken positionally (None: the config's).
        vocab_size: the config's vocab_size, also taken positionally (None: the config's).
        texts: an iterable of strings to train on instead of (or besides) `inputs`.
        output: directory to write tokenizer.json + tokenizer_config.json into.
        config: a TokenizerTrainConfig to start from (default: the defaults).
        **options: TokenizerTrainConfig fields (`min_frequency`, `special_tokens`, `lowercase`, ...).
    """
    positional = {"algorithm": algorithm, "vocab_size": vocab_size}
    options.update({k: v for k, v in positional.items() if v is not None})
    c = configure(TokenizerTrainConfig, config, options, "train_tokenizer")
    algorithm, vocab_size, lowercase = c.algorithm, c.vocab_size, c.lowercase
    specials = dict(DEFAULT_SPECIALS[algorithm]) if c.special_tokens is None else dict(c.special_tokens)
    for role, text in specials.items():
        if role not in SPECIAL_NAMES or not isinstance(text, str) or not text:
            raise LMForgeError(
                f"bad special token {role}={text!r}: roles are {', '.join(SPECIAL_NAMES)} and values non-empty strings"
            )
    if algorithm == "wordpiece" and "unk_token" not in specials:
        raise LMForgeError("wordpiece needs an unk_token among the special tokens")
    ordered = list(dict.fromkeys([*specials.values(), *c.extra_special_tokens]))
    min_size = len(ordered) + (256 if algorithm == "bpe" else 1)
    if vocab_size < min_size:
        what = "256 bytes" if algorithm == "bpe" else "its alphabet"
        raise LMForgeError(
            f"vocab size {vocab_size} is smaller than {what} plus {len(ordered)} special tokens; use at least {min_size}"
        )
    if lowercase is None:
        lowercase = algorithm == "wordpiece"
    backend, specials = build_untrained(algorithm, specials, lowercase, c.strip_accents)
    sources = resolve_inputs(inputs, c.jsonl_field) if inputs else []
    if not sources and texts is None:
        raise LMForgeError(
            "no training input: give text files, directories, file.jsonl[:field] or 'shakespeare'"
        )
    stats = CorpusStats()

    def corpus() -> Iterator[str]:
        yield from iter_documents(sources, stats, by_line=algorithm == "unigram")
        for text in texts or ():
            yield stats.count(text)

    trainer = _trainer(
        algorithm, vocab_size, c.min_frequency, ordered, specials.get("unk_token"), c.show_progress
    )
    try:
        backend.train_from_iterator(corpus(), trainer=trainer)
    except LMForgeError:
        raise
    except Exception as exc:  # the Rust trainer raises plain Exceptions
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "not large enough" in message:
            raise LMForgeError(
                f"vocab size {vocab_size} is smaller than the alphabet of this corpus; use a larger --vocab-size"
            ) from None
        raise LMForgeError(f"{algorithm} training failed: {message}") from None
    if not stats.has_text:
        raise LMForgeError("the training input has no text (empty files or only blank lines)")
    if stats.replaced:
        warnings.warn(
            f"{stats.replaced} invalid UTF-8 byte sequence(s) in {stats.bad_files} file(s) were replaced with U+FFFD",
            stacklevel=2,
        )
    size = backend.get_vocab_size()
    if size > vocab_size:
        raise LMForgeError(
            f"vocab size {vocab_size} is smaller than the alphabet of this corpus ({size - len(ordered)} characters "
            f"+ {len(ordered)} special tokens); use at least {size}"
        )
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ordered])
    vocab = backend.get_vocab()
    add_bos = False
    if algorithm == "wordpiece" and "cls_token" in specials and "sep_token" in specials:
        cls_token, sep_token = specials["cls_token"], specials["sep_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
        )
    elif algorithm == "unigram" and "bos_token" in specials:
        bos = specials["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
        )
        add_bos = True
    tok = Tokenizer(backend, specials, chat_template=c.chat_template, add_bos_token=add_bos)
    if output is not None:
        tok.save(output)
    return tok
