"""The training commands end to end on prepared shards: pretrain (clm, mlm), YAML configs, bad input,
kill-and-resume in a subprocess, and 2-process DDP under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.cli import run
from lmforge.errors import LMForgeError
from lmforge.train.logging import read_log

TINY = ["--n-layer", "2", "--n-head", "2", "--d-model", "32", "--seq-len", "32", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-tensorboard"]


def _env() -> dict[str, str]:
    src = str(Path(lmforge.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}


def _losses(run_dir: Path) -> list[tuple[str, int, float]]:
    return [(r["kind"], r["step"], r["loss"]) for r in read_log(run_dir / "log.jsonl")]


def test_pretrain_writes_a_checkpoint_that_loads_here_and_in_transformers(shards, tmp_path):
    out = tmp_path / "run"
    summary = run(
        [
            "pretrain",
            str(shards),
            "--out",
            str(out),
            *TINY,
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--eval-batches",
            "2",
            "--warmup-steps",
            "1",
            *QUIET,
        ]
    )
    assert summary["steps"] == 4 and summary["val"]["bits_per_byte"] > 0
    vals = [r for r in read_log(out / "log.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [0, 2, 4]
    assert all(r["perplexity"] == pytest.approx(2.718281828459045 ** r["loss"]) for r in vals)
    lm = lmforge.load(out / "final", device="cpu")
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, lm.model(ids), rtol=1e-4, atol=1e-4)


def test_mlm_pretrain_and_yaml_config(shards, tmp_path):
    out = tmp_path / "mlm"
    config = tmp_path / "run.yaml"
    config.write_text(
        "objective: mlm\npreset: bert-tiny\nsteps: 3\nseq_len: 32\nbatch_size: 4\n"
        "eval_every: 0\neval_batches: 2\nlr: 0.001\nwarmup_steps: 0\nmodel_overrides: {n_layer: 1}\n"
    )
    summary = run(["pretrain", str(shards), "--out", str(out), "--config", str(config), *QUIET])
    assert summary["steps"] == 3 and "bits_per_byte" not in summary["val"]
    lm = lmforge.load(out / "final", device="cpu")
    assert lm.config.head == "mlm" and lm.config.n_layer == 1


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path, corpus_files):
    from .conftest import make_tokenizer

    other = tmp_path / "other_tok"
    other.mkdir()
    make_tokenizer(other, [corpus_files[0].read_text(encoding="utf-8")[:20_000]], vocab_size=300)
    with pytest.raises(LMForgeError, match="made with another tokenizer"):
        run(["pretrain", str(shards), "--out", str(tmp_path / "x"), "--tokenizer", str(other), *TINY, *QUIET])


def test_sequence_length_above_context_is_refused(shards, tmp_path):
    with pytest.raises(LMForgeError, match="--seq-len 512 exceeds the model's context of 256"):
        run(["pretrain", str(shards), "--out", str(tmp_path / "x"), "--seq-len", "512", *QUIET])


def _pretrain_cmd(shards: Path, out: Path, extra: list[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lmforge.cli",
        "pretrain",
        str(shards),
        "--out",
        str(out),
        *TINY,
        "--steps",
        "30",
        "--save-every",
        "5",
        "--eval-every",
        "10",
        "--eval-batches",
        "2",
        "--warmup-steps",
        "3",
        "--dropout",
        "0.1",
        *QUIET,
        *extra,
    ]


def test_killed_run_resumes_with_identical_losses(shards, tmp_path):
    """SIGKILL a run right after a checkpoint, resume it, and compare its JSONL log with a run that was
    never interrupted: every train and validation loss is equal (exactly: same ops, same order)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_pretrain_cmd(shards, full), env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen(_pretrain_cmd(shards, killed), env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-000005").is_dir() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = [r["step"] for r in read_log(killed / "log.jsonl") if r["kind"] == "train"]
    assert max(done) < 30 and not (killed / "final").exists()

    subprocess.run(_pretrain_cmd(shards, killed, ["--resume"]), env=_env(), check=True, capture_output=True)
    assert _losses(killed) == _losses(full)
    assert len(_losses(full)) == 30 + 4  # 30 train records, validation at 0, 10, 20, 30


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_ddp_two_processes_match_one_process_with_accumulation(shards, tmp_path, strategy):
    """torchrun with 2 CPU processes (gloo), micro-batch 4, equals 1 process with --grad-accum 2: both
    see the same 8 rows per step and average the same gradients. Tolerance: 1e-5 relative (the
    all-reduce sums in another order than accumulation does)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    common = [*TINY, *"--steps 6 --eval-every 3 --eval-batches 2 --warmup-steps 2".split(), *QUIET]  # noqa: SIM905
    ddp_cmd = [torchrun, "--nproc-per-node", "2", "-m", "lmforge.cli", "pretrain", str(shards)]
    ddp_cmd += ["--out", str(tmp_path / "ddp"), "--distributed", strategy, *common]
    subprocess.run(ddp_cmd, env=_env(), check=True, capture_output=True)
    acc_cmd = [sys.executable, "-m", "lmforge.cli", "pretrain", str(shards), "--out", str(tmp_path / "acc")]
    subprocess.run([*acc_cmd, "--grad-accum", "2", *common], env=_env(), check=True, capture_output=True)
    ddp, acc = _losses(tmp_path / "ddp"), _losses(tmp_path / "acc")
    assert [r[:2] for r in ddp] == [r[:2] for r in acc] and len(ddp) == 6 + 3
    for (_, _, a), (_, _, b) in zip(ddp, acc):
        assert a == pytest.approx(b, rel=1e-5)
    run_config = json.loads((tmp_path / "ddp" / "run_config.json").read_text())
    assert run_config["world_size"] == 2
    # only rank 0 wrote: one log, one set of checkpoints
    assert len(list((tmp_path / "ddp" / "checkpoints").iterdir())) == 1


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    """The whole quickstart (BPE on Shakespeare, prepare, pretrain, bits-per-byte, samples), cut short."""
    result = run(
        [
            "quickstart",
            "--out",
            str(tmp_path / "qs"),
            "--minutes",
            "0.2",
            "--vocab-size",
            "512",
            "--n-layer",
            "1",
            "--d-model",
            "64",
            "--seq-len",
            "64",
            "--batch-size",
            "8",
            "--samples",
            "1",
            "--max-new-tokens",
            "16",
        ]
    )
    assert 0 < result["val"]["bits_per_byte"] < 8
    assert result["samples"][0].startswith("ROMEO:")
    assert lmforge.load(tmp_path / "qs" / "run-1" / "final", device="cpu").tokenizer.vocab_size == 512
