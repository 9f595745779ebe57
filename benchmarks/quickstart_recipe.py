"""One equal-time quickstart run on the nanoGPT split with some options changed: how the quickstart's
per-budget settings (`LM_BUDGETS` in src/lmforge/train/config.py) were chosen.

The split is benchmarks/nanogpt.py's (the 42 Shakespeare texts, train = first 90%, validation = last
10%, scored over every byte); run `python benchmarks/nanogpt.py --iters 1` once to write it. Each call
trains one quickstart for MINUTES with the given options (JSON values) and appends a line to
benchmarks/results/quickstart_recipe.jsonl:

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/quickstart_recipe.py muon 2 optimizer='"muon"' \
        preset='"gpt-tiny"' d_model=128 lr=3e-3 warmup_steps=100 model_overrides='{"attn_backend": "math"}'

Compare only lines with the same minutes and threads, run one at a time on a quiet core.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import lmforge
from lmforge import hardware

RESULTS = Path(__file__).parent / "results" / "quickstart_recipe.jsonl"


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, minutes = sys.argv[1], float(sys.argv[2])
    options = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
    work = Path(os.environ.get("WORK", "runs/bench-nanogpt"))
    load = os.getloadavg()[0]
    result = lmforge.quickstart(
        text=[str(work / "train.txt")],
        val_text=work / "val.txt",
        minutes=minutes,
        out=work / f"recipe-{options.get('vocab_size', 4096)}",
        samples=0,
        progress=False,
        **options,
    )
    line = {
        "name": name,
        "minutes": minutes,
        "options": options,
        "steps": result.steps,
        "bits_per_byte": round(result.val["bits_per_byte"], 4),
        "train_s": round(result.elapsed_s, 1),
        "threads": torch.get_num_threads(),
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
        "cpu": hardware.describe(),
    }
    print(json.dumps(line), flush=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
