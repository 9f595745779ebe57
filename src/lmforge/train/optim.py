"""AdamW (or Muon for the hidden matrices) with decoupled weight decay on matrices only, and the
learning-rate schedules.

Weight decay pulls weights toward zero; it helps the large matrices (attention, MLP) and hurts the
parameters that set a scale or an offset, so norms, biases and embeddings get none — the split
nanoGPT and most LLM recipes use. The schedule is linear warmup, then cosine / linear / constant decay
to `min_lr`; it is a pure function of the step, so resuming needs only the step number.

`optimizer="muon"` gives the hidden weight matrices (attention and MLP projections) to PyTorch's Muon
(momentum, then the update orthogonalised by Newton–Schulz iterations) and everything else (embeddings,
the output head, norms, biases) to AdamW, the split of the modded-nanogpt speedruns and Moonlight.
Muon's step is scaled to AdamW's update RMS (Moonlight's 0.2·√max(rows, cols)), so one learning rate
and weight decay serve both. The Newton–Schulz iterations run in the precision `--precision auto` picks
for the parameters' device: PyTorch's Muon always iterates in bfloat16, which a CPU without native bf16
emulates — on an AMD Zen 3, 1.4 s per 384 x 1536 matrix, 36 s of every gpt-nano step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.errors import LMForgeError

Decay = Literal["cosine", "linear", "constant"]
OptimizerName = Literal["adamw", "muon"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: `decay` (weight matrices of linear layers) and `no_decay` (everything else:
    norm weights, biases, token/position/type embeddings). Frozen parameters are left out; a tied
    parameter appears once (named by its first owner, the embedding)."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    for name, p in model.named_parameters():  # named_parameters() skips tied duplicates
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embedding_params:
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    name: OptimizerName = "adamw",
) -> torch.optim.AdamW | MuonAdamW:
    """AdamW over `param_groups` (the fused CUDA kernel when every parameter is on a GPU), or with
    `name="muon"` Muon for the hidden matrices and AdamW for the rest."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise LMForgeError("the model has no trainable parameters (all frozen?)")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    adamw = {"lr": lr, "betas": tuple(betas), "eps": eps, "fused": on_cuda or None}
    if name == "adamw":
        return torch.optim.AdamW(groups, **adamw)
    if name != "muon":
        raise LMForgeError(f"unknown optimizer '{name}'; use adamw or muon")
    head = getattr(model, "lm_head", None)
    outside = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    outside |= {id(head.weight)} if isinstance(head, nn.Linear) else set()
    muon_group = {"params": [], "names": [], "weight_decay": weight_decay}
    rest = []
    for group in groups:
        kept = {"params": [], "names": [], "weight_decay": group["weight_decay"]}
        for p, n in zip(group["params"], group["names"]):  # hidden matrices are all in the decay group
            target = muon_group if p.dim() == 2 and id(p) not in outside else kept
            target["params"].append(p)
            target["names"].append(n)
        rest += [kept] if kept["params"] else []
    if not muon_group["params"]:
        return torch.optim.AdamW(groups, **adamw)
    muon = Muon([muon_group], lr=lr, adjust_lr_fn="match_rms_adamw")
    return MuonAdamW(muon, torch.optim.AdamW(rest, **adamw) if rest else None)


def newton_schulz(
    g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """The quintic Newton–Schulz iteration in `dtype`: g scaled to spectral norm <= 1, then `steps` of
    X <- aX + (bA + cA²)X with A = XXᵀ, which pushes every singular value toward 1 (an approximate UVᵀ).
    Iterates on the wide orientation, so A is the smaller Gram matrix."""
    a, b, c = coefficients
    tall = g.size(0) > g.size(1)
    x = g.to(dtype).T if tall else g.to(dtype)
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """PyTorch's Muon (same options, groups and `momentum_buffer` state, so either loads the other's
    state dict) with the Newton–Schulz iterations in `ns_dtype`: by default the precision
    `choose_precision("auto")` picks for the parameters' device, bfloat16 only where it runs natively
    and fast."""

    def __init__(self, params, *args, ns_dtype: torch.dtype | None = None, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        if ns_dtype is None:
            from lmforge.hardware import PRECISION_DTYPES, choose_precision

            device = self.param_groups[0]["params"][0].device
            ns_dtype = PRECISION_DTYPES[choose_precision("auto", device).precision]
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype
                )
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * _rms_ratio(group["adjust_lr_fn"], p.shape))


def _rms_ratio(rule: str | None, shape: torch.Size) -> float:
    """How Muon's orthogonalised step is scaled: Moonlight's 0.2·√max(rows, cols) to match AdamW's
    update RMS, or Keller Jordan's original √max(1, rows/cols)."""
    rows, cols = shape[:2]
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


class MuonAdamW:
    """Muon for the hidden matrices and AdamW for the other parameters, driven as one optimizer:
    `param_groups` lists both (the schedule sets every group's rate), `step`, `zero_grad` and one
    state dict."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer | None):
        self.optimizers = [o for o in (muon, adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def step(self, closure: None = None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon_adamw": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if "muon_adamw" not in state or len(state["muon_adamw"]) != len(self.optimizers):
            raise LMForgeError(
                "the checkpoint's optimizer state is not Muon's; resume with --optimizer adamw"
            )
        for optimizer, part in zip(self.optimizers, state["muon_adamw"]):
            optimizer.load_state_dict(part)


@dataclass
class LRSchedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then `decay` to `min_lr` at `total_steps`.

    `lr_at(step)` is the rate used for optimizer step `step` (0-based); after `total_steps` it stays at
    `min_lr`. `constant` keeps `lr` after warmup.
    """

    lr: float
    total_steps: int
    warmup_steps: int = 0
    decay: Decay = "cosine"
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise LMForgeError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise LMForgeError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.total_steps <= 0 or not 0 <= self.warmup_steps <= self.total_steps:
            raise LMForgeError(
                f"need 0 <= warmup_steps ({self.warmup_steps}) <= total steps ({self.total_steps}), total > 0"
            )
        if self.decay not in ("cosine", "linear", "constant"):
            raise LMForgeError(f"unknown schedule '{self.decay}'; use cosine, linear or constant")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.lr
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span > 0 else 1.0
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.min_lr + (self.lr - self.min_lr) * factor

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's rate for `step`; returns it."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
