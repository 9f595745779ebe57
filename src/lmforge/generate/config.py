"""GenerationConfig: every decoding option in one flat, validated dataclass.

The names follow the field's own vocabulary: Hugging Face `generate` for search and warpers
(`top_k`, `repetition_penalty`, `no_repeat_ngram_size`, `num_beams`, ...), OpenAI's API for
`frequency_penalty`, `presence_penalty`, `logit_bias`, `stop`, `logprobs`/`top_logprobs`.
Validation runs at construction (`__post_init__`) and again against the vocabulary
(`validate(vocab_size)`), so a bad option fails with a one-line `LMForgeError` that names it before
any model work starts. `from_dict` refuses unknown keys; `from_hf` reads a Hugging Face
`generation_config.json` (dict or path) and keeps the keys lmforge understands.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError
from lmforge.options import check_types, option, unknown_error


@dataclass
class GenerationConfig:
    """Every option of `generate`/`stream`/`chat`; defaults decode greedily for up to 128 new tokens.

    Each field is declared once, here, with its help text: the CLI flags of `lmforge generate`/`chat`,
    config-file keys and the server's request schema all come from these fields."""

    # length
    max_new_tokens: int = option(128, "most tokens to generate per sequence")
    min_new_tokens: int = option(0, "stop tokens are banned until this many tokens are generated")
    # strategy
    do_sample: bool = option(False, "sample from the processed distribution instead of taking the argmax")
    seed: int | None = option(None, "seed of the sampling generator (same seed, same output)")
    num_beams: int = option(1, "beam search with this many beams (>1)")
    length_penalty: float = option(1.0, "beam score = sum of log-probs / length ** length_penalty")
    early_stopping: bool | str = option(
        False, "beam search stopping: true, false or never (Hugging Face semantics)"
    )
    num_return_sequences: int = option(1, "sequences returned per prompt")
    penalty_alpha: float = option(
        0.0, "contrastive search degeneration penalty (> 0 enables it, with top_k candidates)"
    )
    contrastive_alpha: float = option(
        0.1, "contrastive decoding plausibility threshold (with an amateur model)"
    )
    prompt_lookup: bool = option(False, "speculative decoding with prompt-lookup (n-gram copy) drafts")
    num_draft_tokens: int = option(5, "tokens drafted per speculative round")
    prompt_lookup_max_ngram: int = option(3, "longest n-gram prompt lookup matches")
    # warpers (sampling only, as in Hugging Face)
    temperature: float = option(1.0, "divide logits by this before sampling (0 means greedy)")
    top_k: int = option(0, "sample among the k most likely tokens (0: off)")
    top_p: float = option(
        1.0, "nucleus sampling: smallest set of tokens with this total probability, in (0, 1]"
    )
    min_p: float = option(0.0, "drop tokens with probability below min_p x the top probability (0: off)")
    typical_p: float = option(1.0, "locally typical sampling mass, in (0, 1] (1: off)")
    # penalties, bias, bans
    repetition_penalty: float = option(
        1.0, "Hugging Face repetition penalty over prompt and output (>1 discourages)"
    )
    frequency_penalty: float = option(
        0.0, "OpenAI frequency penalty: logit -= count x value, over generated tokens"
    )
    presence_penalty: float = option(0.0, "OpenAI presence penalty: logit -= value if generated before")
    no_repeat_ngram_size: int = option(0, "never repeat an n-gram of this size (0: off)")
    logit_bias: dict[int, float] | None = option(
        None, 'JSON {"token id": bias} added to the logits (-100 bans, 100 forces)'
    )
    bad_words_ids: list[list[int]] | str | None = option(
        None, "JSON list of banned token-id sequences, e.g. [[12, 34], [56]]"
    )
    allowed_token_ids: list[int] | None = option(None, "only these token ids may be generated")
    # stopping
    stop: list[str] | None = option(None, "stop strings (not included in the output)")
    stop_token_ids: list[int] | None = option(None, "extra token ids that end a sequence")
    ignore_eos: bool = option(False, "keep generating past the end-of-sequence token")
    truncate_prompt: bool = option(False, "keep the last tokens of a prompt that does not fit the context")
    # outputs
    logprobs: bool = option(False, "return the log-probability of each generated token")
    top_logprobs: int = option(0, "return this many most likely alternatives per token")
    # constrained output (at most one)
    choices: list[str] | None = option(None, "constrain the output to one of these strings")
    regex: str | None = option(None, "constrain the output to match this regular expression")
    json_schema: dict[str, Any] | None = option(
        None, "constrain the output to JSON valid under this schema (JSON text)"
    )
    # runtime (None: the step the model was loaded with, `lmforge.load(..., compile=...)`)
    compile: bool | None = option(
        None, "torch.compile the one-token decode step: faster per token after a one-time compile"
    )
    aot: bool | None = option(
        None, "compile the batch-1 decode step ahead of time (torch.export + AOTInductor), kept on disk"
    )

    def __post_init__(self) -> None:
        self._normalise()
        self.validate()

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationConfig:
        """Build from a plain dict (YAML/JSON config, API kwargs); an unknown key is an error naming it."""
        cls._refuse_unknown(values)
        return cls(**values)

    @classmethod
    def _refuse_unknown(cls, values: dict[str, Any]) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(values) - set(names)
        if unknown:
            raise unknown_error(unknown, names, "generation options (`lmforge generate --help` lists them)")

    @classmethod
    def from_hf(cls, hf: dict[str, Any] | str | Path | None, **overrides: Any) -> GenerationConfig:
        """Defaults from a Hugging Face `generation_config.json` (dict or path), then `overrides` on top.

        Keys lmforge has no option for (token ids, `max_length`, cache settings...) and null values are
        skipped; `sequence_bias` entries of one token become `logit_bias`, `suppress_tokens` -inf biases,
        `stop_strings` become `stop`. Unknown keys in `overrides` are an error; a None override keeps
        the default.
        """
        if isinstance(hf, (str, Path)):
            path = Path(hf)
            if path.is_dir():
                path = path / "generation_config.json"
            try:
                hf = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise LMForgeError(f"cannot read generation config {path}: {exc}") from None
        hf = dict(hf or {})
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in hf.items() if k in names and v is not None}
        bias: dict[int, float] = {}
        for seq, value in hf.get("sequence_bias") or []:
            if len(seq) == 1:
                bias[int(seq[0])] = float(value)
        for token in hf.get("suppress_tokens") or []:
            bias[int(token)] = -math.inf
        if bias:
            values["logit_bias"] = {**bias, **(values.get("logit_bias") or {})}
        if hf.get("stop_strings") and "stop" not in values:
            stops = hf["stop_strings"]
            values["stop"] = [stops] if isinstance(stops, str) else list(stops)
        cls._refuse_unknown(overrides)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        # an explicit None means "the default" for options whose default is a value (top_k=None, ...)
        overrides = {k: v for k, v in overrides.items() if v is not None or defaults[k] is None}
        return cls(**{**values, **overrides})

    def replace(self, **changes: Any) -> GenerationConfig:
        """A validated copy with some options changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def constraint_kind(self) -> str | None:
        """ "choices", "regex", "json_schema" or None."""
        for name in ("choices", "regex", "json_schema"):
            if getattr(self, name) is not None:
                return name
        return None

    # -- validation ---------------------------------------------------------------------------------

    def _fail(self, name: str, why: str) -> None:
        value = getattr(self, name)
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise LMForgeError(f"invalid generation option {name}={shown}: {why}")

    def _normalise(self) -> None:
        """Coerce the loose forms the CLI and JSON give (string keys, JSON text, "true") to one shape."""
        if isinstance(self.early_stopping, str) and self.early_stopping.lower() in ("true", "false"):
            self.early_stopping = self.early_stopping.lower() == "true"
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                self._fail("logit_bias", 'give a mapping {token_id: bias}, e.g. {"50256": -100}')
            try:
                self.logit_bias = {int(k): float(v) for k, v in self.logit_bias.items()}
            except (TypeError, ValueError):
                self._fail("logit_bias", "keys must be integer token ids and values numbers")
        if isinstance(self.bad_words_ids, str):
            try:
                self.bad_words_ids = json.loads(self.bad_words_ids)
            except json.JSONDecodeError:
                self._fail(
                    "bad_words_ids", "not valid JSON; give a list of token-id lists, e.g. [[12, 34], [56]]"
                )
        if self.bad_words_ids is not None:
            ok = isinstance(self.bad_words_ids, (list, tuple)) and all(
                isinstance(seq, (list, tuple)) and seq and all(_is_int(t) for t in seq)
                for seq in self.bad_words_ids
            )
            if not ok:
                self._fail("bad_words_ids", "give a list of non-empty token-id lists, e.g. [[12, 34], [56]]")
            self.bad_words_ids = [[int(t) for t in seq] for seq in self.bad_words_ids]
        for name in ("allowed_token_ids", "stop_token_ids"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (list, tuple)) or not all(_is_int(t) for t in value):
                    self._fail(name, "give a list of integer token ids")
                setattr(self, name, [int(t) for t in value])
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.choices, str):
            self._fail("choices", "give a list of strings, e.g. ['yes', 'no']")
        if isinstance(self.json_schema, (str, bytes)):
            try:
                self.json_schema = json.loads(self.json_schema)
            except json.JSONDecodeError as exc:
                self._fail("json_schema", f"not valid JSON ({exc.msg} at char {exc.pos})")
        if self.temperature == 0:  # OpenAI convention: temperature 0 is greedy
            self.do_sample = False
        check_types(self, "generation options")

    def validate(self, vocab_size: int | None = None) -> None:
        """Check every option (and, given `vocab_size`, every token id); raise a one-line LMForgeError."""
        fail = self._fail
        for name in (
            "max_new_tokens",
            "num_beams",
            "num_return_sequences",
            "num_draft_tokens",
            "prompt_lookup_max_ngram",
        ):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                fail(name, "must be an integer >= 1")
        for name in ("min_new_tokens", "top_k", "no_repeat_ngram_size", "top_logprobs"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                fail(name, "must be an integer >= 0")
        if self.min_new_tokens > self.max_new_tokens:
            fail("min_new_tokens", f"exceeds max_new_tokens={self.max_new_tokens}")
        if self.seed is not None and not _is_int(self.seed):
            fail("seed", "must be an integer")
        if not _finite(self.temperature) or self.temperature < 0:
            fail("temperature", "must be a finite number >= 0 (0 means greedy)")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            fail("top_p", "must be in (0, 1]; 1 turns nucleus sampling off")
        if not _finite(self.typical_p) or not 0 < self.typical_p <= 1:
            fail("typical_p", "must be in (0, 1]; 1 turns typical sampling off")
        if not _finite(self.min_p) or not 0 <= self.min_p <= 1:
            fail("min_p", "must be in [0, 1]; 0 turns min-p off")
        if not _finite(self.repetition_penalty) or self.repetition_penalty <= 0:
            fail("repetition_penalty", "must be a number > 0 (1 is off, > 1 discourages repeats)")
        for name in ("frequency_penalty", "presence_penalty"):
            if not _finite(getattr(self, name)) or not -2 <= getattr(self, name) <= 2:
                fail(name, "must be in [-2, 2] (OpenAI range)")
        if not _finite(self.length_penalty):
            fail("length_penalty", "must be a finite number")
        if self.early_stopping not in (True, False, "never"):
            fail("early_stopping", "must be true, false or 'never'")
        if not _finite(self.penalty_alpha) or not 0 <= self.penalty_alpha <= 1:
            fail("penalty_alpha", "must be in [0, 1]")
        if not _finite(self.contrastive_alpha) or not 0 < self.contrastive_alpha <= 1:
            fail("contrastive_alpha", "must be in (0, 1]")
        if self.logit_bias is not None and any(math.isnan(b) for b in self.logit_bias.values()):
            fail("logit_bias", "a bias is NaN")
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            fail("stop", "give non-empty strings")
        kinds = [n for n in ("choices", "regex", "json_schema") if getattr(self, n) is not None]
        if len(kinds) > 1:
            raise LMForgeError(f"choose one output constraint, got {' + '.join(kinds)}")
        if self.choices is not None and (
            not self.choices or not all(isinstance(c, str) and c for c in self.choices)
        ):
            fail("choices", "give a non-empty list of non-empty strings")
        if self.regex is not None and (not isinstance(self.regex, str) or not self.regex):
            fail("regex", "give a non-empty regular expression")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            fail("json_schema", 'give a JSON object (a schema), e.g. {"type": "object", ...}')
        if vocab_size is not None:
            self._validate_ids(vocab_size)

    def _validate_ids(self, vocab_size: int) -> None:
        def check(name: str, ids: list[int]) -> None:
            bad = [t for t in ids if not 0 <= t < vocab_size]
            if bad:
                raise LMForgeError(
                    f"invalid generation option {name}: token id {bad[0]} is outside the vocabulary "
                    f"(0..{vocab_size - 1})"
                )

        if self.logit_bias:
            check("logit_bias", list(self.logit_bias))
        if self.bad_words_ids:
            check("bad_words_ids", [t for seq in self.bad_words_ids for t in seq])
        if self.allowed_token_ids is not None:
            if not self.allowed_token_ids:
                self._fail("allowed_token_ids", "is empty: allow at least one token")
            check("allowed_token_ids", self.allowed_token_ids)
        if self.stop_token_ids:
            check("stop_token_ids", self.stop_token_ids)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
