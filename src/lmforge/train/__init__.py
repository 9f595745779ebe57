"""Training: one Trainer for causal-LM and masked-LM pretraining, (instruction / LoRA) fine-tuning and
the image models (CLIP, the VLM, MAE: their `Objective`s live in lmforge.multimodal).

- api.py: `pretrain`, `finetune`, `quickstart`, `merge_lora` — the functions `lmforge` exports
- config.py: their options, each declared once (`PretrainConfig`, `FinetuneConfig`, `QuickstartConfig`)
- trainer.py: `TrainConfig`, `Trainer` (accumulation, clipping, autocast, validation, exact resume),
  `Objective` (what depends on the model; `LMObjective` the default), `TrainResult`
- sources.py: a run's batches from shards, chat JSONL or text, with its validation set
- batches.py: batch sources addressed by micro-batch index (CLM windows, MLM masking, SFT examples)
- optim.py: AdamW parameter groups (no decay on norms, biases, embeddings) and LR schedules
- checkpoint.py: atomic checkpoint directories + `trainer_state.pt`, keep-last-k, resume checks
- lora.py: LoRA adapters (slices of the fused qkv projection), save / load / merge
- sft.py: chat JSONL → token ids with an assistant-only loss mask
- distributed.py: torchrun DDP / FSDP helpers; logging.py: JSONL, TensorBoard, PNG plot
"""
