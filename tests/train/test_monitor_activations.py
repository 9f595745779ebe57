"""Activation and attention-entropy statistics on request (`monitor_activations` N): every N steps the
training record carries act_rms / act_max per layer group and attn_entropy per block, equal to a direct
computation on the step's batch, mirrored to TensorBoard and drawn in plot.png; off, nothing runs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmforge.train import monitor
from lmforge.train.batches import CLMBatches
from lmforge.train.logging import read_log
from lmforge.train.trainer import TrainConfig, Trainer
from tiny import tiny_model

QUIET = dict(batch_size=2, seq_len=16, warmup_steps=0, progress=False, tensorboard=False, precision="fp32")


def _tokens(n=2000, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 320, n))


def direct_statistics(model, ids: torch.Tensor) -> dict[str, float]:
    """The statistics written out from their definitions: the blocks run one by one, attention weights
    softmax(q kᵀ/√d) under the causal mask recomputed per head in float64, entropy -Σ p ln p."""
    stats = {}

    def record(group, h):
        h = h.double().numpy()
        stats[f"act_rms/{group}"] = math.sqrt((h**2).mean())
        stats[f"act_max/{group}"] = np.abs(h).max()

    c = model.config
    B, T = ids.shape
    with torch.no_grad():
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(T))
        record("embed", x)
        for i, block in enumerate(model.blocks):
            q, k, _ = block.attn.qkv(block.norm1(x)).double().split(c.d_model, dim=-1)
            entropies = []
            for b in range(B):
                for h in range(c.n_head):
                    cols = slice(h * c.head_dim, (h + 1) * c.head_dim)
                    scores = q[b, :, cols].numpy() @ k[b, :, cols].numpy().T / math.sqrt(c.head_dim)
                    scores[np.triu_indices(T, 1)] = -np.inf
                    p = np.exp(scores - scores.max(-1, keepdims=True))
                    p /= p.sum(-1, keepdims=True)
                    logp = np.log(np.where(p > 0, p, 1.0))
                    entropies.extend(-(p * logp).sum(-1))
            stats[f"attn_entropy/block.{i}"] = float(np.mean(entropies))
            x = block(x, None, None)
            record(f"block.{i}", x)
        record("head", model.norm(x))
    return stats


def test_statistics_are_logged_and_equal_a_direct_computation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tiny_model("gpt2", vocab_size=320)
    initial = copy.deepcopy(model)
    data = CLMBatches(_tokens(), 2, 16)
    cfg = TrainConfig(steps=4, monitor_activations=2, lr=1e-2, **{**QUIET, "tensorboard": True})
    Trainer(model, cfg, data, tmp_path / "run").fit()
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train if "act_rms/embed" in r] == [2, 4]
    # step 2 measured the weights after one update: replay that update on the copy, with its own
    # Trainer (same seed, same data), then compute the statistics directly on step 2's batch
    Trainer(initial, TrainConfig(steps=1, lr=1e-2, **QUIET), data, tmp_path / "replay").fit()
    want = direct_statistics(initial.eval(), data.batch(1)["input_ids"])
    (step2,) = [r for r in train if r["step"] == 2]
    got = {k: v for k, v in step2.items() if k.startswith(("act_", "attn_entropy"))}
    assert set(got) == set(want)
    for key in want:
        assert math.isclose(got[key], want[key], rel_tol=1e-4), key
    assert 0 < got["attn_entropy/block.0"] < math.log(16)  # between one key and uniform over 16
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    board = [e.value for e in events.Scalars("train/attn_entropy/block.1")]
    np.testing.assert_allclose(
        board, [r["attn_entropy/block.1"] for r in train if "act_rms/embed" in r], rtol=1e-6
    )
    assert (tmp_path / "run" / "plot.png").stat().st_size > 0


def test_off_hooks_nothing_and_runs_nothing(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("activation statistics ran while off")

    monkeypatch.setattr(monitor, "ActivationStats", refuse)
    model = tiny_model("gpt2", vocab_size=320)
    Trainer(model, TrainConfig(steps=2, **QUIET), CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert train and not any(k.startswith(("act_", "attn_entropy")) for r in train for k in r)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "fields", [{}, {"performer_features": 16}, {"position": "alibi"}, {"sliding_window": 4}]
)
def test_entropy_of_every_variant_is_that_of_its_attention_weights(fields):
    """For each variant the entropy comes from weights whose rows sum to 1 and which reproduce the
    layer's output: weights @ v through the output projection equals the attention layer."""
    model = tiny_model("llama", vocab_size=64, **fields)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    seen = {}

    def keep(module, args):
        seen["args"] = args

    handle = model.blocks[1].attn.register_forward_pre_hook(keep)
    with torch.no_grad():
        model(ids)
    handle.remove()
    attn = model.blocks[1].attn
    x, rope, mask = seen["args"][:3]
    p = attn.probs(x, rope, mask)
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    with torch.no_grad():
        _, _, v = attn.project(x, rope)
        v = v.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
        y = (p @ v).transpose(1, 2).reshape(2, 12, -1)
        torch.testing.assert_close(attn.proj(y), attn(x, rope, mask), atol=1e-5, rtol=1e-4)
    stats = monitor.ActivationStats(model).measure(model, ids)
    assert 0 < stats["attn_entropy/block.1"] < math.log(12)


def test_turning_it_on_leaves_the_trajectory_and_resume_alone(tmp_path):
    """With dropout on, a run measured every step has the losses of a run never measured, and a run
    resumed with the statistics turned on continues (the setting may change between the two)."""
    data = CLMBatches(_tokens(), 2, 16)
    runs = {}
    for every in (0, 1):
        cfg = TrainConfig(steps=4, monitor_activations=every, dropout=0.1, save_every=2, **QUIET)
        torch.manual_seed(0)  # dropout draws from the global generator (the Trainer leaves it alone)
        Trainer(tiny_model("gpt2", vocab_size=320), cfg, data, tmp_path / f"run{every}").fit()
        runs[every] = [
            r["loss"] for r in read_log(tmp_path / f"run{every}" / "log.jsonl") if r["kind"] == "train"
        ]
    assert runs[0] == runs[1]
    cfg = TrainConfig(steps=6, monitor_activations=1, dropout=0.1, save_every=2, resume=True, **QUIET)
    Trainer(tiny_model("gpt2", vocab_size=320), cfg, data, tmp_path / "run0").fit()
    train = [r for r in read_log(tmp_path / "run0" / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train if "act_rms/head" in r] == [5, 6]


def test_measured_only_on_steps_that_write_a_record(tmp_path, monkeypatch):
    measured = []
    real = monitor.ActivationStats.measure

    def measure(self, model, input_ids):
        measured.append(len(measured))
        return real(self, model, input_ids)

    monkeypatch.setattr(monitor.ActivationStats, "measure", measure)
    cfg = TrainConfig(steps=12, monitor_activations=2, log_every=3, **QUIET)
    Trainer(tiny_model("gpt2", vocab_size=320), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train if "act_rms/head" in r] == [6, 12] and len(measured) == 2
