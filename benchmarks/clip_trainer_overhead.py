"""Seconds per CLIP training step: the one Trainer (`train_clip` today) against the hand-written loop it
replaced (`train_clip` at commit 8f0cc43, read from git), same model (the quickstart recipe's), data,
batch size and steps, the two sides alternated in one process so a busy machine slows both alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clip_trainer_overhead.py [--steps 60] [--rounds 2]

Prints a table and writes benchmarks/results/clip_trainer_overhead.json (with the CPU and load average).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmforge import hardware
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.quickstart import RECIPE_MODEL
from lmforge.multimodal.train import ClipTrainConfig, train_clip

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "8f0cc43"


def old_train_clip():
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:src/lmforge/multimodal/train.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_clip_train.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_clip_train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_clip_train"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    old = old_train_clip()
    data = load_easy_vqa("train")
    times: dict[str, list[float]] = {"trainer": [], "old_loop": []}
    for _ in range(args.rounds):
        for side in ("old_loop", "trainer"):
            config = (old.ClipTrainConfig if side == "old_loop" else ClipTrainConfig)(
                steps=args.steps, log_every=50
            )
            fit = old.train_clip if side == "old_loop" else train_clip
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                fit(RECIPE_MODEL, config, out=Path(out) / "run", data=data, progress=False)
                times[side].append((time.perf_counter() - start) / args.steps)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "steps": args.steps,
        "rounds": args.rounds,
        "seconds_per_step": times,
        "best_seconds_per_step": best,
        "trainer_over_old": best["trainer"] / best["old_loop"],
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(),
        "hardware": hardware.describe(),
    }
    print(f"{'side':<10} {'best s/step':>12}  all rounds")
    for side, values in times.items():
        print(f"{side:<10} {best[side]:>12.3f}  {', '.join(f'{v:.3f}' for v in values)}")
    print(f"trainer / old loop: {result['trainer_over_old']:.3f}; load average {result['load_average']}")
    out = ROOT / "benchmarks" / "results" / "clip_trainer_overhead.json"
    atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
