"""What lmforge's own decode kernels (`lmforge/quant/native.c`) buy over torch's, on SmolLM2 int8 and int4.

Each side is a fresh process loading the same checkpoint (`lmforge quantize smollm2 --scheme int8`, and
`--scheme int4 --group-size 64`, made once into the lmforge cache): with the native kernels (the default
where they build and measure faster) and with `LMFORGE_NATIVE_KERNELS=0` (torch's `_weight_int8pack_mm` /
`_weight_int4pack_mm_for_cpu`). The two sides alternate for `--rounds` rounds; each measures greedy decode
tokens/s over `--new-tokens` tokens after a 16-token prompt (the one-token call's time subtracted, best of
2) with eager steps (the default path) and compiled ones, and the kernel paths its modules took. Prints
the CPU model and flags, saves benchmarks/results/native_kernels.json.

    python benchmarks/native_kernels.py [--threads 2] [--rounds 2] [--new-tokens 128] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# benchmarks/quantize.py: the same checkpoints, decode timing and kernel paths
from quantize import checkpoint, decode_rate, kernel_paths

RESULTS = Path(__file__).parent / "results" / "native_kernels.json"
SCHEMES = ("int8", "int4")  # benchmarks/quantize.py's variants: int4 in groups of 64


def measure(path: str, new_tokens: int, threads: int) -> dict:
    """One side, in this process: decode tokens/s eager and compiled, and the paths the modules took."""
    import torch

    import lmforge

    torch.set_num_threads(threads)
    lm = lmforge.load(path, compile="eager")
    prompt = lm.tokenizer.encode("The island was quiet when the ship came in, and the sailors")[:16]
    row: dict = {"paths": kernel_paths(lm)}
    for mode in ("eager", "compile"):
        row[f"decode_tok_s_{mode}"] = decode_rate(lm, prompt, new_tokens, mode)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: measure one checkpoint, print JSON
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.new_tokens, args.threads)))
        return

    from lmforge.hardware import describe, machine

    print(f"machine: {describe()}")
    runs: dict[str, list[dict]] = {}
    cache = Path(os.environ.get("LMFORGE_CACHE", "~/.cache/lmforge")).expanduser() / "bench-quantize"
    for scheme in SCHEMES:
        path = checkpoint(cache, scheme)
        for _ in range(args.rounds):
            for kernels, flag in (("native", "1"), ("torch", "0")):
                command = [
                    sys.executable,
                    __file__,
                    "--side",
                    str(path),
                    "--new-tokens",
                    str(args.new_tokens),
                ]
                command += ["--threads", str(args.threads)]
                env = {**os.environ, "LMFORGE_NATIVE_KERNELS": flag}
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                print(scheme, kernels, row, flush=True)
                runs.setdefault(f"{scheme} {kernels}", []).append(row)
    summary = {
        side: {
            "paths": rows[0]["paths"],
            **{k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0] if k.startswith("decode")},
        }
        for side, rows in runs.items()
    }
    for side, row in summary.items():
        print(
            f"{side:14} eager {row['decode_tok_s_eager']:6.1f}  compiled {row['decode_tok_s_compile']:6.1f}  {row['paths']}"
        )
    result = {
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "median": summary,
        "runs": runs,
    }
    args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
