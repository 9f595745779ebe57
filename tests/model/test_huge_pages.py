"""CPU weights in huge pages (lmforge/model/huge_pages.py): `lmforge.load` reads a checkpoint into an
arena and `place` moves a model built in memory. The model must compute, save, copy, tie and train
exactly as before; where the kernel offers transparent huge pages, /proc/self/smaps must show the
weights' mapping backed by them."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge import hardware
from lmforge.lm import LM
from lmforge.model import huge_pages
from tiny import tiny_model

VOCAB = 12000  # untied, the embedding and the head are 1.5 MB each: together over the arena's 2 MiB floor


def _mapping(ptr: int) -> dict[str, int] | None:
    """The /proc/self/smaps record (its kB fields) of the mapping that holds address `ptr`."""
    record, inside = {}, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            if inside:
                return record
            inside = int(span[1], 16) <= ptr < int(span[2], 16)
            record = {}
        elif inside and line.endswith(" kB"):
            key, value = line.split(":")
            record[key] = int(value.split()[0])
    return record if inside else None


def _tensors(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())


def _model(family: str):
    return tiny_model(family, vocab_size=VOCAB, tie_embeddings=False)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_place_moves_every_tensor_and_changes_nothing_else(family):
    model = _model(family)
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        before = model(tokens)
    old = {name: t.clone() for name, t in _tensors(model).items()}
    old_ptrs = {t.data_ptr() for t in _tensors(model).values()}

    moved = huge_pages.place(model)

    if not huge_pages.available():
        assert moved == 0
        return
    assert moved >= sum(t.numel() * t.element_size() for t in old.values())
    after = _tensors(model)
    assert {t.data_ptr() for t in after.values()}.isdisjoint(old_ptrs)
    for name, tensor in after.items():
        assert torch.equal(tensor, old[name]), name
        assert tensor.data_ptr() % huge_pages.ALIGN == 0, name
    # each tensor keeps a storage of its own (safetensors refuses tensors that share one)
    storages = [t.untyped_storage().data_ptr() for t in after.values() if t.numel()]
    assert len(set(storages)) == len(storages)
    with torch.no_grad():
        assert torch.equal(model(tokens), before)


def test_tied_weights_stay_tied_and_the_model_saves_loads_copies_and_trains(tmp_path):
    model = tiny_model("llama", vocab_size=VOCAB * 2)  # tied embeddings: 3 MB in one tensor
    huge_pages.place(model)
    assert model.lm_head.weight is model.tok_emb.weight
    tokens = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        expected = model(tokens)

    lm = LM(model)
    lm.save(tmp_path / "saved")
    reloaded = lmforge.load(tmp_path / "saved")
    with torch.no_grad():
        assert torch.equal(reloaded.model(tokens), expected)
        assert torch.equal(copy.deepcopy(model)(tokens), expected)

    # the arena's tensors take in-place optimizer updates like any others
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(tokens).logsumexp(-1).mean().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.equal(model(tokens), expected)
    assert model.lm_head.weight is model.tok_emb.weight


@pytest.mark.skipif(not huge_pages.available(), reason="this kernel offers no transparent huge pages")
def test_load_reads_weights_into_huge_pages(tmp_path):
    LM(_model("llama")).save(tmp_path / "saved")
    lm = lmforge.load(tmp_path / "saved")
    weight = lm.model.tok_emb.weight
    mapping = _mapping(weight.data_ptr())
    assert mapping is not None
    # the embedding's 1.5 MB sit in a mapping the kernel backs with 2 MiB pages (at least one of them)
    assert mapping["AnonHugePages"] >= 2048, mapping
    assert huge_pages.backed_kb(weight) == mapping["AnonHugePages"]


@pytest.mark.skipif(not huge_pages.available(), reason="this kernel offers no transparent huge pages")
def test_a_quantized_checkpoint_loads_its_kernel_layout_into_huge_pages(tmp_path, monkeypatch):
    """Int4 modules repack their codes for the kernel when loaded: the repacked codes are what moves."""
    model = tiny_model("llama", vocab_size=VOCAB, d_model=256, n_head=4, n_kv_head=2, d_mlp=1024)
    lmforge.quantize(LM(model), scheme="int4", group_size=32, out=tmp_path / "q", aot=False, report=False)
    lm = lmforge.load(tmp_path / "q", compile="eager")
    layer = lm.model.blocks[0].mlp.fc
    assert type(layer).__name__ == "Int4Linear"
    for tensor in (layer.codes, layer.scale_zero, *lm.model.parameters()):
        assert huge_pages.backed_kb(tensor) >= 2048
    tokens = torch.randint(0, VOCAB, (1, 6))
    monkeypatch.setenv("LMFORGE_HUGE_PAGES", "0")
    plain = lmforge.load(tmp_path / "q", compile="eager")
    with torch.no_grad():
        assert torch.equal(lm.model(tokens), plain.model(tokens))


def test_huge_pages_can_be_turned_off(tmp_path, monkeypatch):
    LM(_model("llama")).save(tmp_path / "saved")
    monkeypatch.setenv("LMFORGE_HUGE_PAGES", "0")
    assert not huge_pages.available()
    assert huge_pages.place(_model("llama")) == 0

    def no_arena(*args):
        raise AssertionError("an arena was made with LMFORGE_HUGE_PAGES=0")

    monkeypatch.setattr(huge_pages.Arena, "__init__", no_arena)
    lm = lmforge.load(tmp_path / "saved")
    assert lm.model.tok_emb.weight.shape == (VOCAB, 32)
    if hardware.thp_mode() == "madvise":  # memory that did not ask gets no huge pages
        assert huge_pages.backed_kb(lm.model.tok_emb.weight) == 0


def test_arena_hands_out_aligned_blocks_and_refuses_to_overrun():
    arena = huge_pages.Arena(huge_pages.PAGE)
    a = arena.empty(torch.Size([3, 5]), torch.float32)
    b = arena.copy(torch.arange(7, dtype=torch.int64), torch.float16)
    assert a.data_ptr() % huge_pages.PAGE == 0 and b.data_ptr() == a.data_ptr() + huge_pages.ALIGN
    assert b.dtype == torch.float16 and b.tolist() == list(range(7))
    assert arena.empty(torch.Size([0, 4]), torch.float32).numel() == 0
    with pytest.raises(ValueError, match="bytes left"):
        arena.empty(torch.Size([huge_pages.PAGE]), torch.uint8)
