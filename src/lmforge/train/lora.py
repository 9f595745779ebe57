"""LoRA (Hu et al., 2021): train a low-rank update W + (alpha / r)·B·A beside each frozen weight W.

A `LoRALinear` wraps an `nn.Linear` and adds one (A, B) pair per adapted output slice, so the fused
q|k|v projection can be adapted on q and v only, exactly as LoRA on separate q_proj / v_proj would.
B starts at zero, so the adapted model starts equal to the base model. Adapters are saved on their own
(`adapter_model.safetensors` + `adapter_config.json`, a few MB) and `merge_lora` folds them into plain
linear layers, giving an ordinary checkpoint with the same logits.

Targets: `q`, `k`, `v` (slices of `attn.qkv`), `qkv` (all of it), `o` (`attn.proj`), `mlp`
(`mlp.fc` and `mlp.proj`), or any glob over module names (`blocks.*.mlp.fc`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.io.atomic import atomic_dir
from lmforge.model.swap import linear_layers, matches, set_module, swap_modules
from lmforge.options import check_types, option

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SHORTHANDS = ("q", "k", "v", "qkv", "o", "mlp")


@dataclass
class LoRAConfig:
    """An adapter's shape; saved as adapter_config.json beside its weights."""

    rank: int = option(8, "LoRA rank r")
    alpha: float = option(16.0, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = option(0.0, "dropout on the LoRA input")
    targets: list[str] = option(
        default_factory=lambda: ["q", "v"],
        help="modules to adapt: q k v qkv o mlp, or globs over module names (blocks.*.mlp.fc)",
    )

    def __post_init__(self) -> None:
        check_types(self, "LoRA options")
        if self.rank <= 0:
            raise LMForgeError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LMForgeError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise LMForgeError("LoRA needs at least one target module (e.g. q v)")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Module):
    """`base(x)` plus, for each output slice [s, e), `scaling · B_i (A_i dropout(x))` in that slice."""

    def __init__(self, base: nn.Linear, slices: list[tuple[int, int]], config: LoRAConfig):
        super().__init__()
        self.base = base
        self.slices = [tuple(s) for s in slices]
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.ParameterList(
            nn.Parameter(torch.empty(config.rank, base.in_features, **factory)) for _ in self.slices
        )
        self.lora_B = nn.ParameterList(
            nn.Parameter(torch.zeros(e - s, config.rank, **factory)) for s, e in self.slices
        )
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear (and PEFT) initialise A
        whole = self.slices == [(0, base.out_features)]
        index = torch.cat([torch.arange(s, e) for s, e in self.slices]) if not whole else None
        self.register_buffer("_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = self.dropout(x)
        delta = torch.cat([(h @ a.t()) @ b.t() for a, b in zip(self.lora_A, self.lora_B)], dim=-1)
        delta = delta * self.scaling
        if self._index is None:
            return out + delta
        return out.index_add(-1, self._index.to(out.device), delta.to(out.dtype))

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain linear layer with the update folded into its weight."""
        weight = self.base.weight.detach().clone()
        for (s, e), a, b in zip(self.slices, self.lora_A, self.lora_B):
            weight[s:e] += (self.scaling * (b.float() @ a.float())).to(weight.dtype)
        linear = nn.Linear(
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        linear.weight.copy_(weight)
        if self.base.bias is not None:
            linear.bias.copy_(self.base.bias)
        linear.weight.requires_grad_(self.base.weight.requires_grad)
        return linear


def _qkv_slices(model: nn.Module, parts: set[str]) -> list[tuple[int, int]]:
    config = model.config
    q = config.n_head * config.head_dim
    kv = config.n_kv_head * config.head_dim
    spans = {"q": (0, q), "k": (q, q + kv), "v": (q + kv, q + 2 * kv)}
    return [spans[p] for p in ("q", "k", "v") if p in parts]


def resolve_targets(model: nn.Module, targets: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Module name → output slices to adapt, from shorthands and globs."""
    chosen: dict[str, list[tuple[int, int]]] = {}
    wanted = set(targets)
    globs = [t for t in targets if t not in SHORTHANDS]
    matched_globs: set[str] = set()
    for name, module in linear_layers(model).items():
        whole = [(0, module.out_features)]
        hit = [g for g in globs if matches(name, g)]
        matched_globs.update(hit)
        whole_hit = (
            bool(hit)
            or (name.endswith("attn.qkv") and "qkv" in wanted)
            or (name.endswith("attn.proj") and "o" in wanted)
            or (name.endswith(("mlp.fc", "mlp.proj")) and "mlp" in wanted)
        )
        if whole_hit:
            chosen[name] = whole
        elif name.endswith("attn.qkv") and wanted & {"q", "k", "v"}:
            chosen[name] = _qkv_slices(model, wanted)
    unmatched = set(globs) - matched_globs
    if unmatched or not chosen:
        raise LMForgeError(
            f"LoRA targets {sorted(unmatched or wanted)} match no linear layer; use q, k, v, qkv, o, mlp "
            "or a glob over module names such as 'blocks.*.mlp.fc'"
        )
    return chosen


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freeze every parameter and wrap the targeted linear layers; returns the wrapped names."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise LMForgeError("this model already has LoRA adapters; merge them first")
    plan = resolve_targets(model, config.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    return swap_modules(model, plan, lambda name, linear: LoRALinear(linear, plan[name], config))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def save_adapter(
    model: nn.Module, path: str | Path, config: LoRAConfig, base_model: str | None = None
) -> Path:
    """Write the adapter weights and config (atomically, as one directory)."""
    if not has_lora(model):
        raise LMForgeError("the model has no LoRA adapters to save")
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_adapter_files(tmp, model, config, base_model)
    return path


def write_adapter_files(
    directory: Path, model: nn.Module, config: LoRAConfig, base_model: str | None
) -> None:
    """Adapter files into an existing (temporary) directory."""
    from safetensors.torch import save_file

    modules = {n: [list(s) for s in m.slices] for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    state = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}
    save_file(state, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    meta = {**asdict(config), "base_model": base_model, "modules": modules}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))


def read_adapter_config(path: str | Path) -> tuple[LoRAConfig, dict]:
    path = Path(path)
    cfg_file = path / ADAPTER_CONFIG
    if not cfg_file.is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise LMForgeError(
            f"{path}: not a LoRA adapter directory (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
        )
    meta = json.loads(cfg_file.read_text())
    config = LoRAConfig(
        rank=meta["rank"], alpha=meta["alpha"], dropout=meta["dropout"], targets=meta["targets"]
    )
    return config, meta


def load_adapter(model: nn.Module, path: str | Path) -> LoRAConfig:
    """Wrap `model` as the adapter says (unless already wrapped) and load its weights."""
    from safetensors.torch import load_file

    config, meta = read_adapter_config(path)
    if not has_lora(model):
        apply_lora(model, config)
    names = {n: [list(s) for s in m.slices] for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if names != meta["modules"]:
        raise LMForgeError(f"{path}: the adapter was made for other modules or another model shape")
    state = load_file(str(Path(path) / ADAPTER_WEIGHTS))
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        if name not in params or params[name].shape != tensor.shape:
            raise LMForgeError(f"{path}: adapter tensor '{name}' does not fit this model")
        with torch.no_grad():
            params[name].copy_(tensor)
    return config


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged nn.Linear, in place; returns the model."""
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not wrapped:
        raise LMForgeError("the model has no LoRA adapters to merge")
    for name, module in wrapped:
        set_module(model, name, module.merged())
    return model
