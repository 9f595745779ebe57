"""Trainer behaviour on tiny models: overfitting, accumulation, exact resume, and clear failures."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.model import Transformer
from lmforge.train import checkpoint as ckpt
from lmforge.train.batches import CLMBatches, clm_val_set
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig, Trainer, loss_fn
from tiny import tiny_config

QUIET = dict(progress=False, tensorboard=False, log_every=1)


def _model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_config("gpt2", vocab_size=320, **overrides))
    model.init_weights(seed)
    return model


def _tokens(n: int = 4000, vocab: int = 320, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, n))


class OneBatch:
    def __init__(self, batch):
        self.b = batch

    def batch(self, index):
        return self.b


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_log(run_dir / "log.jsonl") if r["kind"] == "train"]


def test_tiny_model_overfits_one_batch(tmp_path):
    ids = _tokens(8 * 17).reshape(8, 17)
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    cfg = TrainConfig(steps=80, batch_size=8, seq_len=16, lr=2e-2, warmup_steps=5, weight_decay=0.0, **QUIET)
    summary = Trainer(_model(d_model=64), cfg, OneBatch(batch), tmp_path / "run").fit()
    first = losses(tmp_path / "run")[0]
    assert first > 5.0  # ~ln(320) at initialisation
    assert summary["train_loss"] < 0.05


def test_loss_fn_ignores_unlabelled_positions_and_empty_batches():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    keep = labels != -100
    ref = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(loss_fn(logits, labels), ref)
    assert loss_fn(logits, torch.full((2, 3), -100)).item() == 0.0


def test_grad_accumulation_matches_a_big_batch(tmp_path):
    """Accumulating 4 micro-batches of 2 follows the same trajectory as batches of 8 (same rows)."""

    class Stacked:
        def __init__(self, src, parts):
            self.src, self.parts = src, parts

        def batch(self, index):
            rows = [self.src.batch(index * self.parts + j) for j in range(self.parts)]
            return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    small = CLMBatches(_tokens(), batch_size=2, seq_len=16, seed=3)
    # fp32: the comparison is exact to rounding, which bf16 autocast (auto's choice on AMX) is not
    base = dict(steps=5, seq_len=16, lr=3e-3, warmup_steps=0, precision="fp32", **QUIET)
    Trainer(_model(), TrainConfig(batch_size=2, grad_accum=4, **base), small, tmp_path / "a").fit()
    Trainer(_model(), TrainConfig(batch_size=8, **base), Stacked(small, 4), tmp_path / "b").fit()
    np.testing.assert_allclose(losses(tmp_path / "a"), losses(tmp_path / "b"), rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupted_run_resumes_exactly(tmp_path, optimizer):
    """A run that crashes after its step-4 checkpoint and is resumed logs the same losses, learning
    rates and validation as an uninterrupted one (dropout on, so RNG state matters too; with Muon the
    momentum of both of its optimizers is in the checkpoint)."""
    data = _tokens()
    val = clm_val_set(_tokens(600, seed=9), 4, 16, 2)
    cfg = TrainConfig(
        steps=10,
        batch_size=4,
        seq_len=16,
        lr=3e-3,
        warmup_steps=2,
        save_every=4,
        eval_every=3,
        optimizer=optimizer,
        **QUIET,
    )

    Trainer(_model(dropout=0.1), cfg, CLMBatches(data, 4, 16), tmp_path / "full", val).fit()

    class Crashing(CLMBatches):
        def batch(self, index):
            if index == 6:
                raise RuntimeError("simulated crash")
            return super().batch(index)

    run = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(_model(dropout=0.1), cfg, Crashing(data, 4, 16), run, val).fit()
    assert [s for s, _ in ckpt.step_dirs(run)] == [4]
    assert len(losses(run)) == 6  # steps 5 and 6 were logged before the crash; resume replays them
    Trainer(_model(seed=123, dropout=0.1), cfg, CLMBatches(data, 4, 16), run, val).fit(resume=True)

    full, resumed = (
        [r for r in read_log(path) if r["kind"] in ("train", "val")]
        for path in (tmp_path / "full" / "log.jsonl", run / "log.jsonl")
    )
    keys = ("kind", "step", "loss", "lr", "grad_norm")
    assert [tuple(r.get(k) for k in keys) for r in full] == [tuple(r.get(k) for k in keys) for r in resumed]
    import lmforge

    torch.testing.assert_close(
        lmforge.load(tmp_path / "full" / "final", device="cpu").model.state_dict(),
        lmforge.load(run / "final", device="cpu").model.state_dict(),
        rtol=0,
        atol=0,
    )


def test_checkpoints_are_complete_pruned_and_loadable(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=2, seq_len=16, save_every=2, keep_last=2, eval_every=3, **QUIET)
    val = clm_val_set(_tokens(600, seed=9), 2, 16, 2)
    Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run", val).fit()
    assert [s for s, _ in ckpt.step_dirs(tmp_path / "run")] == [4, 6]
    state = ckpt.load_trainer_state(tmp_path / "run" / "checkpoints" / "step-000006")
    assert state["step"] == 6 and "optimizer" in state and len(state["rng"]) == 1
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    vals = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "val" and r["step"] > 0]
    assert best["loss"] == min(r["loss"] for r in vals)
    assert (tmp_path / "run" / "plot.png").stat().st_size > 1000
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".")]  # no temporaries left


def test_sequence_longer_than_context_is_refused(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=2, seq_len=256, **QUIET)  # the tiny model has 128 positions
    with pytest.raises(LMForgeError, match="exceeds the model's context of 128"):
        Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 256), tmp_path / "run")


def test_resume_with_another_config_is_refused(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=2, seq_len=16, save_every=1, **QUIET)
    Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    other = TrainConfig(steps=4, batch_size=2, seq_len=16, lr=5e-4, save_every=1, **QUIET)
    with pytest.raises(LMForgeError, match=r"another configuration \(train.lr"):
        Trainer(_model(), other, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit(resume=True)
    with pytest.raises(LMForgeError, match="model.d_model"):
        Trainer(_model(d_model=64), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit(resume=True)
    with pytest.raises(LMForgeError, match="already holds checkpoints"):
        Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    with pytest.raises(LMForgeError, match="nothing to resume"):
        Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "empty").fit(resume=True)


def test_failing_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=16, save_every=2, **QUIET)
    run = tmp_path / "run"
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        if "step-000004" in str(f) or ".step-000004" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(LMForgeError, match="could not write checkpoint .*No space left on device"):
        Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), run).fit()
    assert [s for s, _ in ckpt.step_dirs(run)] == [2]  # the earlier checkpoint is intact
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]
    ckpt.load_trainer_state(run / "checkpoints" / "step-000002")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_follow_fp32(tmp_path, precision, low_precision_as_asked):
    """bf16 / fp16 autocast (fp16 with a GradScaler) track the fp32 losses closely on a tiny model."""
    base = dict(steps=3, batch_size=2, seq_len=16, lr=3e-3, warmup_steps=0, **QUIET)
    Trainer(_model(), TrainConfig(**base), CLMBatches(_tokens(), 2, 16), tmp_path / "fp32").fit()
    cfg = TrainConfig(precision=precision, **base)
    trainer = Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / precision)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    trainer.fit()
    np.testing.assert_allclose(losses(tmp_path / precision), losses(tmp_path / "fp32"), atol=0.05)


def test_label_smoothing_is_applied():
    logits = torch.randn(1, 4, 10) * 5
    labels = torch.tensor([[1, 2, 3, 4]])
    plain = loss_fn(logits, labels)
    smoothed = loss_fn(logits, labels, label_smoothing=0.1)
    ref = torch.nn.functional.cross_entropy(logits[0], labels[0], label_smoothing=0.1)
    torch.testing.assert_close(smoothed, ref)
    assert smoothed != plain


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tmp_path):
    """--compile (torch.compile, inductor on the CPU: a minute or two of compiling) gives the eager losses."""
    base = dict(steps=3, batch_size=2, seq_len=16, **QUIET)
    Trainer(_model(), TrainConfig(**base), CLMBatches(_tokens(), 2, 16), tmp_path / "eager").fit()
    Trainer(
        _model(), TrainConfig(compile=True, **base), CLMBatches(_tokens(), 2, 16), tmp_path / "compiled"
    ).fit()
    np.testing.assert_allclose(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), rtol=1e-4)


def test_time_budget_stops_and_saves(tmp_path):
    """Past --max-minutes the run stops after the current step, validated and checkpointed."""
    cfg = TrainConfig(steps=100, batch_size=2, seq_len=16, lr=1e-3, min_lr=1e-5, max_minutes=1e-6, **QUIET)
    summary = Trainer(_model(), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    assert summary["steps"] == 1
    assert [r["step"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"] == [1]
    assert [s for s, _ in ckpt.step_dirs(tmp_path / "run")] == [1] and (tmp_path / "run" / "final").is_dir()


def test_tensorboard_scalars_equal_the_jsonl_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = clm_val_set(_tokens(600, seed=9), 4, 16, 2)
    cfg = TrainConfig(
        steps=6, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2, eval_every=3, progress=False, log_every=1
    )
    Trainer(_model(), cfg, CLMBatches(_tokens(), 4, 16), tmp_path / "run", val).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    records = read_log(tmp_path / "run" / "log.jsonl")
    for kind, key in [("train", "loss"), ("train", "lr"), ("val", "loss")]:
        logged = [(r["step"], r[key]) for r in records if r["kind"] == kind]
        board = [(e.step, e.value) for e in events.Scalars(f"{kind}/{key}")]
        assert len(board) == len(logged) > 1
        assert [s for s, _ in board] == [s for s, _ in logged]
        np.testing.assert_allclose([v for _, v in board], [v for _, v in logged], rtol=1e-6)
