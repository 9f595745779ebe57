"""Parity with transformers' `generate` on tiny random models saved with `save_pretrained` and loaded
with `lmforge.load` (greedy, batched left-padded greedy, processors, beam search with length penalty and
every early-stopping mode); SmolLM2 parity is in test_smollm2.py."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import lmforge
from lmforge.generate import generate

VOCAB = 64
EOS = 3
PAD = 0


def tiny_hf(kind: str, seed: int):
    torch.manual_seed(seed)
    if kind == "llama":
        config = tf.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            max_position_embeddings=128,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
        model = tf.LlamaForCausalLM(config)
    else:
        config = tf.GPT2Config(
            vocab_size=VOCAB,
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=128,
            bos_token_id=1,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
        model = tf.GPT2LMHeadModel(config)
    with torch.no_grad():  # sharper distributions: beams and stops actually compete
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, tmp_path_factory):
    hf = tiny_hf(request.param, seed=7)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return hf, lmforge.load(path, dtype=torch.float32, device="cpu")


def hf_generate(hf, prompts, **options):
    """transformers' generate on left-padded prompts: the generated ids of every returned sequence
    (finished ones padded to a common width with PAD)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, pad_token_id=PAD, eos_token_id=EOS, **options)
    return out[:, width:].tolist()


def ours(lm, prompts, **options):
    """Our generated ids, padded with PAD to transformers' width for comparison."""
    out = [c.token_ids for c in generate(lm, prompts, **options)]
    width = max(map(len, out))
    return [row + [PAD] * (width - len(row)) for row in out]


PROMPTS = [[1, 5, 9, 11, 20, 33], [1, 7], [1, 40, 41, 42]]


def test_greedy_batched_left_padded(pair):
    hf, lm = pair
    expected = hf_generate(hf, PROMPTS, max_new_tokens=20, do_sample=False)
    assert ours(lm, PROMPTS, max_new_tokens=20) == expected


@pytest.mark.parametrize(
    "options",
    [
        dict(repetition_penalty=1.8),
        dict(no_repeat_ngram_size=2),
        dict(min_new_tokens=15),
        dict(bad_words_ids=[[5], [9, 11]]),
    ],
    ids=lambda o: next(iter(o)),
)
def test_greedy_with_processors(pair, options):
    hf, lm = pair
    expected = hf_generate(hf, PROMPTS, max_new_tokens=16, do_sample=False, **options)
    assert ours(lm, PROMPTS, max_new_tokens=16, **options) == expected


@pytest.mark.parametrize(
    "length_penalty,early_stopping", [(1.0, False), (2.0, False), (-0.5, True), (0.7, "never")]
)
def test_beam_search_matches(pair, length_penalty, early_stopping):
    hf, lm = pair
    for prompt in PROMPTS:
        options = dict(
            num_beams=4,
            num_return_sequences=3,
            max_new_tokens=12,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
        )
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([prompt]),
                pad_token_id=PAD,
                eos_token_id=EOS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                **options,
            )
        mine = generate(lm, prompt, **options)
        expected = [row[len(prompt) :] for row in out.sequences.tolist()]
        fill = PAD or EOS  # transformers fills finished beams with `pad_token_id or eos_token_id`
        for seq, completion in zip(expected, mine, strict=True):
            assert completion.token_ids + [fill] * (len(seq) - len(completion.token_ids)) == seq
        torch.testing.assert_close(
            torch.tensor([c.score for c in mine]), out.sequences_scores.float(), rtol=1e-4, atol=1e-4
        )


def test_beam_search_batched_with_repetition_penalty(pair):
    hf, lm = pair
    options = dict(num_beams=3, max_new_tokens=10, length_penalty=1.5, repetition_penalty=1.3)
    expected = hf_generate(hf, PROMPTS, do_sample=False, **options)
    assert ours(lm, PROMPTS, **options) == expected


def test_beams_end_on_eos_sometimes(pair):
    """The fixtures exercise finished hypotheses: some beam ends on EOS before max_new_tokens."""
    hf, lm = pair
    ends = [
        c.token_ids[-1] == EOS
        for p in PROMPTS + [[1, 2], [1, 3, 3], [1, 60, 61]]
        for c in generate(lm, p, num_beams=4, num_return_sequences=4, max_new_tokens=24)
    ]
    assert any(ends)
