"""lmforge.quantize and `lmforge quantize` on tiny models: quantize → save → load gives identical outputs
in the same modules, the options and their errors, decode steps on quantized weights."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.io.checkpoint import write_checkpoint
from lmforge.lm import LM
from lmforge.model.swap import linear_layers
from lmforge.quant import report
from lmforge.quant.modules import BF16Linear, Int4Linear, Int8Embedding, Int8Linear
from tiny import tiny_model

IDS = torch.randint(0, 320, (2, 11), generator=torch.Generator().manual_seed(0))


def _lm(family="llama", **overrides) -> LM:
    return LM(tiny_model(family, vocab_size=320, **overrides), compile="eager")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "options",
    [
        {"scheme": "int8"},
        {"scheme": "int4", "group_size": 32},
        {"scheme": "int4", "group_size": 32, "symmetric": True, "compute_dtype": "float32"},
        {"scheme": "bf16"},
    ],
)
def test_quantize_save_load_gives_identical_outputs(tmp_path, family, options):
    lm = _lm(family)
    before = lm.model(IDS)
    result = lmforge.quantize(lm, out=tmp_path / "q", report=False, aot=False, **options)
    assert torch.equal(lm.model(IDS), before)  # the original is left as it was
    out = result.lm.model(IDS)
    assert (out.float() - before).abs().max() < 0.1 * before.abs().max()
    loaded = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    assert [type(m) for m in loaded.model.modules()] == [type(m) for m in result.lm.model.modules()]
    assert torch.equal(loaded.model(IDS), out)
    record = json.loads((tmp_path / "q" / "config.json").read_text())["lmforge"]["quantization"]
    assert record["scheme"] == options["scheme"]
    if options["scheme"] == "int4":
        assert record["group_size"] == 32 and record["symmetric"] == options.get("symmetric", False)
        assert isinstance(loaded.model.blocks[0].mlp.fc, Int4Linear)
    if options["scheme"] == "bf16":  # every linear (the LM head too) takes decode rows through our kernel
        linears = linear_layers(loaded.model, lm_head=True).values()
        assert linears and all(
            isinstance(m, BF16Linear) and m.weight.dtype == torch.bfloat16 for m in linears
        )
        assert loaded.model.lm_head.weight is loaded.model.tok_emb.weight  # still tied
    if options["scheme"] in ("int8", "int4"):
        assert isinstance(loaded.model.lm_head, Int8Linear)
        assert isinstance(loaded.model.tok_emb, Int8Embedding)  # tied: reads the head's rows
        assert loaded.model.tok_emb.qweight.data_ptr() == loaded.model.lm_head.qweight.data_ptr()
    # `lmforge info`: the weights the codes stand for, and the memory they take (codes are buffers)
    info, float_info = loaded.info(), lm.info()
    assert info["parameters"] == float_info["parameters"] == lm.model.num_parameters()
    assert info["quantization"].startswith(options["scheme"]) and "quantization" not in float_info
    kinds = {
        type(m).__name__
        for m in loaded.model.modules()
        if isinstance(m, (BF16Linear, Int8Linear, Int4Linear))
    }
    assert {k.split()[0] for k in info["kernels"].split(", ")} == kinds and kinds
    expected_mb = report.memory_bytes(loaded.model) / 2**20
    assert info["memory_mb"] == round(expected_mb, 1) and 0.1 * float_info["memory_mb"] < expected_mb
    assert expected_mb < (0.6 if options["scheme"] == "bf16" else 0.5) * float_info["memory_mb"]
    assert (tmp_path / "q" / "quant_report.json").is_file() and (tmp_path / "q" / "quant_report.md").is_file()


def test_quantized_decode_steps_equal_a_full_forward():
    """Greedy decoding over the KV cache picks the tokens a full forward pass would pick."""
    q = lmforge.quantize(_lm(), scheme="int8", report=False, compute_dtype="float32").lm
    prompt = IDS[0, :5].tolist()
    tokens = q.generate([prompt], max_new_tokens=6, ignore_eos=True)[0].token_ids
    seq = prompt[:]
    for _ in range(6):
        seq.append(int(q.model(torch.tensor([seq]))[0, -1].argmax()))
    assert tokens == seq[len(prompt) :]


def test_group_size_that_does_not_divide_a_layer(tmp_path):
    lm = _lm(d_model=48, n_head=4, d_mlp=96)  # inputs 48 and 96: group 64 divides neither
    with pytest.raises(lmforge.LMForgeError, match=r"group size 64 does not divide .*blocks\.0\.attn\.qkv"):
        lmforge.quantize(lm, scheme="int4", group_size=64, report=False)
    lm = _lm(d_model=32, d_mlp=96)  # 32 not divisible by 64 either: keep those
    result = lmforge.quantize(lm, scheme="int4", group_size=32, keep=["mlp.proj"], report=False)
    kept = result.lm.model.quantization["kept"]
    assert set(kept) == {"blocks.0.mlp.proj", "blocks.1.mlp.proj"}
    result = lmforge.quantize(
        _lm(d_mlp=96), scheme="int4", group_size=64, keep_indivisible=True, report=False
    )
    kept = result.lm.model.quantization["kept"]
    assert "blocks.0.attn.qkv" in kept and "does not divide" in kept["blocks.0.attn.qkv"]
    assert "kept in" in result.markdown


def test_bad_options_and_already_quantized():
    with pytest.raises(lmforge.LMForgeError, match="one of 'bf16', 'fp16', 'int8', 'int4'"):
        lmforge.quantize(_lm(), scheme="int3")
    with pytest.raises(lmforge.LMForgeError, match="group size 48 is not supported"):
        lmforge.quantize(_lm(), scheme="int4", group_size=48)
    with pytest.raises(lmforge.LMForgeError, match="did you mean scheme"):
        lmforge.quantize(_lm(), schme="int8")
    with pytest.raises(lmforge.LMForgeError, match="match no linear layer"):
        lmforge.quantize(_lm(), keep=["nothing.here"], report=False)
    q = lmforge.quantize(_lm(), scheme="int8", report=False).lm
    with pytest.raises(lmforge.LMForgeError, match="already quantized"):
        lmforge.quantize(q, scheme="int4")
    with pytest.raises(lmforge.LMForgeError, match="needs calibration text"):
        lmforge.quantize(_lm(), method="gptq", report=False)


def test_rtn_int4_searches_scales_by_default_and_qat_keeps_min_max(monkeypatch):
    from lmforge.quant import qat
    from lmforge.quant.formats import sqnr_db

    lm = _lm()
    searched = lmforge.quantize(lm, scheme="int4", group_size=32, aot=False, report=False)
    minmax = lmforge.quantize(lm, scheme="int4", group_size=32, scales="minmax", aot=False, report=False)
    assert searched.lm.model.quantization["scales"] == "search"
    assert "scales" not in minmax.lm.model.quantization
    assert "(searched scales)" in searched.card["description"]
    fc = lm.model.blocks[0].mlp.fc.weight
    sqnr = [sqnr_db(fc, r.lm.model.blocks[0].mlp.fc.dequantize()) for r in (searched, minmax)]
    assert sqnr[0] > sqnr[1]
    exported = []
    monkeypatch.setattr("lmforge.quant.api.quantize", lambda lm, **o: exported.append(o))
    qat.export(lm, "unused", "int4", 32)  # the rounding QAT trained through
    assert exported[0]["scales"] == "minmax" and exported[0]["method"] == "rtn"


def test_cli_quantize(tmp_path, capsys):
    model = tiny_model("gpt2", vocab_size=320)
    write_checkpoint(tmp_path / "float", model)
    code = main(
        [
            "quantize",
            str(tmp_path / "float"),
            "--scheme",
            "int4",
            "--group-size",
            "32",
            "--no-report",
            "--out",
            str(tmp_path / "q"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "int4 rtn g32" in printed and "wrote" in printed
    assert "Decode step compiled ahead of time for this machine" in printed
    loaded = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    assert loaded.model.quantization["group_size"] == 32
    # the default load decodes through the package `lmforge quantize` compiled, to the eager tokens
    default = lmforge.load(tmp_path / "q", device="cpu")
    prompt = [[5, 9, 2, 7]]
    options = {"max_new_tokens": 6, "ignore_eos": True}
    assert default.generate(prompt, **options)[0].token_ids == loaded.generate(prompt, **options)[0].token_ids
    assert default.engine.step_counts["aot"] == 5 and "aot" not in loaded.engine.step_counts
    assert (
        main(["quantize", str(tmp_path / "q"), "--out", str(tmp_path / "q2"), "--no-report", "--no-aot"]) == 2
    )
    assert "already quantized" in capsys.readouterr().err


def test_a_failing_ahead_of_time_compile_keeps_the_checkpoint_and_says_why(tmp_path, monkeypatch):
    """Inductor or the C++ compiler failing while `lmforge quantize` compiles the decode step is a line in
    the card, not a traceback: the checkpoint and its card are written, no package is left behind."""

    def broken(*args, **kwargs):
        raise RuntimeError("C++ compile error\ndetails")

    from lmforge.quant import kernels

    kernels.native_int8(), kernels.matmul_dtype()  # built and measured in the usual cache first
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))  # no kept package: it compiles
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    result = lmforge.quantize(_lm(), scheme="int8", out=tmp_path / "q", report=False)
    step = result.card["decode_step"]
    assert (
        step["kind"] == "eager"
        and "compiling the decode step ahead of time failed (RuntimeError: C++ compile error)"
        in step["reason"]
    )
    assert (tmp_path / "q" / "quant_report.json").is_file()
    assert not list((tmp_path / "cache" / "aot").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["native", "kernel"])  # lmforge's int4 kernel or torch's
def test_aot_decode_step_with_int4_weights_equals_eager(tmp_path, kernel, monkeypatch):
    """The decode step `lmforge quantize` compiles ahead of time gives the eager tokens on either int4
    kernel (torch's once failed to load: inductor made its group size a constant the package lacked)."""
    from lmforge.quant import kernels

    monkeypatch.setattr(kernels, "native_int4", lambda group_size: kernel == "native")
    lm = LM(tiny_model("llama", vocab_size=320, tie_embeddings=False, seed=5), compile="eager")
    result = lmforge.quantize(lm, scheme="int4", group_size=32, out=tmp_path / "q", report=False)
    assert result.card["decode_step"]["kind"] == "aot", result.card["decode_step"]
    default = lmforge.load(tmp_path / "q", device="cpu")
    assert {m.path for m in default.model.modules() if isinstance(m, Int4Linear)} == {kernel}
    eager = lmforge.load(tmp_path / "q", device="cpu", compile="eager")
    options = {"max_new_tokens": 8, "ignore_eos": True}
    prompt = [[1, 2, 3, 4, 5]]
    assert default.generate(prompt, **options)[0].token_ids == eager.generate(prompt, **options)[0].token_ids
    assert default.engine.step_counts["aot"] == 7


def test_a_decode_step_that_does_not_export_stays_eager_and_the_card_says_why(tmp_path):
    """LLM.int8's outlier columns depend on the input, so its step has no AOT package: the checkpoint is
    written all the same, the card names the reason, and the default load decodes eagerly."""
    result = lmforge.quantize(_lm(), scheme="int8", method="llm-int8", out=tmp_path / "q", report=False)
    step = result.card["decode_step"]
    assert step["kind"] == "eager" and "does not export for aot" in step["reason"]
    assert "Decode step: eager (this model's decode step does not export" in result.markdown
    loaded = lmforge.load(tmp_path / "q", device="cpu")
    loaded.generate([[5, 9, 2, 7]], max_new_tokens=4, ignore_eos=True)
    assert set(loaded.engine.step_counts) == {"eager"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"scheme": "int8"},
        {"scheme": "int4", "group_size": 32},
        # w8a8 in fp32: activation codes follow their inputs to the last bit, and inductor's bf16
        # elementwise code (norms, residuals) rounds differently from eager's, which flips a near tie
        {"scheme": "w8a8-dynamic", "compute_dtype": "float32"},
    ],
)
def test_compiled_decode_with_quantized_weights_equals_eager(tmp_path, options):
    """`lmforge.load(DIR, compile="compile")` of a quantized checkpoint generates the tokens eager does
    (the modules' kernel choices are attributes fixed at build/load time: nothing is measured while
    tracing), for one prompt and for a padded batch of three, also when every eager int4 input is past
    the rows its kernel wins at (prefill dequantizes; compiled steps keep the kernel)."""
    lm = LM(tiny_model("llama", vocab_size=320, tie_embeddings=False, seed=3), compile="eager")
    lmforge.quantize(lm, out=tmp_path / "q", report=False, aot=False, **options)
    eager_lm = lmforge.load(tmp_path / "q", compile="eager")
    compiled_lm = lmforge.load(tmp_path / "q", compile="compile")
    for module in compiled_lm.model.modules():
        if isinstance(module, Int4Linear):
            module.kernel_rows = 0
    for prompts in ([[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5], [6, 7, 8], [2, 9, 4, 1]]):
        eager = eager_lm.generate(prompts, max_new_tokens=12, ignore_eos=True)
        compiled = compiled_lm.generate(prompts, max_new_tokens=12, ignore_eos=True)
        assert len(set(eager[0].token_ids)) > 6  # a model whose greedy tokens vary
        assert [c.token_ids for c in compiled] == [e.token_ids for e in eager]
        assert {c.decode_step for c in compiled} == {"compile"}


def test_quality_card_scores_both_models_on_the_held_out_texts():
    """With a tokenizer the card holds perplexity before and after on The Tempest's first characters and
    on the Wikipedia excerpt's (the original's figure is eval's perplexity of the original), KL and top-1
    agreement, speed before and after with the machine it was measured on, and prints them."""
    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.eval.metrics.lm import perplexity
    from lmforge.hardware import describe
    from tiny import tiny_chat_tokenizer

    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")[:1500]
    lm = LM(tiny_model("gpt2", vocab_size=320), tiny_chat_tokenizer([text]), compile="eager")
    card = lmforge.quantize(lm, scheme="int4", group_size=32, report_chars=1500).card
    quality, speed = card["quality"], card["speed"]
    context = min(512, lm.config.max_seq_len)
    expected = perplexity(lm, text, context=context, stride=256 * context // 512).perplexity
    assert quality["perplexity_before"] == pytest.approx(expected, rel=1e-6)
    change = 100 * (quality["perplexity_after"] / quality["perplexity_before"] - 1)
    assert quality["perplexity_change_pct"] == pytest.approx(change, rel=1e-6)
    assert quality["kl_mean"] > 0 and 0 <= quality["top1_agreement"] <= 1
    assert speed["machine"] == describe()
    assert all(speed[k]["decode_tokens_per_s"] > 0 for k in ("before", "after"))
    from lmforge.quant.api import _wikipedia_text
    from lmforge.rag.ingest import wikipedia_articles

    wiki = _wikipedia_text(1500)
    assert wiki == wikipedia_articles()[0][1][:1500] and len(wiki) == 1500
    expected = perplexity(lm, wiki, context=context, stride=256 * context // 512).perplexity
    assert card["quality_wikipedia"]["perplexity_before"] == pytest.approx(expected, rel=1e-6)
    assert card["quality_wikipedia"]["perplexity_after"] != card["quality"]["perplexity_after"]
    assert card["text_wikipedia"] == "the Wikipedia excerpt, first 1500 characters"
    printed = report.markdown(card)
    assert "| perplexity |" in printed and f"Speed measured on {describe()}." in printed
    assert printed.count("| perplexity |") == 2 and "Held-out text: the Wikipedia excerpt" in printed
