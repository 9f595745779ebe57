"""`lmforge quickstart` on a user's own text: validation bits/byte over the whole validation text (every
byte once), the end of the text held out without --val-text, tokenizer and data made again when the
text, vocabulary or seed change, and one-line errors for unusable text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lmforge
from lmforge.cli import run
from lmforge.errors import LMForgeError
from lmforge.train.batches import IGNORE, whole_text_val_set
from lmforge.train.logging import read_log
from tiny import tiny_model

# the smallest recipe that still trains: 1.2 s of training, no samples
SMALL = dict(
    minutes=0.02, vocab_size=300, n_layer=1, n_head=2, d_model=32, seq_len=32, batch_size=4, samples=0
)


@pytest.fixture(scope="module")
def texts(tmp_path_factory, corpus_files):
    root = tmp_path_factory.mktemp("texts")
    play = corpus_files[0].read_text(encoding="utf-8")
    (root / "train.txt").write_text(play[:40_000], encoding="utf-8")
    (root / "val.txt").write_text(play[40_000:46_000] + " café — ☃", encoding="utf-8")  # multi-byte too
    (root / "other.txt").write_text(play[50_000:90_000], encoding="utf-8")
    return root


def test_whole_text_val_set_scores_every_byte_once(tiny_tok):
    text = "To be, or not to be: that is the question. Café ☃ — naïve\n" * 7
    ids = tiny_tok.encode(text)
    token_bytes = np.array([len(tiny_tok.token_bytes(i)) for i in range(tiny_tok.vocab_size)])
    val = whole_text_val_set(ids, batch_size=3, seq_len=16, token_bytes=token_bytes, context_id=0)
    labels = torch.cat([b["labels"].reshape(-1) for b in val.batches])
    assert labels[labels != IGNORE].tolist() == ids  # every token a target exactly once, in order
    assert sum(val.num_bytes) == len(text.encode("utf-8"))
    # the Trainer's bits/byte over this set equals a direct computation over the whole stream
    model = tiny_model("gpt2", vocab_size=tiny_tok.vocab_size, max_seq_len=16)
    nats = 0.0
    with torch.no_grad():
        for b in val.batches:
            logits = model(b["input_ids"])
            nats += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), reduction="sum"
            )
    from lmforge.train.trainer import TrainConfig, Trainer

    trainer = Trainer(model, TrainConfig(seq_len=16, precision="fp32", progress=False), None, "unused", val)
    got = trainer.evaluate()
    assert math.isclose(got["bits_per_byte"], float(nats) / math.log(2) / len(text.encode()), rel_tol=1e-5)


def test_quickstart_on_a_users_text_scores_the_whole_val_text(tmp_path, texts):
    out = tmp_path / "qs"
    result = lmforge.quickstart(
        text=[str(texts / "train.txt")], val_text=texts / "val.txt", out=out, progress=False, **SMALL
    )
    records = read_log(out / "run-1" / "log.jsonl")
    (full,) = [r for r in records if r["kind"] == "val_full"]
    assert full["bytes"] == len((texts / "val.txt").read_bytes())
    assert result.val["bits_per_byte"] == full["bits_per_byte"] and 0 < full["bits_per_byte"] < 9
    (precision,) = [r for r in records if r["kind"] == "precision"]
    assert precision["precision"] == result.precision and precision["reason"]
    assert lmforge.load(out / "run-1" / "final", device="cpu").tokenizer.vocab_size == 300
    stamps = {
        p.name: p.stat().st_mtime_ns
        for p in (out / "tokenizer" / "tokenizer.json", out / "data" / "train.npy")
    }

    # the same text, vocabulary and seed: reused; another vocabulary or text: made again
    lmforge.quickstart(
        text=[str(texts / "train.txt")], val_text=texts / "val.txt", out=out, progress=False, **SMALL
    )
    assert (out / "run-2").is_dir()
    assert stamps == {
        p.name: p.stat().st_mtime_ns
        for p in (out / "tokenizer" / "tokenizer.json", out / "data" / "train.npy")
    }
    bigger = {**SMALL, "vocab_size": 320}
    lmforge.quickstart(
        text=[str(texts / "train.txt")], val_text=texts / "val.txt", out=out, progress=False, **bigger
    )
    assert lmforge.load(out / "run-3" / "final", device="cpu").tokenizer.vocab_size == 320
    before = np.load(out / "data" / "train.npy")
    lmforge.quickstart(
        text=[str(texts / "other.txt")], val_text=texts / "val.txt", out=out, progress=False, **bigger
    )
    assert not np.array_equal(np.load(out / "data" / "train.npy"), before)


def test_without_val_text_the_end_of_the_text_is_held_out(tmp_path, texts):
    out = tmp_path / "qs"
    lmforge.quickstart(
        text=[str(texts / "train.txt")], val_fraction=0.1, out=out, progress=False, seed=3, **SMALL
    )
    text = (texts / "train.txt").read_text(encoding="utf-8")
    held_out = text[int(len(text) * 0.9) :]
    (full,) = [r for r in read_log(out / "run-1" / "log.jsonl") if r["kind"] == "val_full"]
    assert full["bytes"] == len(held_out.encode("utf-8"))
    tok = lmforge.load(out / "run-1" / "final", device="cpu").tokenizer
    assert np.load(out / "data" / "val.npy").tolist() == tok.encode(held_out)


def test_unusable_text_is_a_one_line_error(tmp_path, texts):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 400)
    (tmp_path / "tiny.txt").write_text("ROMEO: hi\n")
    cases = [
        ("empty.txt", "is empty"),
        ("binary.bin", "looks binary"),
        ("latin1.txt", "is not UTF-8 text"),
        ("tiny.txt", "too little to train on"),
        ("missing.txt", "no such file"),
    ]
    for name, message in cases:
        with pytest.raises(LMForgeError, match=message) as info:
            lmforge.quickstart(text=[str(tmp_path / name)], out=tmp_path / "qs", progress=False, **SMALL)
        assert "\n" not in str(info.value)
    # a text too small for the context: the context named
    with pytest.raises(LMForgeError, match="seq-len"):
        lmforge.quickstart(
            text=[str(texts / "train.txt")],
            out=tmp_path / "qs2",
            progress=False,
            **{**SMALL, "seq_len": 100_000},
        )
    with pytest.raises(LMForgeError, match="is empty"):
        run(["quickstart", "--text", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "qs3")])


def test_the_budget_picks_the_recipe_and_given_options_win():
    from lmforge.train.config import LM_BUDGETS, LM_MINUTES, QuickstartConfig

    cfg = QuickstartConfig().for_budget()
    row = next(r for up_to, r in LM_BUDGETS if up_to >= LM_MINUTES)
    assert cfg.minutes == LM_MINUTES
    assert (cfg.preset, cfg.d_model, cfg.lr, cfg.optimizer) == (
        row["preset"],
        row["d_model"],
        row["lr"],
        "muon",
    )
    for minutes in (0.5, 2, 30):  # every budget has a row with every setting
        assert QuickstartConfig(minutes=minutes).for_budget().warmup_steps is not None
    # the budget picks the row: a short run takes more, smaller steps than the default 9 minutes
    assert (QuickstartConfig(minutes=2).for_budget().batch_size, cfg.batch_size) == (16, 32)
    mine = QuickstartConfig(
        minutes=1, lr=1e-3, optimizer="adamw", d_model=64, model_overrides={"position": "rope"}
    )
    mine = mine.for_budget()
    assert (mine.lr, mine.optimizer, mine.d_model) == (1e-3, "adamw", 64)
    assert mine.model_overrides["position"] == "rope" and mine.model_config(vocab_size=300).position == "rope"
    preset = QuickstartConfig(minutes=1, preset="gpt-nano").for_budget()
    assert preset.d_model is None and preset.model_config(vocab_size=300).d_model == 384  # the preset's own
    with pytest.raises(LMForgeError, match="lr must be positive"):
        QuickstartConfig(lr=0.0)
