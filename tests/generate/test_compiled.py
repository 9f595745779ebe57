"""`compile=True`: the one-token decode step under torch.compile is the eager step, made faster.

Same step logits (to float tolerance) and the same tokens for a single prompt, a left-padded batch,
sampling with a seed and beam search (whose cache rows are reordered between steps); each case checks
that its steps really ran compiled (`Batch.decode_step`, `Completion.decode_step`). An LM keeps one
engine, and the engine its compiled function, across calls. Dynamo keeps the graphs on the compiled
function's code, shared by every engine, so these tests reuse one model per family to keep compiles few.
"""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config
from generate_helpers import tiny_lm, tiny_model

from lmforge.errors import LMForgeError
from lmforge.generate import engine as engine_module
from lmforge.generate import generate
from lmforge.generate.engine import Engine

pytestmark = pytest.mark.xdist_group("compile")  # one worker pays for the compiles


@pytest.fixture(scope="module")
def models():
    return {
        "llama": tiny_model("llama", seed=11, scale=20.0),
        "gpt2": tiny_model("gpt2", seed=11, scale=20.0),
        "mistral": tiny_model("llama", seed=11, scale=20.0, sliding_window=6),  # the window masks
    }


@pytest.mark.parametrize("family", ["llama", "gpt2", "mistral"])
@pytest.mark.parametrize("prompts", [[[5, 17, 99, 3, 42, 7]], [[5, 17, 99, 3, 42, 7], [8, 9]]])
def test_compiled_step_logits_equal_eager(models, family, prompts):
    """One prompt (no mask unless a window needs one) and a left-padded batch (the mask path)."""
    model = models[family]
    logits = {}
    for mode in ("eager", "compile"):
        engine = Engine(model, compile=mode)
        batch = engine.new_batch(prompts, 6 + 12)
        out = [engine.prefill(batch)]
        for i in range(12):
            tokens = torch.tensor([(7 * i + 3) % 250, (11 * i + 1) % 250][: len(prompts)])  # same both times
            out.append(engine.step(batch, tokens))
        logits[mode] = torch.stack(out)
        assert batch.step_counts == {mode: 12}  # every step took the chosen path
    # the steps really ran a compiled graph (dynamo did not fall back to eager)
    assert torch._dynamo.eval_frame._debug_get_cache_entry_list(engine_module._forward.__code__)
    torch.testing.assert_close(logits["compile"], logits["eager"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # RMSNorm + SwiGLU, LayerNorm + GELU
def test_compiled_step_copies_no_matmul_input(family):
    """At batch 1 the step's matmul inputs keep plain strides. Under inductor a (1, 1, C) result
    viewed as (1, C) gets stride 0 on its size-1 dimension, and the CPU matmul then copies that input
    before multiplying: the model computes what feeds a matmul as (tokens, C) rows (`as_rows`). (Inside
    the custom op `lmforge::linear_fp32`, as here, the strides reach aten's matmul as they are.)"""
    # a layer count no other test uses: its own graph (same-shaped models share one), with kernel
    # profiling; after this module's other tests it is also past dynamo's default limit of 8 graphs
    engine = Engine(tiny_model(family, seed=12, n_layer=3), compile="compile")
    batch = engine.new_batch([[5, 17, 99]], 8)
    engine.prefill(batch)
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        engine.step(batch, torch.tensor([4]))  # compiles
    with torch.profiler.profile() as prof:
        engine.step(batch, torch.tensor([6]))
    names = [e.name for e in prof.events()]
    assert batch.step_counts == {"compile": 2}
    # the profile sees the graph's matmuls: float32 linears are the custom op that picks the kernel
    assert "lmforge::linear_fp32" in names and "aten::mm" in names
    assert "aten::clone" not in names


def test_generate_with_compile_equals_eager(models):
    lm = tiny_lm(models["llama"])
    prompts = ["the quick brown fox", "jumps", "over the lazy dog!"]
    cases = [
        dict(max_new_tokens=20),
        dict(max_new_tokens=20, do_sample=True, temperature=0.8, top_p=0.9, seed=3),
        dict(max_new_tokens=12, num_beams=3, length_penalty=1.2),
    ]
    for options in cases:
        eager = generate(lm, prompts, **options)
        compiled = generate(lm, prompts, compile=True, **options)
        assert [c.token_ids for c in compiled] == [c.token_ids for c in eager], options
        assert [c.text for c in compiled] == [c.text for c in eager]
        assert {c.decode_step for c in compiled} == {"compile"} and {c.decode_step for c in eager} == {
            "eager"
        }
    # the draft model's one-token steps are compiled too (here a second LM of the target's model drafts)
    draft = tiny_lm(models["llama"])
    drafted = generate(lm, prompts, draft=draft, max_new_tokens=20, compile=True)
    assert [c.token_ids for c in drafted] == [c.token_ids for c in generate(lm, prompts, max_new_tokens=20)]
    assert draft.engine.step_counts["compile"] > 0  # the draft LM's own engine ran compiled steps
    single = generate(lm, "the quick brown fox", max_new_tokens=30, compile=True)
    assert single.token_ids == generate(lm, "the quick brown fox", max_new_tokens=30).token_ids
    assert single.decode_step == "compile"
    assert len(set(single.token_ids)) > 3  # a real continuation, not one repeated token


def test_an_lm_keeps_one_engine_and_compiles_once(models):
    """`compile="compile"` at load time: every call (method or function, generate, stream or chat) runs
    on the LM's one engine, whose compiled function is built on the first call and reused."""
    lm = tiny_lm(models["llama"], compile="compile")
    first = lm.generate("the quick brown fox", max_new_tokens=8)
    engine, compiled = lm.engine, lm.engine.compiled_forward
    assert compiled is not None and first.decode_step == "compile"
    second = generate(lm, "the quick brown fox", max_new_tokens=8)
    streamed = list(lm.stream("the quick brown fox", max_new_tokens=8))
    assert lm.engine is engine and engine.compiled_forward is compiled
    assert second.token_ids == first.token_ids and streamed[-1].decode_step == "compile"
    assert engine.step_counts == {"compile": 3 * 7}
    eager = lm.generate("the quick brown fox", max_new_tokens=8, compile=False)  # a call overrides
    assert eager.decode_step == "eager" and eager.token_ids == first.token_ids


def test_missing_compiler_is_a_one_line_error(models):
    # the config's own patch: monkeypatch would delete the option on undo (config modules resolve
    # their options through __getattr__)
    no_compiler = torch._inductor.config.patch({"cpp.cxx": ("no-such-c++-compiler",)})
    with no_compiler, pytest.raises(LMForgeError, match="compile=True needs a C\\+\\+ compiler"):
        generate(tiny_lm(models["llama"]), "hi", max_new_tokens=2, compile=True)


def test_missing_python_headers_is_a_one_line_error(models, monkeypatch, tmp_path):
    """Inductor builds its CPU kernels as Python extension modules: no Python.h, no compile."""
    import sysconfig

    real = sysconfig.get_path
    monkeypatch.setattr(
        sysconfig,
        "get_path",
        lambda name, *a, **k: str(tmp_path) if name == "include" else real(name, *a, **k),
    )
    with pytest.raises(LMForgeError, match="needs Python's C headers.*no Python.h"):
        generate(tiny_lm(models["llama"]), "hi", max_new_tokens=2, compile=True)
