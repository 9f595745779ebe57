"""The VLM's captions scored by CLIP models: CLIPScore (Hessel et al. 2021) of the captions a trained VLM
writes for easy-VQA's 1,000 held-out images, beside the reference captions', under one or more of our
CLIP checkpoints, with exact match, BLEU-3 and CIDEr from the same run (`evaluate_vlm`).

    python benchmarks/vlm_captions.py --vlm runs/quickstart/vlm-1/final \\
        --clip runs/quickstart/vlm-1/clip/final runs/quickstart/clip-1/final

The first CLIP is usually the VLM recipe's own first stage (its tower's contrastive partner); a CLIP from
a separate run (`lmforge quickstart --recipe clip`) is the more independent judge. Writes
benchmarks/results/vlm_captions.json with the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lmforge
from lmforge import hardware
from lmforge.io.atomic import atomic_write_text
from lmforge.multimodal.clip import CLIP
from lmforge.multimodal.data import load_easy_vqa
from lmforge.multimodal.vlm_train import evaluate_vlm

RESULTS = Path(__file__).parent / "results" / "vlm_captions.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", required=True, help="a VLM checkpoint directory")
    parser.add_argument("--clip", nargs="+", required=True, help="CLIP checkpoint directories")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    vlm = lmforge.load(args.vlm)
    test = load_easy_vqa("test")
    rows = []
    for path in args.clip:
        e = evaluate_vlm(vlm, test, samples=0, clip=CLIP.load(path))
        rows.append(
            {
                "clip": path,
                "clip_score": e.clip_score,
                "clip_score_reference": e.clip_score_reference,
                "caption_exact": e.caption_accuracy,
                "bleu3": e.bleu,
                "cider": e.cider,
                "exact_match": e.accuracy,
            }
        )
        print(
            f"{path}: CLIPScore {e.clip_score:.3f} (references {e.clip_score_reference:.3f}); captions exact "
            f"{e.caption_accuracy:.1%}, BLEU-3 {e.bleu:.1f}, CIDEr {e.cider:.2f}; exact match {e.accuracy:.1%}"
        )
    result = {"vlm": args.vlm, "images": len(test), "scores": rows, "machine": hardware.describe()}
    result["load_average"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({hardware.describe()})")


if __name__ == "__main__":
    main()
