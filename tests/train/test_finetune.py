"""Fine-tuning real and tiny models: LoRA on SmolLM2 chat data lowers the loss; full fine-tuning and
merging through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.cli import run
from lmforge.errors import LMForgeError
from lmforge.train.logging import read_log

CHATS = [
    [
        {"role": "user", "content": "What colour is the sky on Zorbl?"},
        {"role": "assistant", "content": "On Zorbl the sky is bright green."},
    ],
    [
        {"role": "user", "content": "Who rules Zorbl?"},
        {"role": "assistant", "content": "Zorbl is ruled by Queen Mibba the Third."},
    ],
    [
        {"role": "user", "content": "What do people eat on Zorbl?"},
        {"role": "assistant", "content": "On Zorbl people eat blue moss pies."},
    ],
    [
        {"role": "user", "content": "How many moons has Zorbl?"},
        {"role": "assistant", "content": "Zorbl has exactly seven moons."},
    ],
]


def _chat_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS), encoding="utf-8")
    return path


def _val_losses(run_dir):
    return [r["loss"] for r in read_log(run_dir / "log.jsonl") if r["kind"] == "val"]


@pytest.mark.slow
def test_lora_finetune_smollm2_lowers_the_loss_on_its_chat_data(tmp_path):
    """SmolLM2-135M (GGUF, dequantised to fp32) with LoRA r=8 on q and v, 8 steps on 4 conversations:
    the assistant-token loss on those conversations falls; the adapter merges into a loadable model."""
    out = tmp_path / "run"
    run(
        [
            "finetune",
            "--model",
            "smollm2",
            "--out",
            str(out),
            "--chat-data",
            str(_chat_file(tmp_path)),
            "--lora",
            "--lora-targets",
            "q",
            "v",
            "--val-fraction",
            "0",
            "--steps",
            "8",
            "--batch-size",
            "2",
            "--seq-len",
            "64",
            "--lr",
            "2e-3",
            "--warmup-steps",
            "0",
            "--eval-every",
            "8",
            "--merge",
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    before, *_, after = _val_losses(out)
    assert after < before - 0.3, (before, after)
    adapter_files = sorted(p.name for p in (out / "final").iterdir())
    assert "adapter_model.safetensors" in adapter_files and "model.safetensors" not in adapter_files
    merged = lmforge.load(out / "merged", device="cpu")
    assert merged.config.family == "llama" and merged.tokenizer is not None


def test_full_finetune_and_lora_merge_on_a_tiny_checkpoint(shards, tmp_path):
    base = tmp_path / "base"
    run(
        [
            "pretrain",
            str(shards),
            "--out",
            str(base),
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--d-model",
            "32",
            "--seq-len",
            "32",
            "--batch-size",
            "2",
            "--steps",
            "2",
            "--eval-every",
            "0",
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    chat = _chat_file(tmp_path)
    common = [
        "--chat-data",
        str(chat),
        "--val-fraction",
        "0",
        "--steps",
        "6",
        "--batch-size",
        "2",
        "--seq-len",
        "64",
        "--lr",
        "1e-2",
        "--warmup-steps",
        "0",
        "--eval-every",
        "6",
        "--no-progress",
        "--no-tensorboard",
    ]
    full = tmp_path / "full"
    run(["finetune", "--model", str(base / "final"), "--out", str(full), *common])
    before, *_, after = _val_losses(full)
    assert after < before
    assert (
        lmforge.load(full / "final", device="cpu").config == lmforge.load(base / "final", device="cpu").config
    )

    adapted = tmp_path / "lora"
    run(
        [
            "finetune",
            "--model",
            str(base / "final"),
            "--out",
            str(adapted),
            "--lora",
            "--lora-targets",
            "qkv",
            "o",
            "--lora-rank",
            "4",
            *common,
        ]
    )
    run(
        [
            "lora",
            "merge",
            "--model",
            str(base / "final"),
            "--adapter",
            str(adapted / "final"),
            "--out",
            str(tmp_path / "merged"),
        ]
    )
    from lmforge.train.lora import load_adapter

    unmerged = lmforge.load(base / "final", device="cpu")
    load_adapter(unmerged.model, adapted / "final")
    merged = lmforge.load(tmp_path / "merged", device="cpu")
    ids = torch.tensor([[3, 50, 7, 99, 12]])
    base_logits = lmforge.load(base / "final", device="cpu").model(ids)
    with torch.no_grad():
        assert (unmerged.model(ids) - base_logits).abs().max() > 1e-4  # the adapter learned something
        torch.testing.assert_close(merged.model(ids), unmerged.model(ids), rtol=1e-5, atol=1e-5)


def test_finetune_refuses_bad_settings(tmp_path):
    with pytest.raises(LMForgeError, match="exactly one of"):
        run(["finetune", "--model", "smollm2", "--out", str(tmp_path / "x")])


def test_continued_pretraining_on_text(shards, tmp_path, corpus_files):
    base = tmp_path / "base"
    tiny = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--seq-len", "32", "--batch-size", "2"]
    run(
        [
            "pretrain",
            str(shards),
            "--out",
            str(base),
            *tiny[:6],
            "--steps",
            "1",
            "--eval-every",
            "0",
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    text = tmp_path / "notes.txt"
    text.write_text(corpus_files[0].read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    out = tmp_path / "cont"
    summary = run(
        [
            "finetune",
            "--model",
            str(base / "final"),
            "--out",
            str(out),
            "--text",
            str(text),
            "--steps",
            "8",
            "--seq-len",
            "32",
            "--lr",
            "1e-2",
            "--warmup-steps",
            "0",
            "--eval-every",
            "8",
            "--no-progress",
            "--no-tensorboard",
        ]
    )
    before, *_, after = _val_losses(out)
    assert after < before and summary["val"]["bits_per_byte"] > 0
