"""Quantizing a model lmforge trained itself in float32: gpt-nano on Shakespeare, every scheme and method,
and quantization-aware training against plain RTN.

1. Train: `lmforge quickstart --preset gpt-nano --precision fp32 --seq-len 256 --batch-size B --minutes M
   --optimizer O --lr LR --text <the Shakespeare texts without The Tempest> --val-text <The Tempest>`
   (kept in the cache, one folder per optimizer and budget, and reused).
2. Quantize the trained checkpoint with `lmforge.quantize(DIR, scheme=..., method=..., out=...)`: bf16,
   int8, int4 g64 RTN (asymmetric, the default; and symmetric), int4 g32 symmetric (llama.cpp's Q4_0
   format), int4 g64 HQQ, GPTQ and AWQ (calibrated on Shakespeare without The Tempest).
3. QAT: `lmforge.finetune(DIR, text=["shakespeare-train"], qat="int4", group_size=64, steps=S)` writes
   RUN/int4, quantized with the codes its last steps computed with. The control is the same fine-tuning
   without `qat`, then RTN int4 g64, so the table separates what QAT buys from what S more steps buy.
Every model is scored the same way: perplexity on the first `--ppl-chars` characters of The Tempest
(256-token windows, stride 128: the model's context), and the change in log-perplexity (mean loss, nats)
against the trained fp32 model; decode tokens/s as in benchmarks/quantize.py (eager steps, greedy).
QAT's recovery is (loss RTN - loss QAT) / (loss RTN - loss fp32): the share of RTN int4's loss that QAT
wins back (aim: at least half; undefined where RTN int4 costs nothing).
4. llama.cpp on the same model: `lmforge convert DIR nano.F32.gguf --to gguf --type f32`, then llama.cpp's
   own `llama-quantize` to Q8_0 and Q4_0; `llama-perplexity -c 256` on the same text (its protocol: the
   second half of each chunk scored, so compared as changes against its F32) and `llama-bench -n 128`.

    python benchmarks/quantize_trained.py [--train-minutes 30] [--optimizer adamw] [--qat-steps 150]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quantize as smollm2_bench  # noqa: E402  (its llama.cpp and decode helpers)

RESULTS = Path(__file__).parent / "results" / "quantize_trained.json"
VARIANTS = {
    "bf16": {"scheme": "bf16"},
    "int8": {"scheme": "int8"},
    "int4 g64 rtn": {"scheme": "int4", "group_size": 64},
    "int4 g64 rtn symmetric": {"scheme": "int4", "group_size": 64, "symmetric": True},
    "int4 g32 rtn symmetric (Q4_0)": {"scheme": "int4", "group_size": 32, "symmetric": True},
    "int4 g64 hqq": {"scheme": "int4", "group_size": 64, "method": "hqq"},
    "int4 g64 gptq": {"scheme": "int4", "group_size": 64, "method": "gptq"},
    "int4 g64 awq": {"scheme": "int4", "group_size": 64, "method": "awq"},
}


def train(cache: Path, args) -> Path:
    import lmforge
    from lmforge.assets import HELD_OUT_PLAY, asset_path, shakespeare_files

    out = cache / "train"
    finals = sorted(out.glob("run-*/final/config.json"))
    if finals:
        return finals[-1].parent
    result = lmforge.quickstart(
        preset="gpt-nano",
        precision="fp32",
        seq_len=256,
        batch_size=args.batch_size,
        minutes=args.train_minutes,
        optimizer=args.optimizer,
        lr=args.lr,
        text=[str(p) for p in shakespeare_files(include_held_out=False)],
        val_text=str(asset_path("shakespeare") / HELD_OUT_PLAY),
        out=str(out),
    )
    return Path(result.final)


def score(lm, text: str, new_tokens: int) -> dict:
    import torch

    from lmforge.eval.metrics.lm import perplexity

    with torch.inference_mode():
        ppl = perplexity(lm, text, context=256, stride=128)
        prompt = lm.encode(text, add_special_tokens=False)[:16]
        decode = smollm2_bench.decode_rate(lm, prompt, new_tokens, "eager")
    return {
        "perplexity": ppl.perplexity,
        "loss_nats": math.log(ppl.perplexity),
        "scored_tokens": ppl.n_tokens,
        "decode_tok_s_eager": decode,
    }


def llama_rows(model: Path, cache: Path, args, text: str) -> dict[str, dict]:
    """llama.cpp F32 / Q8_0 / Q4_0 of the trained model: perplexity (its protocol) and llama-bench."""
    tools = smollm2_bench.llama_tools()
    if tools is None:
        print("llama.cpp tools not built: scripts/build_llama_cpp.sh", file=sys.stderr)
        return {}
    files = {"F32": cache / "nano.F32.gguf"}
    if not files["F32"].exists():
        subprocess.run(
            [sys.executable, "-m", "lmforge.cli", "convert", str(model), str(files["F32"]), "--to", "gguf"]
            + ["--type", "f32"],
            check=True,
        )
    for kind in ("Q8_0", "Q4_0"):
        files[kind] = cache / f"nano.{kind}.gguf"
        if not files[kind].exists():
            cmd = [str(tools / "llama-quantize"), str(files["F32"]), str(files[kind]), kind]
            subprocess.run(cmd, check=True, capture_output=True)
    text_file = cache / "tempest.txt"
    text_file.write_text(text, encoding="utf-8")
    rows = {}
    for kind, gguf in files.items():
        row = smollm2_bench.llama_side(kind, gguf, tools, args, text_file, context=256)
        rows[f"llama.cpp {kind}"] = row
        print(row, flush=True)
    for row in rows.values():
        if row.get("perplexity") and rows["llama.cpp F32"].get("perplexity"):
            row["ppl_change_pct"] = 100 * (row["perplexity"] / rows["llama.cpp F32"]["perplexity"] - 1)
    return rows


def finetune(model: Path, out: Path, args, qat: bool) -> Path:
    """A fine-tuning run's quantized (QAT) or float (control) checkpoint, reused when present."""
    import lmforge

    target = out / ("int4" if qat else "final")
    if not (target / "config.json").exists():
        options = {"qat": "int4", "group_size": 64} if qat else {}
        lmforge.finetune(
            model,
            out=out,
            text=["shakespeare-train"],
            steps=args.qat_steps,
            lr=args.qat_lr,
            batch_size=args.batch_size,
            seq_len=256,
            eval_every=args.qat_steps,
            progress=False,
            **options,
        )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-minutes", type=float, default=30.0)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "muon"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--qat-steps", type=int, default=150)
    parser.add_argument("--qat-lr", type=float, default=3e-4)
    parser.add_argument("--ppl-chars", type=int, default=40000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--llama-bench-flags", nargs="*", default=[], help="extra llama-bench flags")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    import lmforge
    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.hardware import describe, machine

    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}", flush=True)
    cache = Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "bench-quant-nano"
    cache = cache / f"{args.optimizer}-lr{args.lr:g}-b{args.batch_size}-{args.train_minutes:g}min"
    cache.mkdir(parents=True, exist_ok=True)
    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")[: args.ppl_chars]
    start = time.perf_counter()
    model = train(cache, args)
    rows: dict[str, dict] = {"fp32": score(lmforge.load(model), text, args.new_tokens)}
    print("fp32", json.dumps(rows["fp32"]), flush=True)
    for name, options in VARIANTS.items():
        out = cache / name.replace(" ", "-").replace("(", "").replace(")", "")
        rows[name] = {"options": options}
        if not (out / "config.json").exists():  # timed only where this run quantizes
            began = time.perf_counter()
            lmforge.quantize(str(model), out=out, report=False, aot=False, **options)
            rows[name]["quantize_s"] = round(time.perf_counter() - began, 1)
        rows[name] |= score(lmforge.load(out), text, args.new_tokens)
        print(name, json.dumps(rows[name]), flush=True)
    qat = finetune(model, cache / f"qat-{args.qat_steps}", args, qat=True)
    rows["int4 g64 QAT"] = score(lmforge.load(qat), text, args.new_tokens)
    control = finetune(model, cache / f"control-{args.qat_steps}", args, qat=False)
    rows["control fp32 (same fine-tuning, no QAT)"] = score(lmforge.load(control), text, args.new_tokens)
    control_rtn = lmforge.quantize(str(control), scheme="int4", group_size=64, report=False).lm
    rows["control int4 g64 rtn"] = score(control_rtn, text, args.new_tokens)
    base = rows["fp32"]["loss_nats"]
    for row in rows.values():
        row["loss_change_nats"] = row["loss_nats"] - base
        row["ppl_change_pct"] = 100 * (row["perplexity"] / rows["fp32"]["perplexity"] - 1)
    rtn_loss = rows["int4 g64 rtn"]["loss_change_nats"]
    recovery = {  # undefined where RTN int4 costs nothing: there is no loss to win back
        name: (rtn_loss - rows[row]["loss_change_nats"]) / rtn_loss if rtn_loss > 0 else None
        for name, row in [
            ("qat", "int4 g64 QAT"),
            ("control (fine-tuning without QAT, then RTN)", "control int4 g64 rtn"),
        ]
    }
    llama = llama_rows(model, cache, args, text)
    record = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": vars(args) | {"output": str(args.output), "model": str(model)},
        "aims": {
            "int8 ppl <= +0.5%": rows["int8"]["ppl_change_pct"] <= 0.5,
            "int4 gptq or awq better than int4 rtn": min(
                rows["int4 g64 gptq"]["loss_nats"], rows["int4 g64 awq"]["loss_nats"]
            )
            < rows["int4 g64 rtn"]["loss_nats"],
            "qat recovers >= half of rtn int4's loss": None
            if recovery["qat"] is None
            else recovery["qat"] >= 0.5,
        },
        "recovery_of_rtn_int4_loss": recovery,
        "rows": rows,
        "llama.cpp": llama,
        "total_s": round(time.perf_counter() - start, 1),
    }
    print(f"{'model':42s}{'perplexity':>12s}{'change':>9s}{'nats':>9s}{'decode tok/s':>14s}")
    for name, row in rows.items():
        print(
            f"{name:42s}{row['perplexity']:12.3f}{row['ppl_change_pct']:+8.2f}%{row['loss_change_nats']:+9.4f}"
            f"{row['decode_tok_s_eager']:14.1f}"
        )
    for name, row in llama.items():
        change = row.get("ppl_change_pct")
        print(
            f"{name:42s}{row.get('perplexity') or 0:12.3f}{change or 0:+8.2f}%{'':9s}{row.get('decode_tok_s_eager', 0):14.1f}"
        )
    print(json.dumps({"recovery": recovery, "aims": record["aims"]}, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
