"""`generate`, `stream` and `chat`: one call's decisions (options, prompts, stop rules, strategy) and
the decoding that follows, on the model's long-lived engine (`LM.engine`).

Options are the fields of `GenerationConfig` (lmforge.generate.config), validated before any work
starts; the model's own generation defaults (generation_config.json / GGUF metadata) fill the rest.
Which strategy runs follows from the options: `num_beams > 1` → beam search; `penalty_alpha > 0` →
contrastive search; an `amateur` model → contrastive decoding; a `draft` model or `prompt_lookup` →
speculative decoding; otherwise greedy or (`do_sample`) sampling. All of them run the same processor
pipeline and constraints (`DecodeOptions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import LMForgeError
from lmforge.generate.contrastive import contrastive_decoding_steps, contrastive_search_steps
from lmforge.generate.engine import Batch, Engine, StepMode, StopChecker
from lmforge.generate.processors import LogitsPipeline, seeded_generator
from lmforge.generate.search import DecodeOptions, Step, beam_search, decode_steps
from lmforge.generate.speculative import SpeculativeStats, speculative_steps
from lmforge.generate.stream import Delta, DeltaStream

Prompt = str | Sequence[int]


@dataclass
class Completion:
    """One generated sequence."""

    text: str
    token_ids: list[int]  # generated tokens (a final stop token included)
    finish_reason: str  # "stop" (stop token or string) or "length" (max_new_tokens)
    prompt_tokens: int
    index: int = 0  # which prompt it answers
    logprobs: list[float] | None = None  # model log-prob of each generated token (on request)
    top_logprobs: list[dict[int, float]] | None = None  # top-n alternatives per token (on request)
    score: float | None = None  # beam search: length-normalised sum of log-probs
    stats: dict[str, float] = field(default_factory=dict)  # e.g. speculative acceptance rate
    # which one-token decode steps ran: "eager", "compile", "aot", or several "+"-joined ("aot+compile":
    # batch-1 steps through the AOT package, others compiled); "none" when only the prompt was run
    decode_step: str = "none"


def engine_of(lm: Any) -> Engine:
    """The model's long-lived engine (`LM.engine`); a plain object with a `.model` gets a new one."""
    engine = getattr(lm, "engine", None)
    return engine if isinstance(engine, Engine) else Engine(lm.model)


def resolve_config(lm: Any, options: dict[str, Any]):
    """The GenerationConfig for one call: the model's own defaults (its generation_config.json) with
    `options` on top, validated, token ids checked against the model's vocabulary."""
    from lmforge.generate.config import GenerationConfig

    config = GenerationConfig.from_hf(getattr(lm, "generation_config", None) or {}, **options)
    config.validate(lm.model.config.vocab_size)
    return config


def _tokenizer(lm: Any):
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        raise LMForgeError("this model has no tokenizer: pass prompts as token ids")
    return tokenizer


def _encode(lm: Any, prompts: list[Prompt]) -> list[list[int]]:
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(_tokenizer(lm).encode(p, add_special_tokens=True))
        else:
            out.append([int(t) for t in p])
    vocab = lm.model.config.vocab_size
    for i, ids in enumerate(out):
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise LMForgeError(f"prompt {i} has token id {bad[0]} outside the vocabulary of {vocab}")
    return out


def _stop_token_ids(lm: Any, config) -> frozenset[int]:
    ids: set[int] = set(config.stop_token_ids or ())
    if not config.ignore_eos:
        eos = (getattr(lm, "generation_config", None) or {}).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        tok_eos = getattr(getattr(lm, "tokenizer", None), "eos_token_id", None)
        if tok_eos is not None:
            ids.add(tok_eos)
    return frozenset(ids)


def _pad_token_id(lm: Any, stop_ids: frozenset[int]) -> int:
    pad = getattr(getattr(lm, "tokenizer", None), "pad_token_id", None)
    if pad is None:
        pad = (getattr(lm, "generation_config", None) or {}).get("pad_token_id")
    if pad is None:
        pad = min(stop_ids) if stop_ids else 0
    return int(pad)


def image_prefix(lm: Any, image: Any, prompts: int) -> torch.Tensor | None:
    """The input vectors (prompts, P, C) an image (or one image per prompt) stands for in front of each
    prompt: the model's own `image_prefix` (a vision-language model's encoder + projector); a text-only
    model given an image is a one-line error."""
    if image is None:
        return None
    encode = getattr(lm, "image_prefix", None)
    if encode is None:
        raise LMForgeError(
            f"{getattr(lm, 'source', None) or 'this model'} is a text-only model and cannot take an image: "
            "give a vision-language model (a directory from `lmforge quickstart --recipe vlm`)"
        )
    images = list(image) if isinstance(image, list | tuple) else [image]
    if len(images) == 1:
        images = images * prompts
    if len(images) != prompts:
        raise LMForgeError(f"{len(images)} images for {prompts} prompts: give one image, or one per prompt")
    return encode(images)


def _check_companion(lm: Any, other: Any, role: str, needed: int) -> None:
    """A draft or amateur model must share the target's tokenizer (same ids for the same text)."""
    if other is None:
        return
    mine = getattr(getattr(lm, "tokenizer", None), "fingerprint", None)
    theirs = getattr(getattr(other, "tokenizer", None), "fingerprint", None)
    if mine is not None and theirs is not None and mine != theirs:
        raise LMForgeError(
            f"the {role} model uses a different tokenizer than the target (fingerprints {theirs} vs {mine}); "
            f"choose a {role} model from the same family"
        )
    if other.model.config.max_seq_len < needed:
        raise LMForgeError(
            f"the {role} model's context ({other.model.config.max_seq_len} tokens) is shorter than the prompt "
            f"plus max_new_tokens ({needed}); lower max_new_tokens or use a longer-context {role} model"
        )
    if other.model.config.vocab_size != lm.model.config.vocab_size:
        raise LMForgeError(
            f"the {role} model's vocabulary ({other.model.config.vocab_size}) differs from the target's "
            f"({lm.model.config.vocab_size}); choose a {role} model with the same tokenizer"
        )


class Run:
    """Everything one call decides before decoding: config, prompts, stop rules, strategy, decode step.
    `generate`/`stream` decode it; `ContinuousBatcher.add` makes one per request (one prompt)."""

    def __init__(
        self,
        lm: Any,
        prompts: list[Prompt],
        options: dict[str, Any],
        draft: Any,
        amateur: Any,
        image: Any = None,
    ):
        self.lm = lm
        self.config = config = resolve_config(lm, options)
        self.draft, self.amateur = draft, amateur
        self.tokenizer = getattr(lm, "tokenizer", None)
        if not prompts:
            raise LMForgeError("no prompts given")
        ids = _encode(lm, prompts)
        # an image's P prefix vectors take the first P slots of its prompt: placeholders (the pad id) here
        self.prefix_embeds = image_prefix(lm, image, len(ids))
        if self.prefix_embeds is not None:
            if draft is not None or amateur is not None:
                raise LMForgeError("an image prompt decodes alone: drop the draft or amateur model")
            placeholder = [_pad_token_id(lm, _stop_token_ids(lm, config))] * self.prefix_embeds.shape[1]
            ids = [placeholder + p for p in ids]
        self.engine = engine_of(lm)
        room = self.engine.max_seq_len - max(len(p) for p in ids)
        chosen = "max_new_tokens" in options or "max_new_tokens" in (
            getattr(lm, "generation_config", None) or {}
        )
        if not chosen and 0 < room < config.max_new_tokens:  # the default must not overflow a short context
            self.config = config = config.replace(
                max_new_tokens=room, min_new_tokens=min(config.min_new_tokens, room)
            )
        self.prompts = self.engine.check_context(ids, config.max_new_tokens, truncate=config.truncate_prompt)
        if self.prefix_embeds is not None and self.prompts != ids:
            raise LMForgeError("truncate_prompt would cut the image prefix: shorten the prompt instead")
        self.stop_ids = _stop_token_ids(lm, config)
        self.stop_strings = tuple(config.stop or ())
        if self.stop_strings and self.tokenizer is None:
            raise LMForgeError("stop strings need a model with a tokenizer")
        self.pad = _pad_token_id(lm, self.stop_ids)
        self.vocab_size = lm.model.config.vocab_size
        self.strategy = self._strategy()
        needed = max(len(p) for p in self.prompts) + config.max_new_tokens
        _check_companion(lm, draft, "draft", needed)
        _check_companion(lm, amateur, "amateur", needed)
        self.generator = seeded_generator(config.seed, self.engine.device)
        self._check_constraint_compiles()
        self.mode = self.engine.mode(compile=config.compile, aot=config.aot)  # checks the compiler

    def companion(self, other: Any) -> tuple[Engine, StepMode]:
        """A draft's or amateur's engine (its own LM's, when given an LM) and this call's step mode on it."""
        engine = engine_of(other)
        return engine, engine.mode(compile=self.config.compile, aot=self.config.aot)

    def _strategy(self) -> str:
        c = self.config
        speculative = self.draft is not None or c.prompt_lookup
        chosen = [
            name
            for name, on in [
                ("beam", c.num_beams > 1),
                ("contrastive_search", c.penalty_alpha > 0),
                ("contrastive_decoding", self.amateur is not None),
                ("speculative", speculative),
            ]
            if on
        ]
        if len(chosen) > 1:
            raise LMForgeError(f"choose one decoding strategy, got {' + '.join(chosen)}")
        if chosen == ["contrastive_search"] and (c.top_k or 0) < 2:
            raise LMForgeError("contrastive search (penalty_alpha > 0) needs top_k >= 2 candidates")
        if chosen == ["contrastive_search"] and c.do_sample:
            raise LMForgeError("contrastive search is deterministic: drop do_sample or penalty_alpha")
        strategy = chosen[0] if chosen else ("sample" if c.do_sample else "greedy")
        if strategy == "beam" and c.num_return_sequences > c.num_beams:
            raise LMForgeError(
                f"num_return_sequences={c.num_return_sequences} exceeds num_beams={c.num_beams}"
            )
        if c.num_return_sequences > 1 and not c.do_sample and strategy != "beam":
            raise LMForgeError(
                f"num_return_sequences={c.num_return_sequences} would repeat one deterministic output: "
                "add do_sample=True or use num_beams"
            )
        return strategy

    def _check_constraint_compiles(self) -> None:
        """Compile the output constraint now, so a bad regex or schema fails before any model work."""
        from lmforge.generate.constraints import from_config

        self._new_constraint = from_config(
            self.config, self.tokenizer, self.vocab_size, sorted(self.stop_ids)
        )

    def constraint(self, rows: int):
        """A fresh per-row constraint state (choices / regex / JSON schema) for `rows` rows, or None."""
        return None if self._new_constraint is None else self._new_constraint(rows)

    def pipeline(self, prompt_length: int, constraint: Any = None) -> LogitsPipeline:
        """The processor pipeline for rows whose generated tokens start at slot `prompt_length`."""
        from lmforge.generate.processors import build_pipeline

        return build_pipeline(
            self.config,
            vocab_size=self.vocab_size,
            eos_token_id=sorted(self.stop_ids),
            prompt_length=prompt_length,
            constraint=constraint,
        )

    def options(self, batch: Batch, constraint: Any) -> DecodeOptions:
        """What the strategy is told: this call's pipeline for `batch`, constraint, sampling, outputs."""
        c = self.config
        return DecodeOptions(
            pipeline=self.pipeline(batch.prompt_slots, constraint),
            constraint=constraint,
            do_sample=c.do_sample,
            generator=self.generator,
            pad_token_id=self.pad,
            logprobs=c.logprobs,
            top_logprobs=c.top_logprobs or 0,
        )

    def new_batch(self, prompts: list[list[int]], prefix_embeds: torch.Tensor | None = None) -> Batch:
        return self.engine.new_batch(
            prompts, self.capacity(prompts), self.pad, mode=self.mode, prefix_embeds=prefix_embeds
        )

    def row_prefix(self, repeat: int = 1) -> torch.Tensor | None:
        """The image prefix of every row when each prompt is decoded `repeat` times (prompt-major)."""
        if self.prefix_embeds is None:
            return None
        return self.prefix_embeds.repeat_interleave(repeat, dim=0)

    def stopper(self, rows: int) -> StopChecker:
        return StopChecker(rows, self.config.max_new_tokens, self.stop_ids, self.stop_strings, self.tokenizer)

    def capacity(self, prompts: list[list[int]]) -> int:
        return max(len(p) for p in prompts) + self.config.max_new_tokens

    # -- decoding: yields (group of rows, step) ------------------------------------------------------

    def groups(self) -> Iterator[tuple[_Group, Step]]:
        c, n = self.config, self.config.num_return_sequences
        rows = [p for p in self.prompts for _ in range(n)]  # n samples per prompt, prompt-major
        if self.strategy == "speculative":
            for i, prompt in enumerate(rows):
                yield from self._speculative(i, prompt, None if self.prefix_embeds is None else i // n)
            return
        group = _Group(0, self.stopper(len(rows)), self.new_batch(rows, self.row_prefix(n)))
        batch = group.batch
        options = self.options(batch, self.constraint(len(rows)))
        if self.strategy == "contrastive_search":
            steps = contrastive_search_steps(
                self.engine,
                batch,
                group.stopper,
                top_k=c.top_k,
                penalty_alpha=c.penalty_alpha,
                options=options,
            )
        elif self.strategy == "contrastive_decoding":
            amateur, mode = self.companion(self.amateur)
            amateur_batch = amateur.new_batch(rows, self.capacity(rows), self.pad, mode=mode)
            steps = contrastive_decoding_steps(
                self.engine,
                batch,
                amateur,
                amateur_batch,
                group.stopper,
                alpha=c.contrastive_alpha,
                options=options,
            )
        else:
            steps = decode_steps(self.engine, batch, self.engine.prefill(batch), group.stopper, options)
        for step in steps:
            yield group, step

    def _speculative(
        self, index: int, prompt: list[int], image_row: int | None = None
    ) -> Iterator[tuple[_Group, Step]]:
        c = self.config
        prefix = None if image_row is None else self.prefix_embeds[image_row : image_row + 1]
        group = _Group(index, self.stopper(1), self.new_batch([prompt], prefix), SpeculativeStats())
        logits = self.engine.prefill(group.batch)
        draft, draft_mode = self.companion(self.draft) if self.draft is not None else (None, None)
        steps = speculative_steps(
            self.engine,
            group.batch,
            logits,
            group.stopper,
            draft=draft,
            draft_mode=draft_mode,
            num_draft_tokens=c.num_draft_tokens,
            max_ngram=c.prompt_lookup_max_ngram,
            options=self.options(group.batch, self.constraint(1)),
            stats=group.speculative,
        )
        for step in steps:
            yield group, step

    def beam(self) -> list[Completion]:
        c = self.config
        batch = self.new_batch(self.prompts, self.prefix_embeds)
        logits = self.engine.prefill(batch)
        constraint = self.constraint(len(self.prompts) * c.num_beams)
        hyps = beam_search(
            self.engine,
            batch,
            logits,
            num_beams=c.num_beams,
            max_new_tokens=c.max_new_tokens,
            stop_token_ids=self.stop_ids,
            stop_strings=self.stop_strings,
            tokenizer=self.tokenizer,
            length_penalty=c.length_penalty,
            early_stopping=c.early_stopping,
            num_return_sequences=c.num_return_sequences,
            options=self.options(batch, constraint),
        )
        out = []
        for i, per_prompt in enumerate(hyps):
            for h in per_prompt:
                text, reason = self._final_text(h.tokens)
                out.append(
                    Completion(
                        text,
                        h.tokens,
                        reason,
                        len(self.prompts[i]),
                        index=i,
                        score=h.score,
                        decode_step=batch.decode_step,
                    )
                )
        return out

    def _final_text(self, tokens: list[int]) -> tuple[str, str]:
        """Text and finish reason of a finished token list (beam hypotheses)."""
        stopper = self.stopper(1)
        for token in tokens:
            stopper.update([token])
        return stopper.texts[0], stopper.finish_reason(0)


@dataclass
class _Group:
    """Rows decoded together: one stop checker, one target batch (speculative: one prompt each)."""

    first: int  # index of its first row among the call's sequences
    stopper: StopChecker
    batch: Batch
    speculative: SpeculativeStats | None = None

    def stats(self) -> dict[str, float]:
        s = self.speculative
        return {} if s is None else {"acceptance_rate": s.acceptance_rate, "rounds": s.rounds}


def prompt_list(prompt: Prompt | list[Prompt]) -> tuple[list[Prompt], bool]:
    """The prompts of a call, and whether it gave a single one (text or a list of token ids)."""
    if isinstance(prompt, str):
        return [prompt], True
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, Sequence) and prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)], True
    if isinstance(prompt, Sequence):
        return list(prompt), False
    raise LMForgeError(f"a prompt is a string or a list of token ids, got {type(prompt).__name__}")


def generate(
    lm: Any,
    prompt: Prompt | list[Prompt],
    *,
    draft: Any = None,
    amateur: Any = None,
    image: Any = None,
    **options: Any,
) -> Completion | list[Completion]:
    """Generate for one prompt (text or token ids) or a batch of them.

    Returns one `Completion` for a single prompt with `num_return_sequences=1`, else a list of them,
    prompt-major (`num_return_sequences` per prompt). `draft`/`amateur` are other loaded LMs with the
    same tokenizer (speculative / contrastive decoding). `image` (a file path or a (3, H, W) tensor, or
    one per prompt) goes in front of the prompt for a vision-language model (`lmforge.multimodal.VLM`).
    """
    prompts, single = prompt_list(prompt)
    with torch.inference_mode():
        run = Run(lm, prompts, options, draft, amateur, image)
        if run.strategy == "beam":
            out = run.beam()
        else:
            out = _collect(run)
    return out[0] if single and len(out) == 1 else out


def _collect(run: Run) -> list[Completion]:
    n = run.config.num_return_sequences
    rows = [i // n for i in range(len(run.prompts) * n)]
    tokens: dict[int, list[int]] = {r: [] for r in range(len(rows))}
    logprobs: dict[int, list[float]] = {r: [] for r in range(len(rows))}
    tops: dict[int, list[dict[int, float]]] = {r: [] for r in range(len(rows))}
    finals: dict[int, tuple[_Group, int]] = {}
    for group, step in run.groups():
        for j, active in enumerate(step.active):
            if not active:
                continue
            r = group.first + j
            tokens[r].append(int(step.tokens[j]))
            if step.logprobs is not None:
                logprobs[r].append(float(step.logprobs[j]))
            if step.top_ids is not None:
                tops[r].append(
                    dict(zip(step.top_ids[j].tolist(), step.top_logprobs[j].tolist(), strict=True))
                )
            finals[r] = (group, j)
    out = []
    for r, prompt_index in enumerate(rows):
        group, j = finals[r]
        stopper = group.stopper
        out.append(
            Completion(
                text=stopper.texts[j],
                token_ids=tokens[r],
                finish_reason=stopper.finish_reason(j),
                prompt_tokens=len(run.prompts[prompt_index]),
                index=prompt_index,
                logprobs=logprobs[r] if run.config.logprobs else None,
                top_logprobs=tops[r] if run.config.top_logprobs else None,
                stats=group.stats(),
                decode_step=group.batch.decode_step,
            )
        )
    return out


def stream(
    lm: Any,
    prompt: Prompt | list[Prompt],
    *,
    draft: Any = None,
    amateur: Any = None,
    image: Any = None,
    **options: Any,
) -> Iterator[Delta]:
    """Yield `Delta`s (new text, token ids, optional log-probs) as tokens are decided.

    `"".join(d.text for d in stream(...))` equals `generate(...).text`; with several prompts or
    `num_return_sequences`, `Delta.index` says which sequence a delta belongs to. Beam search cannot
    stream (its best sequence is only known at the end).
    """
    prompts, _ = prompt_list(prompt)
    with torch.inference_mode():
        run = Run(lm, prompts, options, draft, amateur, image)
    if run.strategy == "beam":
        raise LMForgeError("beam search cannot stream: its best sequence is known only at the end")
    return _stream(run)


def _stream(run: Run) -> Iterator[Delta]:
    """Decode step by step; inference mode is on while a step runs, never while the caller holds a delta."""
    followers: dict[int, DeltaStream] = {}
    steps = run.groups()
    while True:
        with torch.inference_mode():
            item = next(steps, None)
            if item is None:
                return
            group, step = item
            follower = followers.get(group.first)
            if follower is None or follower.stopper is not group.stopper:
                follower = followers[group.first] = DeltaStream(group.stopper, group.first, group.batch)
            deltas = list(follower.deltas(step))
        yield from deltas


def chat(
    lm: Any,
    messages: list[dict[str, str]],
    *,
    stream: bool = False,
    draft: Any = None,
    amateur: Any = None,
    image: Any = None,
    **options: Any,
) -> Completion | Iterator[Delta]:
    """Answer a conversation (`[{"role": "user", "content": ...}, ...]`) through the model's chat
    template; with `stream=True` yield `Delta`s instead of returning a `Completion`; `image` goes in
    front of the conversation for a vision-language model."""
    tokenizer = _tokenizer(lm)
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise LMForgeError('messages must be a non-empty list of {"role": ..., "content": ...} dicts')
    ids = tokenizer.encode_chat(messages, add_generation_prompt=True)  # message text stays plain text
    if stream:
        return globals()["stream"](lm, ids, draft=draft, amateur=amateur, image=image, **options)
    return generate(lm, ids, draft=draft, amateur=amateur, image=image, **options)
