"""Training throughput with and without `lmforge.keep_freed_memory()` (glibc malloc keeping freed memory).

Each run is a fresh process training the quickstart's default model (its `LM_BUDGETS` row for the default
budget: 4 layers x 128, RoPE, Muon, batch 32 x 128) with the Trainer for `--steps` steps on random tokens
(throughput only), with LMFORGE_KEEP_FREED_MEMORY=1 or 0; the two settings alternate `--repeats` times so
a drifting machine touches both alike. Reports tokens/s over the steps, minor page faults and peak RSS
of the process.

    python benchmarks/allocator.py                  # 40 steps, 2 alternations
    python benchmarks/allocator.py --steps 60 --repeats 3

Prints a Markdown table; writes benchmarks/results/allocator.json with the CPU model and its flags.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def one_run(steps: int, out: str) -> dict:
    """In this process: build the model, train `steps` steps, report what it cost."""
    import dataclasses

    import torch

    from lmforge.train.api import _new_model
    from lmforge.train.batches import CLMBatches
    from lmforge.train.config import QuickstartConfig
    from lmforge.train.trainer import Trainer

    cfg = QuickstartConfig().for_budget()
    model = _new_model(cfg.model_config(vocab_size=cfg.vocab_size, max_seq_len=cfg.seq_len), cfg.seed)
    tokens = torch.randint(0, cfg.vocab_size, (2_000_000,), generator=torch.Generator().manual_seed(0))
    batches = CLMBatches(tokens, cfg.batch_size, cfg.seq_len, cfg.seed)
    train = dataclasses.replace(cfg.training(), steps=steps, eval_every=0, progress=False)
    trainer = Trainer(model, train, batches, out)  # applies the setting unless it is turned off
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "tokens_per_s": steps * cfg.batch_size * cfg.seq_len / seconds,
        "minor_faults": usage.ru_minflt - faults,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "batch": f"{cfg.batch_size}x{cfg.seq_len}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # internal: one run
    args = parser.parse_args()
    if args.run:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(one_run(args.steps, str(Path(out) / "run"))))
        return

    from lmforge import hardware

    print(hardware.describe())
    load_before = os.getloadavg()
    rows = []
    print("| malloc | tokens/s | minor page faults | peak RSS |\n|---|---|---|---|")
    for _ in range(args.repeats):
        for keep in ("1", "0"):
            env = {**os.environ, "LMFORGE_KEEP_FREED_MEMORY": keep}
            cmd = [sys.executable, __file__, "--run", "--steps", str(args.steps)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = {"keep_freed_memory": keep == "1", **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            label = "keeps freed memory" if row["keep_freed_memory"] else "as it comes"
            print(
                f"| {label} | {row['tokens_per_s']:,.0f} | {row['minor_faults']:,} | "
                f"{row['peak_rss_mb']:,.0f} MB |",
                flush=True,
            )
    record = {
        "command": f"python benchmarks/allocator.py --steps {args.steps} --repeats {args.repeats}",
        "machine": hardware.machine(),
        "load_average": [load_before, os.getloadavg()],
        "steps": args.steps,
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "allocator.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {RESULTS / 'allocator.json'}")


if __name__ == "__main__":
    main()
