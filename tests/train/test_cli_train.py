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


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a CLI subprocess; a failure shows the end of its stderr (torchrun's workers' tracebacks)."""
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd[:6]} exited {done.returncode}:\n{done.stderr[-6000:]}"
    return done


def _env() -> dict[str, str]:
    src = str(Path(lmforge.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}


def _losses(run_dir: Path) -> list[tuple[str, int, float]]:
    records = read_log(run_dir / "log.jsonl")
    return [(r["kind"], r["step"], r["loss"]) for r in records if r["kind"] in ("train", "val")]


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


# the resume runs: one set of options, passed as flags (CLI) or keywords (API)
RESUME_RUN = dict(
    n_layer=2,
    n_head=2,
    d_model=32,
    seq_len=32,
    batch_size=4,
    steps=30,
    save_every=5,
    eval_every=10,
    eval_batches=2,
    warmup_steps=3,
    dropout=0.1,
    progress=False,
    tensorboard=False,
)
API_SCRIPT = (
    "import json, sys, lmforge; lmforge.pretrain(sys.argv[1], out=sys.argv[2], **json.loads(sys.argv[3]))"
)


def _flags(options: dict) -> list[str]:
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def _cli_cmd(shards: Path, out: Path, options: dict) -> list[str]:
    return [sys.executable, "-m", "lmforge.cli", "pretrain", str(shards), "--out", str(out), *_flags(options)]


def _api_cmd(shards: Path, out: Path, options: dict) -> list[str]:
    return [sys.executable, "-c", API_SCRIPT, str(shards), str(out), json.dumps(options)]


def _kill_after_first_checkpoint(cmd: list[str], out: Path) -> None:
    """Start a 30-step run and SIGKILL it once its step-5 checkpoint is complete."""
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-000005").is_dir() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = [r["step"] for r in read_log(out / "log.jsonl") if r["kind"] == "train"]
    assert max(done) < 30 and not (out / "final").exists()


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory) -> Path:
    """The 30-step run, never interrupted (through the CLI)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(_cli_cmd(shards, out, RESUME_RUN))
    assert len(_losses(out)) == 30 + 4  # 30 train records, validation at 0, 10, 20, 30
    return out


def test_killed_run_resumes_with_identical_losses(shards, tmp_path, uninterrupted):
    """SIGKILL a run right after a checkpoint, resume it, and compare its JSONL log with a run that was
    never interrupted: every train and validation loss is equal (exactly: same ops, same order)."""
    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(_cli_cmd(shards, killed, RESUME_RUN), killed)
    resume = _cli_cmd(shards, killed, {**RESUME_RUN, "resume": True})
    _run(resume)
    assert _losses(killed) == _losses(uninterrupted)


def test_killed_api_run_resumes_through_the_api(shards, tmp_path, uninterrupted):
    """The same through `lmforge.pretrain`: killed in a subprocess, resumed in this process with
    `resume=True`; the log equals the CLI's uninterrupted run (the CLI passes exactly these options)."""
    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(_api_cmd(shards, killed, RESUME_RUN), killed)
    result = lmforge.pretrain(shards, out=killed, resume=True, **RESUME_RUN)
    assert result.steps == 30 and result.final.is_dir()
    assert _losses(killed) == _losses(uninterrupted)


def _torchrun() -> str:
    return shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


DDP_RUN = dict(
    n_layer=2,
    n_head=2,
    d_model=32,
    seq_len=32,
    batch_size=4,
    steps=6,
    eval_every=3,
    eval_batches=2,
    warmup_steps=2,
    progress=False,
    tensorboard=False,
)


def _check_ddp_matches_accumulation(ddp_dir: Path, acc_dir: Path) -> None:
    """2 processes with micro-batch 4 equal 1 process with grad_accum 2: both see the same 8 rows per
    step and average the same gradients. Tolerance: 1e-5 relative (the all-reduce sums in another
    order than accumulation does)."""
    ddp, acc = _losses(ddp_dir), _losses(acc_dir)
    assert [r[:2] for r in ddp] == [r[:2] for r in acc] and len(ddp) == 6 + 3
    for (_, _, a), (_, _, b) in zip(ddp, acc):
        assert a == pytest.approx(b, rel=1e-5)
    run_config = json.loads((ddp_dir / "run_config.json").read_text())
    assert run_config["world_size"] == 2
    # only rank 0 wrote: one log, one set of checkpoints
    assert len(list((ddp_dir / "checkpoints").iterdir())) == 1


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_ddp_two_processes_match_one_process_with_accumulation(shards, tmp_path, strategy):
    """`torchrun --nproc-per-node 2 -m lmforge.cli pretrain` against `lmforge pretrain --grad-accum 2`."""
    options = {**DDP_RUN, "distributed": strategy}
    ddp_cmd = [_torchrun(), "--nproc-per-node", "2", *_cli_cmd(shards, tmp_path / "ddp", options)[1:]]
    _run(ddp_cmd)
    acc_cmd = _cli_cmd(shards, tmp_path / "acc", {**options, "grad_accum": 2})
    _run(acc_cmd)
    _check_ddp_matches_accumulation(tmp_path / "ddp", tmp_path / "acc")


@pytest.mark.slow  # the CLI test above covers DDP in the default suite
def test_ddp_through_the_api(shards, tmp_path):
    """A script calling `lmforge.pretrain` under torchrun against `lmforge.pretrain(grad_accum=2)` here;
    every rank gets a result, rank 0's says so."""
    script = tmp_path / "train.py"
    script.write_text(
        "import json, sys\nimport lmforge\n"
        "result = lmforge.pretrain(sys.argv[1], out=sys.argv[2], **json.loads(sys.argv[3]))\n"
        "print(json.dumps({'rank': result.rank, 'steps': result.steps}))\n"
    )
    cmd = [
        _torchrun(),
        "--nproc-per-node",
        "2",
        str(script),
        str(shards),
        str(tmp_path / "ddp"),
        json.dumps(DDP_RUN),
    ]
    done = _run(cmd)
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    reports.sort(key=lambda r: r["rank"])
    assert reports == [{"rank": 0, "steps": 6}, {"rank": 1, "steps": 6}]
    result = lmforge.pretrain(shards, out=tmp_path / "acc", grad_accum=2, **DDP_RUN)
    assert result.rank == 0 and result.steps == 6
    _check_ddp_matches_accumulation(tmp_path / "ddp", tmp_path / "acc")


def _recorder(monkeypatch, name: str, result) -> list:
    """Replace `lmforge.<name>` by a function that records its arguments and returns `result`."""
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    monkeypatch.setattr(lmforge, name, record)
    return calls


def _result(tmp_path, cls=lmforge.TrainResult, **extra):
    return cls(tmp_path, tmp_path / "final", 0, 0.0, 0.0, {}, 0.0, total_s=0.0, **extra)


def test_typed_values_equal_to_the_defaults_reach_the_api(monkeypatch, tmp_path):
    """The CLI passes exactly the options typed (on the command line or in --config), even those equal
    to the library's default, and nothing else: each command's API function sees them."""
    calls = _recorder(monkeypatch, "pretrain", _result(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.001\nobjective: clm\n")
    run(["pretrain", "d", "--out", "o", "--steps", "1000", "--seq-len", "256", "--config", str(config)])
    assert calls == [(("d",), {"out": "o", "steps": 1000, "seq_len": 256, "lr": 0.001, "objective": "clm"})]

    calls = _recorder(monkeypatch, "finetune", _result(tmp_path))
    run(
        ["finetune", "--model", "m", "--out", "o", "--text", "t.txt", "--batch-size", "4", "--lora-rank", "8"]
    )
    assert calls == [(("m",), {"out": "o", "text": ["t.txt"], "batch_size": 4, "lora_rank": 8})]

    calls = _recorder(monkeypatch, "quickstart", _result(tmp_path, lmforge.QuickstartResult))
    run(["quickstart", "--minutes", "4", "--seq-len", "128", "--no-progress"])
    assert calls == [((), {"minutes": 4.0, "seq_len": 128, "progress": False})]

    calls = _recorder(monkeypatch, "merge_lora", tmp_path / "merged")
    run(["lora", "merge", "--model", "m", "--adapter", "a", "--out", "o"])
    assert calls == [(("m", "a", "o"), {})]


def test_training_commands_are_thin():
    """cli/train.py imports only the public API and keeps every function under 40 lines."""
    import ast
    import inspect

    import lmforge.cli.train as module

    tree = ast.parse(inspect.getsource(module))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "lmforge", "lmforge.errors", "lmforge.options"}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno < 40, node.name


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
