"""What the Trainer watches each step, so trouble shows up in log.jsonl, plot.png and TensorBoard:

- the gradient norm per layer group (embeddings, each block, the final norm / head) beside the total;
- the update/weight ratio ||Δw|| / ||w|| (about 1e-3 is healthy for AdamW; far above, the lr is too
  high; far below, the layer barely learns), in total and per group;
- loss spikes: a step whose loss exceeds `spike_factor` x the running average of the recent losses;
- overfitting: validation loss rising while the training loss falls;
- on request (`monitor_activations` N), every N steps: activation RMS and max-abs per layer group
  (embedding output, each block's output, the final norm's output) and each block's mean attention
  entropy in nats (ln S for uniform attention over S keys, 0 for attention on one key), measured by an
  extra no-grad forward of the step's first micro-batch in eval mode (no dropout), so turning it on
  changes neither the training step nor its random numbers; off, nothing is hooked and nothing runs.

Non-finite losses and gradients are the Trainer's to handle (`on_nan`), since they change the run.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn


def layer_group(name: str) -> str:
    """The group of a parameter name: `block.N` for the transformer's blocks, `embed` for embeddings,
    `head` for everything after the blocks (final norm, LM / MLM head)."""
    match = re.search(r"(?:^|\.)(?:blocks|layers|h)\.(\d+)\.", name)
    if match:
        return f"block.{match.group(1)}"
    if "emb" in name:
        return "embed"
    return "head"


class Groups:
    """The trainable parameters of a model by layer group, in order of appearance."""

    def __init__(self, model: nn.Module):
        self.names: list[str] = []
        self.params: list[list[torch.Tensor]] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            group = layer_group(name)
            if group not in self.names:
                self.names.append(group)
                self.params.append([])
            self.params[self.names.index(group)].append(p)

    def grad_norms(self) -> dict[str, float]:
        """L2 norm of each group's gradient (one fused norm per group, one host sync)."""
        norms = []
        for params in self.params:
            grads = [p.grad for p in params if p.grad is not None]
            norms.append(_norm(grads) if grads else torch.zeros(()))
        values = torch.stack([n.float().cpu() for n in norms]).tolist()
        return dict(zip(self.names, values))

    def snapshot(self) -> list[list[torch.Tensor]]:
        return [[p.detach().clone() for p in params] for params in self.params]

    def update_ratios(self, before: list[list[torch.Tensor]]) -> dict[str, float]:
        """||w_after - w_before|| / ||w_before|| per group and in total ("total")."""
        updates, weights = [], []
        for params, old in zip(self.params, before):
            deltas = torch._foreach_sub([p.detach() for p in params], old)
            updates.append(_norm(deltas))
            weights.append(_norm(old))
        u = torch.stack([x.float().cpu() for x in updates])
        w = torch.stack([x.float().cpu() for x in weights])
        ratios = {name: float(a / b) if b > 0 else 0.0 for name, a, b in zip(self.names, u, w)}
        ratios["total"] = float(u.norm() / w.norm()) if w.norm() > 0 else 0.0
        return ratios


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)).float())
    # FSDP's sharded parameters give a DTensor: its full value reduces over the ranks (all of them call this)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class LossWatch:
    """Loss-spike and overfitting detection over the losses the Trainer reports."""

    def __init__(self, spike_factor: float, warmup: int = 20, decay: float = 0.9):
        self.spike_factor = spike_factor
        self.warmup = warmup
        self.decay = decay
        self.average: float | None = None
        self.seen = 0
        self.train_since_val: list[float] = []
        self.last_val: float | None = None
        self.last_train: float | None = None

    def train_step(self, loss: float) -> str | None:
        """A warning when `loss` spikes above the running average (after `warmup` steps); the spike
        itself is kept out of the average."""
        message = None
        armed = self.average is not None and self.seen >= self.warmup and self.spike_factor > 0
        if armed and loss > self.spike_factor * self.average:
            message = (
                f"loss spike: {loss:.4f} is {loss / self.average:.1f}x the running average {self.average:.4f}"
            )
        if message is None and math.isfinite(loss):
            self.average = (
                loss if self.average is None else self.decay * self.average + (1 - self.decay) * loss
            )
            self.seen += 1
        self.train_since_val.append(loss)
        return message

    def validation(self, val_loss: float) -> str | None:
        """A warning when validation loss rose since the last validation while training loss fell."""
        finite = [x for x in self.train_since_val if math.isfinite(x)]
        train = sum(finite) / len(finite) if finite else None
        self.train_since_val = []
        message = None
        known = self.last_val is not None and self.last_train is not None and train is not None
        if known and val_loss > self.last_val and train < self.last_train:
            message = (
                f"overfitting: validation loss rose {self.last_val:.4f} -> {val_loss:.4f} while training "
                f"loss fell {self.last_train:.4f} -> {train:.4f}; consider more data, dropout or stopping"
            )
        self.last_val, self.last_train = val_loss, train if train is not None else self.last_train
        return message


class ActivationStats:
    """Activation RMS / max-abs per layer group and mean attention entropy per block, of one forward.

    `measure(model, input_ids)` hooks the blocks of `model` (a Transformer, possibly wrapped: its
    `blocks` are found by name), runs the forward without gradients in eval mode and removes the hooks.
    Every statistic is reduced to a tensor on the device and moved to the host in one transfer."""

    def __init__(self, model: nn.Module):
        self.blocks: list[tuple[str, nn.Module]] = []
        self.final_norm: nn.Module | None = None
        for name, module in model.named_modules():
            match = re.search(r"(?:^|\.)(?:blocks|layers|h)\.(\d+)$", name)
            if match:
                self.blocks.append((f"block.{match.group(1)}", module))
            elif re.search(r"(?:^|\.)norm$", name) and self.final_norm is None:
                self.final_norm = module
        if not self.blocks:
            raise ValueError("activation statistics need a model with numbered blocks (blocks.N)")

    def measure(self, model: nn.Module, input_ids: torch.Tensor) -> dict[str, float]:
        values: dict[str, torch.Tensor] = {}

        def activations(group: str, h: torch.Tensor) -> None:
            h = h.detach().float()
            values[f"act_rms/{group}"] = h.pow(2).mean().sqrt()
            values[f"act_max/{group}"] = h.abs().amax()

        def entropy(group: str, attn: nn.Module, args: tuple) -> None:
            x, rope, mask = args[:3]
            p = attn.probs(x, rope, mask)  # (B, nh, T, S)
            values[f"attn_entropy/{group}"] = -torch.special.xlogy(p, p).sum(-1).mean()

        hooks = [self.blocks[0][1].register_forward_pre_hook(lambda m, args: activations("embed", args[0]))]
        for group, block in self.blocks:
            hooks.append(block.register_forward_hook(lambda m, args, out, g=group: activations(g, out)))
            attn = getattr(block, "attn", None)
            if attn is not None and hasattr(attn, "probs"):
                hooks.append(attn.register_forward_pre_hook(lambda m, args, g=group: entropy(g, m, args)))
        if self.final_norm is not None:
            hooks.append(self.final_norm.register_forward_hook(lambda m, args, out: activations("head", out)))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(input_ids)
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
        host = torch.stack(list(values.values())).cpu().tolist()
        return dict(zip(values, host))
