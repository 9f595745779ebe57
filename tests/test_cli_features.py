"""README features on the real SmolLM2 that had no test: `lmforge convert` (fp32 and `--dtype bfloat16`),
`lmforge info` (table and `--json-output`), `lmforge eval tasks`, and loading + generating in bf16.

Oracles: transformers reading the GGUF (the `hf_smollm2` fixture) and reading the converted directory;
`LM.info()`; the shipped task files themselves.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

import lmforge
from lmforge.cli import main

PROMPT = "1, 2, 3, 4, 5,"  # fp32's top-1 logit leads by > 3 at each of the 8 greedy steps


@pytest.fixture(scope="module")
def lm_bf16():
    """What the README shows: `lmforge.load("smollm2", dtype="bfloat16")`."""
    return lmforge.load("smollm2", dtype="bfloat16", device="cpu")


@pytest.fixture(scope="module")
def hf_bf16(hf_smollm2):
    """transformers' model from the GGUF, cast to bf16 (a copy: the shared fp32 fixture stays fp32)."""
    return copy.deepcopy(hf_smollm2[0]).to(torch.bfloat16)


def safetensors_dtypes(directory: Path) -> set[str]:
    """The dtypes named in the safetensors headers (8-byte length, then JSON) of a directory's files."""
    dtypes = set()
    for path in directory.glob("*.safetensors"):
        with path.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        dtypes |= {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    return dtypes


def hf_from_dir(directory: Path, dtype: torch.dtype):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype).eval()


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out)[0].float()


def test_convert_writes_bf16_safetensors_that_transformers_loads(tmp_path, capsys, lm_bf16, hf_bf16):
    out = tmp_path / "smollm2-bf16"
    assert main(["convert", "smollm2", str(out), "--dtype", "bfloat16"]) == 0
    assert str(out) in capsys.readouterr().out
    assert safetensors_dtypes(out) == {"BF16"}

    hf = hf_from_dir(out, torch.bfloat16)
    # the saved weights are exactly transformers' own GGUF weights rounded to bf16, under HF's names
    saved, reference = hf.state_dict(), hf_bf16.state_dict()
    assert saved.keys() == reference.keys()
    for name, tensor in saved.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, reference[name]), name
    ids = lm_bf16.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    torch.testing.assert_close(logits(hf, ids), logits(lm_bf16.model, ids), atol=0.05, rtol=0)


def test_convert_default_fp32_gives_transformers_our_logits(tmp_path, capsys, smollm2):
    out = tmp_path / "smollm2-hf"
    assert main(["convert", "smollm2", str(out)]) == 0
    capsys.readouterr()
    assert safetensors_dtypes(out) == {"F32"}
    ids = smollm2.tokenizer.encode("To be, or not to be, that is the question:")
    torch.testing.assert_close(
        logits(hf_from_dir(out, torch.float32), ids), logits(smollm2.model, ids), atol=1e-4, rtol=1e-4
    )


def test_info_table_and_json_match_lm_info(capsys, smollm2):
    facts = smollm2.info()
    assert main(["info", "smollm2", "--json-output"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(facts))
    assert printed["family"] == "llama" and printed["layers"] == 30 and printed["vocab_size"] == 49152
    assert printed["parameters"] == sum(p.numel() for p in smollm2.model.parameters())

    assert main(["info", "smollm2"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        key, _, value = line.partition("  ")
        rows[key] = value.strip()
    assert rows.keys() == facts.keys()
    assert rows["parameters"] == f"{facts['parameters']:,}"
    assert rows["context_length"] == f"{facts['context_length']:,}"
    assert rows["family"] == "llama" and rows["dtype"] == "float32"


def test_eval_tasks_lists_every_shipped_task(capsys):
    folder = Path(lmforge.__file__).parent / "tasks"
    shipped = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in folder.glob("*.yaml")}
    assert len(shipped) >= 5
    assert main(["eval", "tasks"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert sorted(line.split()[0] for line in lines) == sorted(shipped)
    for line in lines:
        task = shipped[line.split()[0]]
        assert task["type"] in line.split() and " ".join(task["description"].split()) in line


def test_bf16_load_generates_like_transformers_in_bf16(lm_bf16, hf_bf16, smollm2):
    assert {p.dtype for p in lm_bf16.model.parameters()} == {torch.bfloat16}
    assert lm_bf16.info()["dtype"] == "bfloat16"
    ids = lm_bf16.tokenizer.encode(PROMPT)
    ours = lm_bf16.generate(PROMPT, max_new_tokens=8)
    assert len(ours.token_ids) == 8
    with torch.no_grad():
        theirs = hf_bf16.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids) :]
    assert ours.token_ids == theirs.tolist()

    # and the same tokens as fp32, which the bf16 error cannot flip on this prompt: at every step the
    # fp32 top-1 leads the runner-up by more than twice the largest bf16-vs-fp32 logit difference
    full = ids + ours.token_ids
    l32, l16 = logits(smollm2.model, full), logits(lm_bf16.model, full)
    steps = slice(len(ids) - 1, len(full) - 1)
    top2 = l32[steps].topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    assert margin > 2 * (l16[steps] - l32[steps]).abs().max().item()
    fp32 = smollm2.generate(PROMPT, max_new_tokens=8)
    assert ours.token_ids == fp32.token_ids
    assert ours.text == fp32.text and ours.text.strip().startswith("6")
