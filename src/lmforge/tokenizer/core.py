"""The `Tokenizer`: one class over a Hugging Face `tokenizers` engine, whatever the source.

Every format (tokenizer.json here; GGUF metadata, tiktoken ranks, SentencePiece `.model` and BERT
`vocab.txt` read by loaders.py, which does not import this module) and every trainer ends in the same place: a `tokenizers.Tokenizer` (the fast Rust pipeline:
normalizer -> pre-tokenizer -> model -> post-processor, and a decoder) plus the few facts the file
format keeps beside it (special tokens, chat template, whether to add BOS). This class holds both.

Design choices:
- Safe default for special tokens, as in tiktoken: text that spells a special token (`<|im_start|>`
  typed by a user) is encoded as plain text unless the caller passes `allow_special=True`. We keep a
  second engine with `encode_special_tokens=True` rather than toggling a flag, so encoding is
  thread-safe.
- `add_special_tokens=True` applies the engine's post-processor (BERT's `[CLS] ... [SEP]`, Llama's
  `<s>`); loaders put BOS/EOS there, so there is one mechanism only.
- The engine's own truncation/padding settings are switched off on load (MiniLM's tokenizer.json pads
  everything to 128); truncation and padding are per call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenizers import Encoding
from tokenizers import Tokenizer as Backend

from lmforge.assets import ASSETS, EXTRACTED, asset_path
from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_write_files
from lmforge.tokenizer import loaders

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class Encoded:
    """One encoded text: ids, their token strings, character offsets into the text, and a mask."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    attention_mask: list[int]
    special_tokens_mask: list[int] = field(default_factory=list)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


def _plain(backend: Backend) -> Backend:
    """A copy of `backend` whose special tokens are not matched in the input text."""
    copy = Backend.from_str(backend.to_str())
    copy.encode_special_tokens = True
    return copy


class Tokenizer:
    """Text <-> token ids, with special tokens, a chat template and a streaming decoder.

    Args:
        backend: the `tokenizers.Tokenizer` engine.
        special_tokens: role -> token text, e.g. {"bos_token": "<s>", "eos_token": "</s>"}.
        chat_template: Jinja chat template (Hugging Face conventions), or None.
        add_bos_token / add_eos_token: recorded for tokenizer_config.json; the post-processor is what
            adds them when `add_special_tokens=True`.
        model_max_length: longest input the model takes (informational; used by `truncation=True`).
    """

    def __init__(
        self,
        backend: Backend,
        special_tokens: dict[str, str | None] | None = None,
        chat_template: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        model_max_length: int | None = None,
    ):
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self._plain_backend = _plain(backend)
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        for name, token in self.special_tokens.items():
            if backend.token_to_id(token) is None:
                raise LMForgeError(f"{name} '{token}' is not in the vocabulary; fix tokenizer_config.json")
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.model_max_length = model_max_length
        self._fingerprint: str | None = None

    # ---- loading -------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, config: dict[str, Any] | None = None) -> Tokenizer:
        """Load a `tokenizer.json`; `config` is the matching tokenizer_config.json content, if any."""
        path = Path(path)
        if not path.is_file():
            raise LMForgeError(f"{path}: no such tokenizer file")
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise LMForgeError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None
        return cls._with_config(backend, config or {}, path.parent)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load a Hugging Face or lmforge directory: tokenizer.json (+ tokenizer_config.json,
        special_tokens_map.json, chat_template.jinja), or a BERT directory with only vocab.txt."""
        path = Path(path)
        if not path.is_dir():
            raise LMForgeError(f"{path}: not a directory")
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (path / name).is_file():
                try:
                    loaded = json.loads((path / name).read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise LMForgeError(
                        f"{path / name}: invalid JSON ({exc.msg} at line {exc.lineno})"
                    ) from None
                except (UnicodeDecodeError, RecursionError) as exc:
                    raise LMForgeError(f"{path / name}: not readable JSON ({type(exc).__name__})") from None
                if not isinstance(loaded, dict):
                    raise LMForgeError(f"{path / name}: must hold a JSON object, not {type(loaded).__name__}")
                config.update(loaded)
        if (path / "tokenizer.json").is_file():
            return cls.from_file(path / "tokenizer.json", config)
        if (path / "vocab.txt").is_file():
            return cls.from_bert_vocab(path / "vocab.txt", config)
        raise LMForgeError(f"{path}: no tokenizer.json or vocab.txt in this directory")

    @classmethod
    def _with_config(cls, backend: Backend, config: dict[str, Any], directory: Path | None) -> Tokenizer:
        specials = {name: _token_text(config.get(name)) for name in SPECIAL_NAMES}
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if template is None and directory is not None and (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        max_len = config.get("model_max_length")
        if not isinstance(max_len, int) or max_len > 10**9:  # HF writes 1e30 for "no limit"
            max_len = None
        return cls(
            backend,
            specials,
            chat_template=template,
            add_bos_token=bool(config.get("add_bos_token", False)),
            add_eos_token=bool(config.get("add_eos_token", False)),
            model_max_length=max_len,
        )

    @classmethod
    def from_parts(cls, parts: loaders.TokenizerParts) -> Tokenizer:
        """The tokenizer a format reader in loaders.py describes."""
        return cls(
            parts.backend,
            parts.special_tokens,
            chat_template=parts.chat_template,
            add_bos_token=parts.add_bos_token,
            add_eos_token=parts.add_eos_token,
            model_max_length=parts.model_max_length,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """The tokenizer a GGUF file's metadata describes (`tokenizer.ggml.*`; see `lmforge.io.gguf.read_metadata`)."""
        return cls.from_parts(loaders.gguf_parts(meta))

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """The tokenizer embedded in a `.gguf` file."""
        from lmforge.io.gguf import read_metadata  # deferred: the `gguf` package takes 0.3 s to import

        try:
            return cls.from_gguf_metadata(read_metadata(path))
        except LMForgeError as exc:
            message = str(exc)
            raise LMForgeError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None

    @classmethod
    def from_tiktoken(
        cls,
        path: str | Path,
        pattern: str = loaders.TIKTOKEN_GPT2_PATTERN,
        special_tokens: dict[str, int] | None = None,
        eos_token: str | None = None,
    ) -> Tokenizer:
        """A byte-level BPE tokenizer from a tiktoken rank file (`loaders.tiktoken_parts`)."""
        return cls.from_parts(loaders.tiktoken_parts(path, pattern, special_tokens, eos_token))

    @classmethod
    def from_sentencepiece(cls, path: str | Path) -> Tokenizer:
        """A SentencePiece `.model`, BPE or Unigram (`loaders.sentencepiece_parts`)."""
        return cls.from_parts(loaders.sentencepiece_parts(path))

    @classmethod
    def from_bert_vocab(cls, path: str | Path, config: dict[str, Any] | None = None) -> Tokenizer:
        """A BERT WordPiece tokenizer from `vocab.txt` (`loaders.bert_vocab_parts`)."""
        return cls.from_parts(loaders.bert_vocab_parts(path, config))

    @classmethod
    def load(cls, source: str | Path) -> Tokenizer:
        """Load from any supported source: a directory, tokenizer.json, .gguf, .tiktoken, .model,
        vocab.txt, or an asset name (`smollm2`, `minilm`, `gpt2.tiktoken`)."""
        path = Path(source)
        if not path.exists():
            if str(source) not in ASSETS and str(source) not in EXTRACTED:
                raise LMForgeError(
                    f"tokenizer source '{source}' not found: give a directory, tokenizer.json, .gguf, "
                    ".tiktoken, .model or vocab.txt path, or an asset name (smollm2, minilm, gpt2.tiktoken)"
                )
            path = asset_path(str(source))
        if path.is_dir():
            return cls.from_dir(path)
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            return cls.from_gguf(path)
        if suffix == ".tiktoken":
            return cls.from_tiktoken(path)
        if suffix == ".model":
            return cls.from_sentencepiece(path)
        if path.name == "vocab.txt":
            return cls.from_bert_vocab(path)
        if suffix == ".json":
            return cls.from_file(path)
        raise LMForgeError(
            f"{path}: unknown tokenizer file type (expected .json, .gguf, .tiktoken, .model or vocab.txt)"
        )

    # ---- saving --------------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """tokenizer_config.json content; `tokenizer_class` lets transformers' AutoTokenizer load it."""
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update(self.special_tokens)
        config["add_bos_token"] = self.add_bos_token
        config["add_eos_token"] = self.add_eos_token
        config["clean_up_tokenization_spaces"] = False
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        return config

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json and tokenizer_config.json into `directory`, atomically as a pair."""
        tokenizer_config = json.dumps(self.config_dict(), indent=2, ensure_ascii=False)
        files = {
            "tokenizer.json": self.backend.to_str(pretty=True),
            "tokenizer_config.json": tokenizer_config,
        }
        return atomic_write_files(directory, files)

    # ---- properties ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the size an embedding table needs at least)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def mask_token_id(self) -> int | None:
        return self._special_id("mask_token")

    @property
    def cls_token_id(self) -> int | None:
        return self._special_id("cls_token")

    @property
    def sep_token_id(self) -> int | None:
        return self._special_id("sep_token")

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of every special added token (control tokens) and every named special token."""
        ids = {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        ids |= {i for name in self.special_tokens if (i := self._special_id(name)) is not None}
        return sorted(ids)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    @property
    def fingerprint(self) -> str:
        """A short hash of everything that decides ids: two tokenizers with the same fingerprint give
        the same ids for the same text (used to check a draft model shares the target's tokenizer).
        Computed once (hashing a 50k vocabulary takes ~0.2 s)."""
        if self._fingerprint is not None:
            return self._fingerprint
        # floats (Unigram scores) are rounded: the JSON writer does not round-trip their last digit
        spec = json.loads(self.backend.to_str(), parse_float=lambda x: round(float(x), 9))
        spec.pop("truncation", None)
        spec.pop("padding", None)
        spec["lmforge_special_tokens"] = self.special_tokens
        blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")
        self._fingerprint = hashlib.sha256(blob).hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        model = json.loads(self.backend.model.__getstate__())["type"] if self.backend.model else "?"
        return f"Tokenizer({model}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint})"

    # ---- encoding ------------------------------------------------------------------------------

    def _engine(self, allow_special: bool) -> Backend:
        return self.backend if allow_special else self._plain_backend

    def _run(self, fn, *args, **kwargs):
        """Call the Rust engine; a str it cannot take (lone surrogates) becomes a one-line error."""
        try:
            return fn(*args, **kwargs)
        except TypeError:
            raise LMForgeError(
                "text is not valid Unicode (it contains lone surrogate code points); "
                "decode your bytes with errors='replace' first"
            ) from None

    def _check_text(self, text: Any) -> str:
        if not isinstance(text, str):
            raise LMForgeError(f"text to encode must be a str, got {type(text).__name__}")
        return text

    def _truncate(
        self, enc: Encoding, max_length: int | None, add_special_tokens: bool, side: str
    ) -> Encoding:
        if max_length is not None:
            n_special = self.backend.num_special_tokens_to_add(False) if add_special_tokens else 0
            if max_length <= n_special:
                raise LMForgeError(
                    f"max_length={max_length} leaves no room next to {n_special} special tokens"
                )
            enc.truncate(max_length - n_special, direction=side)
        return self.backend.post_process(enc, None, add_special_tokens)

    def tokenize(
        self,
        text: str,
        add_special_tokens: bool = False,
        allow_special: bool = False,
        max_length: int | None = None,
        truncation_side: Literal["right", "left"] = "right",
    ) -> Encoded:
        """Encode one text with its token strings and character offsets."""
        enc = self._run(self._engine(allow_special).encode, self._check_text(text), add_special_tokens=False)
        enc = self._truncate(enc, max_length, add_special_tokens, truncation_side)
        return Encoded(
            list(enc.ids),
            list(enc.tokens),
            list(enc.offsets),
            list(enc.attention_mask),
            list(enc.special_tokens_mask),
        )

    def encode(
        self,
        text: str,
        add_special_tokens: bool = False,
        allow_special: bool = False,
        max_length: int | None = None,
        truncation_side: Literal["right", "left"] = "right",
    ) -> list[int]:
        """Token ids of `text`.

        Args:
            add_special_tokens: add what the post-processor adds (BOS, or BERT's [CLS] ... [SEP]).
            allow_special: match special-token text (`<|im_start|>`) in `text` as special tokens;
                by default it is encoded as the plain text it is.
            max_length: truncate to this many ids (special tokens included).
            truncation_side: which end to cut.
        """
        if max_length is None:
            engine = self._engine(allow_special)
            enc = self._run(engine.encode, self._check_text(text), add_special_tokens=add_special_tokens)
            return list(enc.ids)
        return self.tokenize(text, add_special_tokens, allow_special, max_length, truncation_side).ids

    def encode_batch(
        self,
        texts: Sequence[str],
        add_special_tokens: bool = False,
        allow_special: bool = False,
        max_length: int | None = None,
        truncation_side: Literal["right", "left"] = "right",
        padding: bool | Literal["longest", "max_length"] = False,
        padding_side: Literal["right", "left"] = "right",
    ) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads). With `padding`, rows are padded with the pad
        token to the longest row (or to `max_length`); use `pad()` to also get the attention mask."""
        texts = [self._check_text(t) for t in texts]
        engine = self._engine(allow_special)
        if max_length is None:
            encs = self._run(engine.encode_batch, texts, add_special_tokens=add_special_tokens)
            rows = [list(e.ids) for e in encs]
        else:
            encs = self._run(engine.encode_batch, texts, add_special_tokens=False)
            rows = [
                list(self._truncate(e, max_length, add_special_tokens, truncation_side).ids) for e in encs
            ]
        if padding:
            target = max_length if padding == "max_length" else None
            rows, _ = self.pad(rows, length=target, side=padding_side)
        return rows

    def pad(
        self,
        rows: Sequence[Sequence[int]],
        length: int | None = None,
        side: Literal["right", "left"] = "right",
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Pad id lists to one length; returns (ids, attention_mask) with 1 for real tokens."""
        pad_id = self.pad_token_id
        if pad_id is None:
            pad_id = self.eos_token_id
        if pad_id is None:
            raise LMForgeError(
                "this tokenizer has no pad or eos token to pad with; set special_tokens['pad_token']"
            )
        width = max((len(r) for r in rows), default=0) if length is None else length
        ids, mask = [], []
        for row in rows:
            row = list(row)[:width] if length is not None else list(row)
            fill = width - len(row)
            if side == "left":
                ids.append([pad_id] * fill + row)
                mask.append([0] * fill + [1] * len(row))
            else:
                ids.append(row + [pad_id] * fill)
                mask.append([1] * len(row) + [0] * fill)
        return ids, mask

    # ---- decoding ------------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; byte-level pieces that do not form whole UTF-8 characters become U+FFFD."""
        ids = [int(i) for i in ids]
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise LMForgeError(f"token id {bad[0]} is out of range for a vocabulary of {size}")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode_batch(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(r, skip_special_tokens) for r in rows]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (best effort for non-byte-level vocabularies)."""
        from lmforge.tokenizer.detok import token_bytes

        return token_bytes(self, token_id)

    def incremental_decoder(self, skip_special_tokens: bool = False):
        """A streaming decoder: `.add(token_id) -> str` gives text deltas without broken characters,
        `.flush() -> str` the rest; the deltas concatenate to `decode(all_ids)`."""
        from lmforge.tokenizer.detok import IncrementalDecoder

        return IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)

    # ---- chat ----------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Render a conversation with the model's Jinja chat template (sandboxed), as a string."""
        from lmforge.tokenizer.chat import render_chat

        return render_chat(self, messages, add_generation_prompt, chat_template=chat_template, **kwargs)

    def encode_chat(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        allow_special: bool = False,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """Render and encode a conversation. Special tokens written by the template become special
        ids; special-token text inside message contents stays plain text unless `allow_special`."""
        from lmforge.tokenizer.chat import encode_chat

        return encode_chat(
            self,
            messages,
            add_generation_prompt,
            allow_special=allow_special,
            chat_template=chat_template,
            **kwargs,
        )
