"""Training commands: `lmforge pretrain`, `lmforge finetune`, `lmforge lora merge`, `lmforge quickstart`.

Each is a thin layer over the API function of the same name (`lmforge.pretrain`, `lmforge.finetune`,
`lmforge.merge_lora`, `lmforge.quickstart`): its options are the fields of the config class
(`PretrainConfig`, `FinetuneConfig`, `QuickstartConfig`), `--config run.yaml` holds the same keys, and
only the options a user types are passed on. All of them run unchanged under
`torchrun --nproc-per-node N`.
"""

from __future__ import annotations

from typing import Any

import lmforge
from lmforge.options import with_options


@with_options(lmforge.PretrainConfig)
def pretrain(data: str, *, out: str, **options: Any) -> lmforge.TrainResult:
    """Pretrain from scratch: a transformer on prepared shards, next-token (clm) or masked (mlm); or an
    image model on an image dataset: CLIP (clip), the VLM (vlm) or a masked autoencoder (mae).

    Writes OUT/log.jsonl, OUT/plot.png, OUT/checkpoints/step-N (with trainer state), OUT/best and
    OUT/final (a checkpoint directory `lmforge.load` reads; for clip/mae, `CLIP.load` /
    `MaskedAutoencoder.load`). `--resume` continues OUT exactly.

    Args:
        data: directory written by `lmforge prepare`; with --objective clip/vlm/mae an image dataset:
            easy-vqa or fashion-mnist.
        out: run directory.
    """
    result = lmforge.pretrain(data, out=out, **options)
    _report(result)
    return result


@with_options(lmforge.FinetuneConfig)
def finetune(*, model: str, out: str, **options: Any) -> lmforge.TrainResult:
    """Fine-tune a loadable model: instruction tuning on chat JSONL, or continued pretraining on text.

    Full fine-tuning or LoRA (`--lora`); LoRA runs save only the adapter (OUT/final/adapter_model.safetensors)
    and, with `--merge`, also OUT/merged, a plain checkpoint with the adapter folded in.

    Args:
        model: asset name (smollm2), checkpoint directory or .gguf file.
        out: run directory.
    """
    result = lmforge.finetune(model, out=out, **options)
    _report(result)
    return result


def lora_merge(*, model: str, adapter: str, out: str) -> str:
    """Merge a LoRA adapter into its base model and write a plain checkpoint directory.

    Args:
        model: the base model the adapter was trained on (asset name, directory or .gguf).
        adapter: adapter directory (OUT/final of a `finetune --lora` run).
        out: output checkpoint directory.
    """
    path = lmforge.merge_lora(model, adapter, out)
    print(f"wrote {path} ({model} + {adapter})")
    return str(path)


@with_options(lmforge.QuickstartConfig)
def quickstart(
    **options: Any,
) -> lmforge.QuickstartResult | lmforge.ClipQuickstartResult | lmforge.VLMQuickstartResult:
    """Train a BPE tokenizer on your text (default: Shakespeare), pretrain a small GPT for a few
    minutes, report bits/byte over the whole validation text and print samples. `--recipe clip`
    instead trains an image–text (CLIP) model on easy-VQA, evaluates it zero-shot on the test split,
    draws OUT/clip-N/zero_shot_grid.png and prints `accuracy N%` last (`--dataset fashion-mnist`:
    zero-shot on its 10,000 test images, with linear probes beside it). `--recipe vlm` trains a
    vision-language model to answer easy-VQA questions, shows sample answers and prints the held-out
    exact-match `accuracy N%` last.

    `--text FILE...` trains on your files, `--val-text FILE` is scored (every byte once); without it
    the end of the text is held out. Re-running reuses OUT/tokenizer and OUT/data while the text,
    vocabulary and seed are the same, and trains a new OUT/run-N.
    """
    result = lmforge.quickstart(**options)
    if isinstance(result, lmforge.ClipQuickstartResult):
        print("\n".join(result.samples))
        print(f"done in {result.total_s / 60:.1f} min; model: {result.final}; grid: {result.grid}")
        print(f"accuracy {result.accuracy:.1%} ({result.accuracy_note})")
        return result
    if isinstance(result, lmforge.VLMQuickstartResult):
        print("\n".join(result.samples))
        print(f"done in {result.total_s / 60:.1f} min; model: {result.final} (lmforge generate --image)")
        print(f"accuracy {result.accuracy:.1%} (exact match, held-out test questions)")
        return result
    for i, text in enumerate(result.samples):
        print(f"--- sample {i + 1} ---\n{text}\n", flush=True)
    print(
        f"done in {result.total_s / 60:.1f} min; model: {result.final} "
        f"(lmforge generate --model {result.final})"
    )
    return result


def _report(result: lmforge.TrainResult) -> None:
    if result.rank != 0:
        return
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.val.items() if isinstance(v, float))
    print(
        f"done: {result.steps} steps, train loss {result.train_loss:.4f}"
        + (f"; validation {shown}" if shown else "")
    )
    print(f"run directory: {result.run_dir}; model: {result.final}")
    if result.merged is not None:
        print(f"merged checkpoint: {result.merged}")
    if result.quantized is not None:
        print(f"quantized checkpoint (QAT): {result.quantized}")


COMMANDS = {"pretrain": pretrain, "finetune": finetune, "lora merge": lora_merge, "quickstart": quickstart}
