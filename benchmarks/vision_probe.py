"""Linear-probe accuracy on Fashion-MNIST's 10,000 test images: what do frozen image features add?

Rows (every probe: `lmforge.multimodal.probe.linear_probe`, multinomial logistic regression on
standardised features, C chosen on a seeded 10% validation slice of the 60,000 training images, refitted
on all of them, scored once on the test split):
  (a) raw pixels (784 dims);
  (b) a randomly initialised ViT (1x28 px, 4x4 patches, 3 blocks, 64 wide): [CLS] and mean-pooled states;
  (c) the same ViT after MAE pretraining on the train split (`lmforge pretrain fashion-mnist --objective
      mae` through the one Trainer): [CLS] and mean-pooled states;
  (d) the CLIP image tower of `lmforge quickstart --recipe clip --dataset fashion-mnist` ([CLS] state,
      before the projection), with its zero-shot accuracy (6-prompt ensemble).

    python benchmarks/vision_probe.py                            # MAE 5 min + the CLIP recipe (9 min)
    python benchmarks/vision_probe.py --clip runs/quickstart/clip-1/final   # reuse a trained recipe model
    python benchmarks/vision_probe.py --mae-minutes 1 --clip-minutes 1      # a quick look

Prints a Markdown table and writes benchmarks/results/vision_probe.json with the CPU, the threads and the
load average (the machine is shared: time budgets buy fewer steps when it is busy; the step counts are
recorded).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lmforge
from lmforge import hardware
from lmforge.io.atomic import atomic_write_text
from lmforge.model.vision import VisionConfig, VisionTransformer
from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.data import load_fashion_mnist
from lmforge.multimodal.evaluate import evaluate_classes
from lmforge.multimodal.mae import MAEConfig, load_vision_encoder
from lmforge.multimodal.probe import image_features, linear_probe, pixel_features
from lmforge.multimodal.quickstart import clip_quickstart

RESULTS = Path(__file__).parent / "results"
VIT = {"image_size": 28, "patch_size": 4, "channels": 1, "stem": "patch", "vision_d_model": 64}
VIT.update(vision_n_layer=3, vision_n_head=4)


def probe_row(name: str, train_x, test_x, train, test, seed: int, **extra) -> dict:
    result = linear_probe(train_x, train.labels, test_x, test.labels, seed=seed)
    row = {"features": name, "probe_accuracy": result.accuracy, "dims": result.features, "C": result.C}
    row.update(val_accuracy=result.val_accuracy, probe_seconds=round(result.seconds, 1), **extra)
    print(
        f"  {name}: {result.accuracy:.1%} (C={result.C:g}, {result.seconds:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return row


@torch.no_grad()
def both_pools(vit: VisionTransformer, images: torch.Tensor, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """`image_features` with pool cls and mean from one pass over the images."""
    vit.eval()
    cls, mean = [], []
    for i in range(0, images.shape[0], batch_size):
        h = vit.hidden_states(images[i : i + batch_size].float() / 255.0)
        cls.append(h[:, 0])
        mean.append(h[:, 1:].mean(1))
    return {"cls": torch.cat(cls).numpy(), "mean": torch.cat(mean).numpy()}


def vit_rows(label: str, vit: VisionTransformer, train, test, seed: int, **extra) -> list[dict]:
    tx, vx = both_pools(vit, train.images), both_pools(vit, test.images)
    assert np.allclose(vx["cls"][:8], image_features(vit, test.images[:8]), atol=1e-5)
    return [probe_row(f"{label} ({pool})", tx[pool], vx[pool], train, test, seed, **extra) for pool in tx]


def train_mae(minutes: float, out: Path, seed: int) -> tuple[Path, dict]:
    """MAE pretraining through `lmforge.pretrain` (the one Trainer); the encoder's checkpoint dir."""
    overrides = {**VIT, **dataclasses.asdict(MAEConfig())}
    result = lmforge.pretrain(
        "fashion-mnist",
        objective="mae",
        out=out,
        model_overrides=overrides,
        steps=100_000,
        max_minutes=minutes,
        batch_size=256,
        lr=1.5e-3,
        warmup_steps=100,
        weight_decay=0.05,
        beta2=0.95,
        flips=False,
        # fp32: at this size bf16 autocast is slower on this CPU (738 vs 475 img/s, batch 256, 1 thread)
        precision="fp32",
        eval_every=500,
        seed=seed,
        progress=True,
    )
    return Path(result.final), {"steps": result.steps, "train_loss": result.train_loss, "val": result.val}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mae-minutes", type=float, default=5.0)
    parser.add_argument("--clip-minutes", type=float, default=9.0)
    parser.add_argument("--clip", type=Path, default=None, help="a trained recipe CLIP (skips training)")
    parser.add_argument("--work", type=Path, default=Path("runs/vision_probe"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start, load_start = time.perf_counter(), os.getloadavg()
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    rows = [
        probe_row("(a) raw pixels", pixel_features(train.images), pixel_features(test.images), train, test, 0)
    ]

    torch.manual_seed(args.seed)
    rows += vit_rows("(b) random ViT", VisionTransformer(VisionConfig(**VIT)), train, test, args.seed)

    t = time.perf_counter()
    mae_dir, mae_run = train_mae(args.mae_minutes, args.work / f"mae-{time.strftime('%H%M%S')}", args.seed)
    mae_run["minutes"] = round((time.perf_counter() - t) / 60, 2)
    rows += vit_rows(
        "(c) MAE-pretrained ViT", load_vision_encoder(mae_dir), train, test, args.seed, mae=mae_run
    )

    t = time.perf_counter()
    if args.clip is None:
        run = clip_quickstart(
            args.work, seed=args.seed, minutes=args.clip_minutes, progress=True, dataset="fashion-mnist"
        )
        clip, evaluation = run.clip, run.evaluation
        clip_run = {"steps": run.steps, "minutes": round(run.train_s / 60, 2), "run_dir": str(run.run_dir)}
    else:
        clip = CLIP.load(args.clip)
        evaluation = evaluate_classes(clip, train, test, pixel_baseline=False, seed=args.seed)
        clip_run = {"checkpoint": str(args.clip)}
    row = {"features": "(d) CLIP image tower (cls)", "probe_accuracy": evaluation.probe.accuracy}
    row.update(
        dims=evaluation.probe.features, C=evaluation.probe.C, val_accuracy=evaluation.probe.val_accuracy
    )
    row.update(zero_shot=evaluation.zero_shot, zero_shot_one_prompt=evaluation.single_prompt, clip=clip_run)
    row["parameters"] = sum(p.numel() for p in clip.model.visual.parameters())
    rows.append(row)

    print("\n| features | linear probe | zero-shot |\n|---|---|---|")
    for r in rows:
        zs = f"{r['zero_shot']:.1%}" if "zero_shot" in r else "–"
        print(f"| {r['features']} | {r['probe_accuracy']:.1%} | {zs} |")
    result = {
        "benchmark": "vision_probe",
        "command": "python " + " ".join(sys.argv),
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist): 60,000 train / 10,000 test",
        "probe": "multinomial logistic regression (scikit-learn lbfgs, max_iter 100) on standardised "
        "features; C from {0.01, 0.1, 1} on a seeded 10% validation slice of train; refit on all of train",
        "vit": VIT,
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "hardware": hardware.describe(),
        "threads": torch.get_num_threads(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "vision_probe.json", json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'vision_probe.json'}")


if __name__ == "__main__":
    main()
