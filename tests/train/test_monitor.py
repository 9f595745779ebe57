"""The Trainer's monitors: per-group gradient norms and update/weight ratios (checked against direct
computations), loss-spike and overfitting warnings, and NaN/Inf handling in a deliberately exploding
run (`on_nan` stop names the step and the last good checkpoint; skip rolls back and carries on); all in
log.jsonl, TensorBoard and plot.png."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.train import checkpoint as ckpt
from lmforge.train.batches import CLMBatches, clm_val_set
from lmforge.train.logging import read_log
from lmforge.train.monitor import Groups, LossWatch, layer_group
from lmforge.train.trainer import TrainConfig, Trainer, loss_fn
from tiny import tiny_model

QUIET = dict(batch_size=2, seq_len=16, warmup_steps=0, progress=False, tensorboard=False, precision="fp32")


def _tokens(n=2000, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 320, n))


def exploding(bad_calls: set[int]):
    """A tiny model whose logits turn NaN on the given training forward calls: a deliberate explosion."""
    model = tiny_model("gpt2", vocab_size=320)
    calls = [0]

    def hook(module, args, logits):
        if module.training:
            calls[0] += 1
            if calls[0] in bad_calls:
                return logits * float("nan")
        return logits

    model.register_forward_hook(hook)
    return model


def test_group_norms_and_update_ratios_match_direct_computation():
    model = tiny_model("gpt2", vocab_size=320).train()
    assert [layer_group(n) for n in ("tok_emb.weight", "blocks.1.attn.qkv.weight", "norm.weight")] == [
        "embed",
        "block.1",
        "head",
    ]
    batch = CLMBatches(_tokens(), 2, 16).batch(0)
    loss_fn(model(batch["input_ids"]), batch["labels"]).backward()
    groups = Groups(model)
    assert groups.names == ["embed", "block.0", "block.1", "head"]
    norms = groups.grad_norms()
    for group in groups.names:
        grads = [p.grad.reshape(-1) for n, p in model.named_parameters() if layer_group(n) == group]
        assert math.isclose(norms[group], float(torch.cat(grads).norm()), rel_tol=1e-5)
    total = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
    assert math.isclose(math.sqrt(sum(v * v for v in norms.values())), total, rel_tol=1e-5)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshot = groups.snapshot()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    ratios = groups.update_ratios(snapshot)
    for group in groups.names:
        names = [n for n in before if layer_group(n) == group]
        delta = torch.cat([(dict(model.named_parameters())[n] - before[n]).reshape(-1) for n in names])
        weight = torch.cat([before[n].reshape(-1) for n in names])
        assert math.isclose(ratios[group], float(delta.detach().norm() / weight.norm()), rel_tol=1e-4)


def test_logs_carry_the_monitors_to_tensorboard_and_the_plot(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(steps=4, update_ratio_every=2, **{**QUIET, "tensorboard": True})
    Trainer(tiny_model("gpt2", vocab_size=320), cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert all(r["grad_norm/block.0"] > 0 and r["grad_norm/embed"] > 0 for r in train)
    assert [r["step"] for r in train if "update_ratio/total" in r] == [2, 4]
    assert all(0 < r["update_ratio/block.1"] < 1 for r in train if "update_ratio/block.1" in r)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    board = [e.value for e in events.Scalars("train/grad_norm/block.0")]
    np.testing.assert_allclose(board, [r["grad_norm/block.0"] for r in train], rtol=1e-6)
    assert (tmp_path / "run" / "plot.png").stat().st_size > 0


def test_a_nan_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(steps=8, save_every=2, **QUIET)
    model = exploding({5})
    with pytest.raises(
        LMForgeError, match=r"the loss became nan .* at step 5; last good checkpoint: .*step-000004"
    ):
        Trainer(model, cfg, CLMBatches(_tokens(), 2, 16), run).fit()
    (alert,) = [r for r in read_log(run / "log.jsonl") if r["kind"] == "alert"]
    assert alert["alert"] == "non_finite" and alert["loss"] == "nan"
    assert [s for s, _ in ckpt.step_dirs(run)] == [2, 4]


def test_skip_rolls_back_to_the_last_good_checkpoint_and_carries_on(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = TrainConfig(steps=8, save_every=2, keep_last=10, on_nan="skip", **QUIET)
    rolled_back = {}
    real_load = ckpt.load_model_weights

    def load(model, path):
        real_load(model, path)
        rolled_back.update(path=path, state={k: v.clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(ckpt, "load_model_weights", load)
    result = Trainer(exploding({5}), cfg, CLMBatches(_tokens(), 2, 16), run).fit()
    assert result.steps == 8 and math.isfinite(result.train_loss)
    assert rolled_back["path"] == run / "checkpoints" / "step-000004"
    fresh = tiny_model("gpt2", vocab_size=320, seed=9)
    real_load(fresh, rolled_back["path"])
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(rolled_back["state"][name], value)
    records = read_log(run / "log.jsonl")
    (alert,) = [r for r in records if r["kind"] == "alert"]
    assert alert["step"] == 4 and "rolled back to" in alert["message"]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 6, 7, 8]  # step 5 skipped


def test_exploding_learning_rate_without_rollback_stops_after_repeated_skips(tmp_path):
    """NaN on every step from the 3rd on: skip cannot help, and says so after 3 tries."""
    cfg = TrainConfig(steps=20, on_nan="skip", **QUIET)
    model = exploding(set(range(3, 30)))
    with pytest.raises(LMForgeError, match="3 rollbacks in a row did not help"):
        Trainer(model, cfg, CLMBatches(_tokens(), 2, 16), tmp_path / "run").fit()


def test_a_loss_spike_is_flagged(tmp_path):
    """A periodic sequence learnt quickly, then one batch of random tokens: a spike, logged."""

    class Pattern:
        def batch(self, index):
            if index == 45:
                x = torch.from_numpy(np.random.default_rng(0).integers(0, 320, (2, 17)))
            else:
                x = (torch.arange(17) + index).remainder(16).repeat(2, 1)
            return {"input_ids": x[:, :-1], "labels": x[:, 1:]}

    cfg = TrainConfig(steps=47, lr=1e-2, **QUIET)
    Trainer(tiny_model("gpt2", vocab_size=320), cfg, Pattern(), tmp_path / "run").fit()
    alerts = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "alert"]
    assert [(a["alert"], a["step"]) for a in alerts] == [("loss_spike", 46)]


def test_overfitting_warning():
    watch = LossWatch(spike_factor=0)
    for train, val in [(3.0, 3.1), (2.5, 2.8), (2.0, 2.9)]:
        watch.train_step(train)
        message = watch.validation(val)
    assert message and "validation loss rose 2.8000 -> 2.9000" in message
    watch.train_step(2.2)  # training loss rising too: not overfitting
    assert watch.validation(3.0) is None


def test_overfitting_is_flagged_in_a_run_that_memorises(tmp_path):
    """64 training tokens memorised, validated on other text: validation loss rises as training falls."""
    train = _tokens(64, seed=1)
    val = clm_val_set(_tokens(400, seed=2), 2, 16, 4)
    cfg = TrainConfig(steps=60, lr=1e-2, eval_every=10, **QUIET)
    Trainer(tiny_model("gpt2", vocab_size=320), cfg, CLMBatches(train, 2, 16), tmp_path / "run", val).fit()
    alerts = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "alert"]
    assert alerts and {a["alert"] for a in alerts} == {"overfitting"}
