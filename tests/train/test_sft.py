"""SFT masks: the loss covers exactly the assistant turns (content + end-of-turn), nothing else."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.train.batches import IGNORE, SFTBatches, collate_sft
from lmforge.train.sft import assistant_mask, build_examples, read_chat_jsonl

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? <|im_end|>"},
    {"role": "assistant", "content": "Rome, of course."},
]


def _spans(ids, mask):
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


def test_mask_covers_exactly_the_assistant_tokens(tiny_tok):
    ids, mask = assistant_mask(tiny_tok, CONVERSATION)
    assert ids == tiny_tok.encode_chat(CONVERSATION, add_generation_prompt=False)
    texts = [tiny_tok.decode(s) for s in _spans(ids, mask)]
    assert texts == ["Paris.<|im_end|>\n", "Rome, of course.<|im_end|>\n"]
    # everything outside the spans is prompt: system, users (incl. their special-looking text), headers
    unmasked = tiny_tok.decode([i for i, m in zip(ids, mask) if not m])
    assert "What is the capital" in unmasked and "And of Italy? <|im_end|>" in unmasked
    assert "Paris" not in unmasked and "Rome" not in unmasked


def test_mask_with_smollm2_template():
    """The real SmolLM2 template adds a default system prompt; the masks still land on the answers."""
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.load("smollm2")
    ids, mask = assistant_mask(tok, CONVERSATION[1:])
    assert tok.decode(ids).startswith("<|im_start|>system\n")
    texts = [tok.decode(s) for s in _spans(ids, mask)]
    assert texts == ["Paris.<|im_end|>\n", "Rome, of course.<|im_end|>\n"]


def test_labels_are_shifted_assistant_tokens():
    ids, mask = [5, 6, 7, 8, 9], [False, False, True, True, False]
    batch = collate_sft([(ids, mask), ([1, 2, 3], [False, True, True])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [1, 2, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 7, 8, IGNORE], [2, 3, IGNORE, IGNORE]]


def test_sft_batches_cover_every_example_each_epoch():
    examples = [([i, i + 1, i + 2], [False, True, True]) for i in range(10)]
    source = SFTBatches(examples, batch_size=5, seed=0)
    firsts = torch.cat([source.batch(k)["input_ids"][:, 0] for k in range(2)]).tolist()
    assert sorted(firsts) == list(range(10))
    assert (
        source.batch(1)["input_ids"].tolist()
        == SFTBatches(examples, 5, seed=0).batch(1)["input_ids"].tolist()
    )


def test_truncation_and_bad_files(tiny_tok, tmp_path):
    examples = build_examples(tiny_tok, [CONVERSATION], max_tokens=1000)
    assert len(examples) == 1
    with pytest.raises(LMForgeError, match="no conversation has an assistant token within 8"):
        build_examples(tiny_tok, [CONVERSATION], max_tokens=8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(LMForgeError, match=r"bad.jsonl:1: the conversation has no assistant message"):
        read_chat_jsonl(bad)
    bad.write_text('{"text": "no messages"}\n')
    with pytest.raises(LMForgeError, match="bad.jsonl:1: expected"):
        read_chat_jsonl(bad)
