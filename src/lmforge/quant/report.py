"""The quality card: what a quantization cost, measured against the original model.

- per layer: SQNR (dB) of the dequantized weight against the original, and the format it got;
- perplexity and bits per byte before and after on held-out text (the first `report_chars` characters
  of The Tempest, the play the `shakespeare-perplexity` task holds out; 512-token windows, stride 256);
- KL divergence KL(original ‖ quantized) of the next-token distributions, mean over the scored
  positions, and how often both pick the same top token;
- size on disk (the weights as a checkpoint stores them) and in memory (every tensor the model holds);
- prefill tokens/s (one 128-token forward pass) and decode tokens/s (greedy, 32 new tokens after the
  prefill, eager steps) before and after, on this machine's threads (the CPU model and flags noted);
  with the decode step compiled ahead of time (`aot`), also the saved checkpoint's decode tokens/s on
  the steps `lmforge.load(OUT)` takes by default.
Written as DIR/quant_report.json and DIR/quant_report.md; `markdown()` is what the CLI prints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.quant.formats import sqnr_db

CONTEXT, STRIDE = 512, 256
PREFILL_TOKENS, DECODE_TOKENS = 128, 32


def memory_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, each storage counted once (tied tensors share one)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type != "meta":
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def checkpoint_bytes(model: nn.Module) -> int:
    """Bytes of the weights a checkpoint writes (tied copies written once)."""
    from lmforge.io.checkpoint import _quantized_tied

    state = model.state_dict()
    skip = (
        ("lm_head.weight", "mlm.decoder.weight", *_quantized_tied(model))
        if model.config.tie_embeddings
        else ()
    )
    return sum(t.numel() * t.element_size() for n, t in state.items() if n not in skip)


def layer_errors(
    original: nn.Module, quantized: nn.Module, rounded_from: dict[str, torch.Tensor] | None = None
) -> list[dict[str, Any]]:
    """Each quantized layer's SQNR against the float weight its codes were rounded from: `rounded_from`
    where a method rescaled the weights first (SmoothQuant and AWQ fold scales into them, and into what
    feeds them), else the original's."""
    rows = []
    for name, module in quantized.named_modules():
        if hasattr(module, "dequantize") and name != "tok_emb":
            reference = (rounded_from or {}).get(name, original.get_submodule(name).weight)
            rows.append(
                {
                    "layer": name,
                    "format": type(module).__name__,
                    "sqnr_db": round(sqnr_db(reference, module.dequantize()), 2),
                    "path": getattr(module, "path", ""),
                }
            )
    return rows


@torch.inference_mode()
def quality(reference, candidate, text: str) -> dict[str, Any]:
    """Perplexity and bits per byte of both, and KL(reference ‖ candidate) over the same windows."""
    from lmforge.eval.metrics.lm import perplexity

    context = min(CONTEXT, reference.config.max_seq_len)  # a model with a shorter context: its own
    stride = STRIDE * context // CONTEXT
    before = perplexity(reference, text, context=context, stride=stride)
    after = perplexity(candidate, text, context=context, stride=stride)
    ids = torch.tensor([reference.tokenizer.bos_token_id, *reference.encode(text, add_special_tokens=False)])
    ids = ids[: min(len(ids), reference.config.max_seq_len, 2 * CONTEXT)][None]
    p = F.log_softmax(reference.model(ids)[0].float(), -1)
    q = F.log_softmax(candidate.model(ids)[0].float(), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    return {
        "perplexity_before": before.perplexity,
        "perplexity_after": after.perplexity,
        "perplexity_change_pct": 100 * (after.perplexity / before.perplexity - 1),
        "bits_per_byte_before": before.bits_per_byte,
        "bits_per_byte_after": after.bits_per_byte,
        "kl_mean": kl.mean().item(),
        "kl_max": kl.max().item(),
        "top1_agreement": (p.argmax(-1) == q.argmax(-1)).float().mean().item(),
        "scored_tokens": before.n_tokens,
        "kl_tokens": ids.shape[1],
    }


@torch.inference_mode()
def speed(lm, text: str) -> dict[str, float]:
    """Prefill and decode tokens/s of `lm` (best of 3 prefills; decode from two greedy runs)."""
    ids = lm.encode(text, add_special_tokens=False)[:PREFILL_TOKENS]
    x = torch.tensor([ids])
    lm.model(x)
    prefill = min(_timed(lambda: lm.model(x)) for _ in range(3))
    return {
        "prefill_tokens_per_s": len(ids) / prefill,
        "decode_tokens_per_s": _decode_rate(lm, ids[:16], {"compile": False, "aot": False}),
        "threads": torch.get_num_threads(),
    }


@torch.inference_mode()
def default_decode(lm, text: str) -> dict[str, Any]:
    """Decode tokens/s of `lm` on the steps its engine takes by default (after `lmforge quantize`, the
    AOT step it compiled), and which kind of step that was."""
    counts = lm.engine.step_counts.copy()
    rate = _decode_rate(lm, lm.encode(text, add_special_tokens=False)[:16], {})
    steps = lm.engine.step_counts - counts
    return {"decode_default_tokens_per_s": rate, "decode_default_step": steps.most_common(1)[0][0]}


def _decode_rate(lm, prompt: list[int], options: dict[str, Any]) -> float:
    """Greedy tokens/s of DECODE_TOKENS steps after the prefill (the time of one new token subtracted)."""
    options = {"ignore_eos": True, **options}
    lm.generate([prompt], max_new_tokens=2, **options)
    first = _timed(lambda: lm.generate([prompt], max_new_tokens=1, **options))
    full = _timed(lambda: lm.generate([prompt], max_new_tokens=DECODE_TOKENS + 1, **options))
    return DECODE_TOKENS / max(full - first, 1e-9)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _quality_rows(q: dict[str, Any]) -> list[str]:
    return [
        f"| perplexity | {q['perplexity_before']:.3f} | {q['perplexity_after']:.3f} | "
        f"{q['perplexity_change_pct']:+.2f}% |",
        f"| bits per byte | {q['bits_per_byte_before']:.4f} | {q['bits_per_byte_after']:.4f} | "
        f"{q['bits_per_byte_after'] - q['bits_per_byte_before']:+.4f} |",
    ]


def _kl_line(q: dict[str, Any]) -> str:
    return (
        f"KL(original ‖ quantized) per token: mean {q['kl_mean']:.5f}, max {q['kl_max']:.4f}; "
        f"same top token {100 * q['top1_agreement']:.1f}% (over the first {q['kl_tokens']} tokens)"
    )


def markdown(card: dict[str, Any]) -> str:
    q, s = card.get("quality"), card.get("speed")
    lines = [f"# Quantization card: {card['model']} → {card['description']}", ""]
    lines += [
        f"- scheme `{card['quantization']['scheme']}`, method `{card['quantization'].get('method')}`, "
        f"activations {card['quantization'].get('compute_dtype')}; kernels: {card['kernels']}",
        f"- size on disk: {card['disk_mb_before']:.1f} MB → {card['disk_mb_after']:.1f} MB; "
        f"in memory: {card['memory_mb_before']:.1f} MB → {card['memory_mb_after']:.1f} MB",
    ]
    for name, why in card["quantization"].get("kept", {}).items():
        lines.append(f"- kept in {card['quantization'].get('compute_dtype')}: `{name}` ({why})")
    if q:
        lines += [
            "",
            f"Held-out text: {card['text']} ({q['scored_tokens']} tokens; KL over the first {q['kl_tokens']})",
            "",
            "| | before | after | change |",
            "|---|---|---|---|",
            *_quality_rows(q),
        ]
        if s:
            b, a = s["before"], s["after"]
            lines += [
                f"| prefill tok/s ({PREFILL_TOKENS} tokens) | {b['prefill_tokens_per_s']:.0f} | "
                f"{a['prefill_tokens_per_s']:.0f} | x{a['prefill_tokens_per_s'] / b['prefill_tokens_per_s']:.2f} |",
                f"| decode tok/s (eager, {b['threads']} threads) | {b['decode_tokens_per_s']:.1f} | "
                f"{a['decode_tokens_per_s']:.1f} | x{a['decode_tokens_per_s'] / b['decode_tokens_per_s']:.2f} |",
            ]
            if "decode_default_tokens_per_s" in a:
                rate = a["decode_default_tokens_per_s"]
                lines.append(
                    f"| decode tok/s (`lmforge.load(OUT)`'s default: {a['decode_default_step']} steps) | "
                    f"{b['decode_tokens_per_s']:.1f} (eager) | {rate:.1f} | x{rate / b['decode_tokens_per_s']:.2f} |"
                )
        lines += ["", _kl_line(q)]
        wiki = card.get("quality_wikipedia")
        if wiki:
            lines += ["", f"Held-out text: {card['text_wikipedia']} ({wiki['scored_tokens']} tokens)", ""]
            lines += [
                "| | before | after | change |",
                "|---|---|---|---|",
                *_quality_rows(wiki),
                "",
                _kl_line(wiki),
            ]
        elif card.get("text_wikipedia"):
            lines += ["", f"Wikipedia excerpt {card['text_wikipedia']}"]
        if s and s.get("machine"):
            lines += ["", f"Speed measured on {s['machine']}."]
    step = card.get("decode_step")
    if step:
        lines += [""]
        if step["kind"] == "aot":
            how = "its package was kept already" if step.get("kept") else f"in {step['compile_s']:.0f} s"
            lines.append(
                f"Decode step compiled ahead of time for this machine ({how}; `{step['package']}`): "
                "`lmforge.load(OUT)` decodes through it."
            )
        else:
            lines.append(f"Decode step: eager ({step['reason']}).")
    layers = card["layers"]
    if layers:
        worst = sorted(layers, key=lambda r: r["sqnr_db"])[:5]
        mean = sum(r["sqnr_db"] for r in layers) / len(layers)
        lines += [
            "",
            f"Weight SQNR over {len(layers)} layers: mean {mean:.1f} dB; lowest: "
            + ", ".join(f"`{r['layer']}` {r['sqnr_db']:.1f} dB" for r in worst),
        ]
    return "\n".join(lines) + "\n"


def finite(value: Any) -> Any:
    """JSON has no infinity: an exact layer's SQNR is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
