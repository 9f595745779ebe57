"""`--precision auto` in the Trainer: the choice and its reason are logged, MFU is measured against the
peak of the dtype the run uses, and bf16 on hardware without it falls back or stops as asked. The
decision itself is tested for other machines in tests/test_hardware.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge import hardware
from lmforge.cli import run
from lmforge.errors import LMForgeError
from lmforge.train.batches import CLMBatches
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig, Trainer, flops_per_token
from tiny import tiny_model

QUIET = dict(steps=3, batch_size=2, seq_len=16, warmup_steps=0, progress=False, tensorboard=False)


def _fit(run_dir, **options):
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 320, 2000))
    model = tiny_model("gpt2", vocab_size=320).train()
    return Trainer(model, TrainConfig(**QUIET, **options), CLMBatches(tokens, 2, 16), run_dir).fit()


def test_auto_logs_the_choice_and_mfu_uses_that_dtypes_peak(tmp_path):
    result = _fit(tmp_path / "run")
    expected = hardware.choose_precision("auto")
    records = read_log(tmp_path / "run" / "log.jsonl")
    (choice,) = [r for r in records if r["kind"] == "precision"]
    assert result.precision == choice["precision"] == expected.precision and choice["requested"] == "auto"
    assert choice["reason"] == expected.reason
    # the peak the run measured again and logged; the probe record keeps the highest figure seen (another
    # run may have raised it since)
    peak = choice["peak_flops"]
    assert 0 < peak <= hardware.matmul_flops(result.precision)
    model = tiny_model("gpt2", vocab_size=320)
    for r in (r for r in records if r["kind"] == "train"):
        achieved = r["tokens_per_s"] * flops_per_token(model, 16)
        assert math.isclose(r["mfu"], achieved / peak, rel_tol=1e-6)


def test_bf16_without_native_support_falls_back_or_stops(tmp_path, monkeypatch, capsys):
    """A machine without bf16 (a Zen 3, say), simulated: the flags say no native bf16."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    result = _fit(tmp_path / "fallback", precision="bf16")
    assert result.precision == "fp32"
    (choice,) = [r for r in read_log(tmp_path / "fallback" / "log.jsonl") if r["kind"] == "precision"]
    assert choice["requested"] == "bf16" and "falling back to fp32" in choice["reason"]
    with pytest.raises(LMForgeError, match="no native bf16"):
        _fit(tmp_path / "stop", precision="bf16", precision_fallback=False)
    assert not (tmp_path / "stop" / "log.jsonl").exists()
    # auto on that machine: fp32, and why
    assert _fit(tmp_path / "auto").precision == "fp32"


def test_cli_precision_flags(tmp_path, monkeypatch, shards, capsys):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    tiny = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--seq-len", "32", "--batch-size", "2"]
    with pytest.raises(LMForgeError, match="--precision bf16: this CPU has no native bf16"):
        run(
            [
                "pretrain",
                str(shards),
                "--out",
                str(tmp_path / "o"),
                "--steps",
                "1",
                "--precision",
                "bf16",
                "--no-precision-fallback",
                "--no-tensorboard",
                *tiny,
            ]
        )
    result = run(
        [
            "pretrain",
            str(shards),
            "--out",
            str(tmp_path / "p"),
            "--steps",
            "1",
            "--precision",
            "bf16",
            "--no-tensorboard",
            "--eval-every",
            "0",
            *tiny,
        ]
    )
    assert result.precision == "fp32"
    assert "precision: fp32 (--precision bf16: this CPU has no native bf16" in _stderr(capsys)


def _stderr(capsys) -> str:
    return capsys.readouterr().err
