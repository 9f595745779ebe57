"""Decode speed of quantized SmolLM2 on the default path, against llama.cpp, alternating fresh processes.

`benchmarks/quantize.py` runs each side once, and on a shared machine one run can sit 15% off another.
Here each pair — lmforge bf16 / int8 / int4 g64 against llama.cpp BF16 / Q8_0 / Q4_0 on the same
weights — alternates for `--rounds` rounds, and the medians are compared:
- lmforge: a fresh process runs `lmforge.load(DIR)` (the default `compile="auto"`, so the decode step
  `lmforge quantize` compiled ahead of time) and times greedy decode of `--new-tokens` tokens after a
  16-token prompt (the one-token call's time subtracted, best of 2); the step kind is recorded, and
  where a step's time goes: the whole step, the AOT runner's call in it, and the int8/int4/bf16 kernel
  calls alone (`step_split`);
- llama.cpp: `llama-bench -t T -p 0 -n N -r 3` (tg, its decode; `--repack 0` where repacking fails), and
  where its repacked weights crash on a prompt (`repacked_prompt_runs`) also with `--repack 0`, how a
  user runs it there.
Prints the CPU model and flags, saves benchmarks/results/quantize_decode.json.

    python benchmarks/quantize_decode.py [--threads 2] [--rounds 3] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from quantize import PAIRS, checkpoint, decode_rate, gguf_files, llama_tools, timed

RESULTS = Path(__file__).parent / "results" / "quantize_decode.json"
VARIANTS = ("bf16", "int8", "int4")


def lmforge_side(path: str, new_tokens: int, threads: int) -> dict:
    """One lmforge side in this process: default-path decode tokens/s, the step kind that ran, and
    where a step's time goes (`step_split`)."""
    import torch

    import lmforge

    torch.set_num_threads(threads)
    lm = lmforge.load(path)
    prompt = lm.tokenizer.encode("The island was quiet when the ship came in, and the sailors")[:16]
    counts = lm.engine.step_counts.copy()
    rate = decode_rate(lm, prompt, new_tokens, "default")
    kind = (lm.engine.step_counts - counts).most_common(1)[0][0]
    return {"decode_tok_s": rate, "steps": kind, **step_split(lm, prompt, new_tokens)}


def step_split(lm, prompt: list[int], new_tokens: int) -> dict:
    """ms per decode step: the whole step as `generate` runs it, the AOT runner's call within it, and
    the quantized (and bf16) modules' kernel calls alone (each module's operator on a random row, in model order,
    the median of 20 passes, through the dispatcher from Python); what is left of a step is the
    engine's Python around the runner."""
    import time

    import torch

    from lmforge.generate import aot
    from lmforge.quant.modules import BF16Linear, Int4Linear, Int8Linear

    runner = [0.0]
    call = aot.AOTStep.__call__

    def timed_call(self, *args):
        start = time.perf_counter()
        out = call(self, *args)
        runner[0] += time.perf_counter() - start
        return out

    aot.AOTStep.__call__ = timed_call
    try:
        one = timed(lambda: lm.generate([prompt], max_new_tokens=1, ignore_eos=True))
        runner[0] = 0.0
        whole = timed(lambda: lm.generate([prompt], max_new_tokens=new_tokens + 1, ignore_eos=True))
    finally:
        aot.AOTStep.__call__ = call
    split = {"step_ms": (whole - one) / new_tokens * 1e3, "runner_ms": runner[0] / new_tokens * 1e3}
    kinds = (Int8Linear, Int4Linear, BF16Linear)
    modules = [m for m in lm.model.modules() if isinstance(m, kinds) and m.path == "native"]
    if modules:
        rows = {
            (m.in_features, isinstance(m, BF16Linear)): torch.randn(1, m.in_features).to(
                torch.bfloat16 if isinstance(m, BF16Linear) else torch.float32
            )
            for m in modules
        }
        ops = torch.ops.lmforge

        def kernels() -> None:
            for m in modules:
                x = rows[m.in_features, isinstance(m, BF16Linear)]
                if isinstance(m, Int8Linear):
                    ops.int8_native(x, m.qweight, m.kernel_scale, m.native_bias)
                elif isinstance(m, Int4Linear):
                    ops.int4_native(x, m.codes, m.group_size, m.scale_zero, m.native_bias)
                else:
                    ops.bf16_native(x, m.weight, None if m.bias is None else m.bias.float())

        kernels()
        split["kernel_calls"] = len(modules)
        split["kernels_ms"] = statistics.median(timed(kernels) for _ in range(20)) * 1e3
    return split


def llama_bench(tools: Path, gguf: Path, new_tokens: int, threads: int, repack: bool = True) -> dict:
    cmd = [str(tools / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(new_tokens)]
    cmd += ["-r", "3", "-o", "json", *([] if repack else ["--repack", "0"])]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 and repack:  # its weight repacking crashed on some CPUs
        return {**llama_bench(tools, gguf, new_tokens, threads, repack=False), "repack": 0}
    run.check_returncode()
    return {"decode_tok_s": json.loads(run.stdout)[0]["avg_ts"]}


def repacked_prompt_runs(tools: Path, gguf: Path, threads: int) -> bool:
    """Whether llama.cpp with its weights repacked (its default) processes an 8-token prompt: on a Xeon
    with AVX-512 VNNI / AMX it decoded token by token but crashed on any prompt (and in
    llama-perplexity), so there a user runs it with `--no-repack`, and the benchmark reports both."""
    cmd = [str(tools / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-p", "8", "-n", "0", "-r", "1"]
    return subprocess.run(cmd, capture_output=True, text=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: one lmforge checkpoint, JSON out
    args = parser.parse_args()
    if args.side:
        print(json.dumps(lmforge_side(args.side, args.new_tokens, args.threads)))
        return

    import torch

    from lmforge.hardware import describe, machine

    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}")
    cache = Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "bench-quantize"
    tools = llama_tools()
    if tools is None:
        sys.exit(
            "llama.cpp tools not built: scripts/build_llama_cpp.sh --targets 'llama-bench llama-perplexity llama-quantize'"
        )
    ggufs = gguf_files(tools)
    paths = {v: checkpoint(cache, v) for v in VARIANTS}
    prompts_run = {PAIRS[v]: repacked_prompt_runs(tools, ggufs[PAIRS[v]], args.threads) for v in VARIANTS}
    print("llama.cpp with repacked weights processes a prompt:", prompts_run)
    unrepacked = not all(prompts_run.values())  # then also llama.cpp as it runs prompts here
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [
                sys.executable,
                __file__,
                "--side",
                str(paths[variant]),
                "--new-tokens",
                str(args.new_tokens),
            ]
            command += ["--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            ours = json.loads(out.strip().splitlines()[-1])
            theirs = llama_bench(tools, ggufs[PAIRS[variant]], args.new_tokens, args.threads)
            print(variant, ours, PAIRS[variant], theirs, flush=True)
            runs.setdefault(f"lmforge {variant}", []).append(ours)
            runs.setdefault(f"llama.cpp {PAIRS[variant]}", []).append(theirs)
            if unrepacked:
                plain = llama_bench(tools, ggufs[PAIRS[variant]], args.new_tokens, args.threads, repack=False)
                print(f"  {PAIRS[variant]} --repack 0", plain, flush=True)
                runs.setdefault(f"llama.cpp {PAIRS[variant]} --repack 0", []).append(plain)
    median = {
        side: round(statistics.median(r["decode_tok_s"] for r in rows), 1) for side, rows in runs.items()
    }
    ratios = {
        f"{v} / {PAIRS[v]}{flag}": round(median[f"lmforge {v}"] / median[f"llama.cpp {PAIRS[v]}{flag}"], 3)
        for v in VARIANTS
        for flag in ("", " --repack 0")
        if f"llama.cpp {PAIRS[v]}{flag}" in median
    }
    for side, rate in median.items():
        print(f"{side:20} {rate:7.1f} tok/s")
    split_keys = ("step_ms", "runner_ms", "kernels_ms")
    split = {
        side: {k: round(statistics.median(r[k] for r in rows), 2) for k in split_keys if k in rows[0]}
        for side, rows in runs.items()
        if "step_ms" in rows[0]
    }
    print("ms per step (whole, AOT runner, kernel calls alone):", json.dumps(split))
    print(json.dumps(ratios, indent=1))
    result = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "side"},
        "llama_cpp_repacked_prompt_runs": prompts_run,
        "median_decode_tok_s": median,
        "ratios": ratios,
        "median_step_split_ms": split,
        "steps": {
            side: sorted({r["steps"] for r in rows}) for side, rows in runs.items() if "steps" in rows[0]
        },
        "runs": runs,
    }
    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
