"""The training API: `lmforge.pretrain` / `finetune` / `merge_lora` / `quickstart` take keyword options or
one config object, check every option before loading a model or reading data, and return a
`TrainResult`; each option is declared once, with its help."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import lmforge
from lmforge.errors import LMForgeError
from lmforge.options import configure
from lmforge.train.lora import LoRAConfig
from lmforge.train.trainer import TrainConfig

QUIET = dict(batch_size=2, progress=False, tensorboard=False)
TINY = dict(n_layer=1, n_head=2, d_model=32, seq_len=32, **QUIET)
CHATS = [
    [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer number {i}."}]
    for i in range(4)
]


def _chat_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS), encoding="utf-8")
    return path


CONFIGS = [
    lmforge.TrainConfig,
    lmforge.PretrainConfig,
    lmforge.FinetuneConfig,
    lmforge.QuickstartConfig,
    LoRAConfig,
]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_option_has_help(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_finetune_defaults_differ_but_the_options_are_declared_once():
    fields = {f.name: f for f in dataclasses.fields(lmforge.FinetuneConfig)}
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert (fields["steps"].default, train["steps"].default) == (100, 1000)
    assert lmforge.FinetuneConfig(text=["x"]).lr == 2e-4 and TrainConfig().lr == 1e-3
    for name in train:  # same help for every training option, whatever the default
        assert fields[name].metadata["help"] == train[name].metadata["help"]
    lora = {f.name: f for f in dataclasses.fields(LoRAConfig)}
    for name in ("rank", "alpha", "dropout", "targets"):
        assert fields[f"lora_{name}"].metadata == lora[name].metadata
    assert fields["lora_targets"].default_factory() == LoRAConfig().targets


def test_keyword_options_win_over_a_config_object():
    base = lmforge.PretrainConfig(steps=5, lr=0.01, preset="llama-tiny")
    cfg = configure(lmforge.PretrainConfig, base, {"lr": 0.02}, "pretrain")
    assert (cfg.steps, cfg.lr, cfg.preset) == (5, 0.02, "llama-tiny")
    # a TrainConfig (a base) is accepted too; another command's config is not
    assert configure(lmforge.PretrainConfig, TrainConfig(steps=7), {}, "pretrain").steps == 7
    with pytest.raises(LMForgeError, match="config must be a PretrainConfig, not FinetuneConfig"):
        configure(lmforge.PretrainConfig, lmforge.FinetuneConfig(text=["x"]), {}, "pretrain")


def test_bad_options_fail_before_any_data_is_read(tmp_path):
    """The data directory does not exist: each error below is about the option, found first."""
    missing, out = tmp_path / "no-data", tmp_path / "run"
    cases = [
        ({"stpes": 3}, r"unknown option\(s\) in pretrain: stpes \(did you mean steps\?\)"),
        ({"steps": "3"}, "option steps must be an integer"),
        ({"steps": 0}, "steps must be positive"),
        ({"precision": "fp8"}, "option precision must be one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ({"objective": "mlm"}, "objective mlm needs an encoder with an MLM head"),
        ({"preset": "gpt-huge"}, "unknown preset 'gpt-huge'"),
        ({"n_head": 5}, "ModelConfig"),
        ({"seq_len": 512}, "--seq-len 512 exceeds the model's context of 256"),
        ({"mask_prob": 1.5}, r"mask_prob must be in \(0, 1\)"),
        ({"resume": True}, "nothing to resume"),
    ]
    for options, message in cases:
        with pytest.raises(LMForgeError, match=message):
            lmforge.pretrain(missing, out=out, **options)


def test_finetune_checks_its_options_before_loading_the_model(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("lmforge.lm.load", no_loading)
    chat = _chat_file(tmp_path)
    cases = [
        ({}, "exactly one of chat_data, text or data"),
        ({"chat_data": chat, "text": ["notes.txt"]}, "exactly one of"),
        ({"chat_data": tmp_path / "nope.jsonl"}, "chat data file not found"),
        ({"data": tmp_path}, "not a `lmforge prepare` directory"),
        ({"chat_data": chat, "merge": True}, "merge only applies to LoRA runs"),
        ({"chat_data": chat, "lora": True, "lora_rank": 0}, "LoRA rank must be a positive integer"),
        ({"chat_data": chat, "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"chat_data": chat, "lora_rnak": 4}, r"lora_rnak \(did you mean lora_rank\?\)"),
    ]
    for options, message in cases:
        with pytest.raises(LMForgeError, match=message):
            lmforge.finetune("smollm2", out=tmp_path / "run", **options)
    with pytest.raises(LMForgeError, match="minutes and lr must be positive"):
        lmforge.quickstart(out=tmp_path / "qs", minutes=0)
    assert not (tmp_path / "qs").exists()


def test_pretrain_finetune_and_merge_through_the_api(shards, tmp_path):
    """A config object for pretraining, a config object plus a keyword for a LoRA fine-tune that
    merges, and merge_lora on the same adapter: both merged checkpoints give the same logits."""
    config = lmforge.PretrainConfig(steps=2, eval_every=0, eval_batches=2, **TINY)
    base = lmforge.pretrain(shards, config, out=tmp_path / "base")
    assert base["steps"] == base.steps == 2 and base.final == tmp_path / "base" / "final"
    assert base.val["bits_per_byte"] > 0 and base.total_s >= base.elapsed_s > 0
    assert json.loads(json.dumps(base.to_dict()))["final"] == str(base.final)

    lora = lmforge.FinetuneConfig(chat_data=_chat_file(tmp_path), lora=True, merge=True, lora_rank=4, **QUIET)
    tuned = lmforge.finetune(base.final, lora, out=tmp_path / "lora", steps=3, seq_len=64, lr=1e-2)
    assert tuned.steps == 3 and (tuned.final / "adapter_model.safetensors").is_file()
    merged = lmforge.merge_lora(base.final, tuned.final, tmp_path / "merged")
    ids = torch.tensor([[3, 50, 7, 99, 12]])
    with torch.no_grad():
        a = lmforge.load(tuned.merged, device="cpu").model(ids)
        b = lmforge.load(merged, device="cpu").model(ids)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert (a - lmforge.load(base.final, device="cpu").model(ids)).abs().max() > 1e-4


def test_dropout_is_a_training_option_recorded_in_the_checkpoint(shards, tmp_path):
    result = lmforge.pretrain(shards, out=tmp_path / "run", steps=1, eval_every=0, dropout=0.2, **TINY)
    config = lmforge.load(result.final, device="cpu").config
    assert config.dropout == config.attn_dropout == 0.2
    run_config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert run_config["train"]["dropout"] == 0.2 and run_config["identity"]["objective"] == "clm"
