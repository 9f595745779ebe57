"""`lmforge.load` over `lmforge.io.load.read_model`: the dtype a caller asks for is the dtype of every
weight, from a checkpoint directory and from a GGUF file, and `LM.info()` reports it."""

from __future__ import annotations

import pytest
import torch
from tiny_gguf import TINY_LLAMA, f32_gguf, tiny_llama_tensors

import lmforge
from lmforge.errors import LMForgeError
from lmforge.io.load import DTYPES, read_model
from lmforge.lm import LM
from tiny import tiny_model

IDS = [1, 5, 9, 2, 7, 3]


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    LM(tiny_model("llama")).save(path)
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    path.write_bytes(f32_gguf(TINY_LLAMA, tiny_llama_tensors()))
    return path


@pytest.mark.parametrize("dtype", ["bf16", "bfloat16", torch.bfloat16])
@pytest.mark.parametrize("source", ["checkpoint_dir", "gguf_file"])
def test_bf16_load(request, source, dtype):
    path = request.getfixturevalue(source)
    lm = lmforge.load(path, dtype=dtype, device="cpu")
    assert lm.info()["dtype"] == "bfloat16"
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    reference = lmforge.load(path, dtype="float32", device="cpu")
    assert reference.info()["dtype"] == "float32"
    ours, theirs = lm.model.state_dict(), reference.model.state_dict()
    for name, weight in theirs.items():  # the float32 weights, rounded once to bf16
        assert torch.equal(ours[name], weight.to(torch.bfloat16)), name
    assert torch.isfinite(lm.logits(IDS)).all()


def test_cpu_default_is_float32(checkpoint_dir):
    loaded = read_model(checkpoint_dir, device="cpu")
    assert next(loaded.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("probe", ["fp32", "bf16"])
def test_auto_dtype_follows_the_precision_probe(checkpoint_dir, monkeypatch, probe):
    from lmforge import hardware

    def choose(requested, device="cpu", fallback=True):
        assert requested == "auto"
        return hardware.PrecisionChoice(precision=probe, requested="auto", reason="test", peak_flops=1.0)

    monkeypatch.setattr(hardware, "choose_precision", choose)
    loaded = read_model(checkpoint_dir, dtype="auto", device="cpu")
    assert next(loaded.model.parameters()).dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[probe]


def test_unknown_dtype_lists_the_names(checkpoint_dir):
    with pytest.raises(LMForgeError, match="unknown dtype 'bf15'; use auto or one of " + ", ".join(DTYPES)):
        lmforge.load(checkpoint_dir, dtype="bf15", device="cpu")
