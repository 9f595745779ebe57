"""The trainer's bf16 / fp16 autocast really runs the model's matmuls in that precision.

Every aten op of each model forward the Trainer makes (training steps and validation) is recorded
with a TorchDispatchMode, which sees the ops after autocast has cast their inputs; each projection
(`mm`/`addmm`, one per nn.Linear) and attention product must take tensors of the autocast dtype, and
fp32 training must take fp32 ones. Supersedes the loss-only check in tests/train/test_trainer.py
(`test_autocast_precisions_follow_fp32`, which also passes when autocast does nothing): the losses are
compared here too, and must differ from fp32's while staying close.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lmforge.train.batches import CLMBatches, clm_val_set
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig, Trainer
from tiny import tiny_model

PROJECTIONS = {"mm", "addmm"}  # what F.linear becomes on CPU (with and without a bias)
ATTENTION = {"bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


pytestmark = pytest.mark.usefixtures("low_precision_as_asked")


class MatmulRecorder(TorchDispatchMode):
    """Per forward call: (op name, dtypes of its floating-point tensor inputs) for every matmul-like op."""

    def __init__(self):
        super().__init__()
        self.calls: list[list[tuple[str, tuple[torch.dtype, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in PROJECTIONS | ATTENTION:
            floats = tuple(a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
            self.calls[-1].append((name, floats))
        return func(*args, **(kwargs or {}))


def record_forwards(model: nn.Module) -> MatmulRecorder:
    """Enter the recorder for the duration of every forward of `model` (not the backward, not the
    optimizer step, not the trainer's peak-FLOP/s probe)."""
    recorder = MatmulRecorder()

    def enter(module, args):
        recorder.calls.append([])
        recorder.__enter__()

    def leave(module, args, output):
        recorder.__exit__(None, None, None)

    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave)
    return recorder


def train(tmp_path, precision: str, attn_backend: str, record: bool):
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 259, 3000))
    val = clm_val_set(tokens[:200], 2, 16, 2)
    model = tiny_model("llama", attn_backend=attn_backend)
    recorder = record_forwards(model) if record else None
    cfg = TrainConfig(
        steps=3,
        batch_size=2,
        seq_len=16,
        lr=3e-3,
        warmup_steps=0,
        eval_every=3,
        precision=precision,
        progress=False,
        tensorboard=False,
        log_every=1,
    )
    run = tmp_path / f"{precision}-{attn_backend}"
    trainer = Trainer(model, cfg, CLMBatches(tokens, 2, 16, seed=1), run, val)
    assert trainer.scaler.is_enabled() == (precision == "fp16")  # fp16 needs loss scaling
    trainer.fit()
    losses = [r["loss"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"]
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    return recorder, losses, n_linear, len(val.batches)


@pytest.mark.parametrize("attn_backend", ["sdpa", "math"])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_trainer_autocast_runs_every_matmul_in_the_chosen_precision(tmp_path, precision, attn_backend):
    recorder, losses, n_linear, n_val = train(tmp_path, precision, attn_backend, record=True)
    want = DTYPES[precision]
    # 3 training forwards, then validation after step 3 (and the baseline at step 0) over 2 batches
    assert len(recorder.calls) == 3 + 2 * n_val
    for ops in recorder.calls:
        projections = [dtypes for name, dtypes in ops if name in PROJECTIONS]
        attention = [dtypes for name, dtypes in ops if name in ATTENTION]
        assert len(projections) == n_linear  # every nn.Linear, the LM head included
        assert attention, "no attention product was recorded"
        for dtypes in projections + attention:
            assert dtypes and set(dtypes) == {want}, f"{ops} under {precision}"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_losses_track_fp32_but_are_not_fp32s(tmp_path, precision):
    """Same init, same batches: the low-precision run follows fp32 within 0.05 nats, and is not fp32 in
    disguise (its losses are not identical)."""
    _, low, _, _ = train(tmp_path, precision, "sdpa", record=False)
    _, full, _, _ = train(tmp_path, "fp32", "sdpa", record=False)
    np.testing.assert_allclose(low, full, atol=0.05)
    assert low != full
