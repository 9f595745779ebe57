"""The checkpoint directory: config.json + model.safetensors (+ shards) + tokenizer + generation config.

Reading accepts what Hugging Face writes (safetensors, sharded or not; `pytorch_model.bin` only with
`weights_only=True`) and what we write. Writing produces a directory Hugging Face loads unchanged for
the families it can express (HF tensor names and config fields) and always adds an `lmforge` block
with our full ModelConfig, so any architecture round-trips exactly. Writes go to a temporary directory
that is renamed into place at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LMForgeError
from lmforge.io import hf
from lmforge.io.atomic import atomic_dir
from lmforge.model import huge_pages

Getter = Callable[[str], torch.Tensor]
MAX_SHARD_BYTES = 2 * 1024**3


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LMForgeError(f"{path}: not valid JSON ({exc})") from None


def read_config(path: Path) -> tuple[ModelConfig, str]:
    """(config, weight naming) from a checkpoint dir's config.json; naming is 'hf' or 'lmforge'."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise LMForgeError(f"{path}: no config.json; expected a Hugging Face or lmforge checkpoint directory")
    cfg = _read_json(cfg_path)
    block = cfg.get("lmforge")
    if block:
        return ModelConfig.from_dict(block["config"]), block.get("weight_names", "hf")
    return hf.config_from_hf(cfg), "hf"


def read_quantization(path: Path) -> dict[str, Any] | None:
    """The `lmforge.quantization` block of a checkpoint's config.json (scheme, method, group size,
    which layers), or None for a float checkpoint."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        return None
    return (_read_json(cfg_path).get("lmforge") or {}).get("quantization")


def _safetensors_getter(files: list[Path]) -> tuple[list[str], Getter]:
    from safetensors import SafetensorError, safe_open

    where = {}  # tensor name -> open file handle
    for f in files:
        if not f.is_file():
            raise LMForgeError(f"weights file missing: {f}")
        try:
            h = safe_open(str(f), framework="pt")
            for name in h.keys():  # noqa: SIM118 (safe_open has no __iter__)
                where[name] = h
        except (SafetensorError, OSError, ValueError) as exc:
            raise LMForgeError(f"{f}: corrupt or truncated safetensors file ({exc})") from None

    def get(name: str) -> torch.Tensor:
        try:
            return where[name].get_tensor(name)
        except Exception as exc:
            raise LMForgeError(
                f"could not read tensor '{name}' ({exc}); the weights file may be truncated"
            ) from None

    return list(where), get


def _torch_bin_getter(files: list[Path]) -> tuple[list[str], Getter]:
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        except Exception as exc:
            raise LMForgeError(
                f"{f}: cannot load safely as weights only ({type(exc).__name__}); convert it to safetensors"
            ) from None
    return list(state), state.__getitem__


def weight_getter(path: Path) -> tuple[list[str], Getter]:
    """Names and a lazy tensor reader for the weights in a checkpoint directory."""
    for single, index, reader in [
        ("model.safetensors", "model.safetensors.index.json", _safetensors_getter),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", _torch_bin_getter),
    ]:
        if (path / single).exists():
            return reader([path / single])
        if (path / index).exists():
            weight_map = _read_json(path / index).get("weight_map", {})
            return reader([path / f for f in sorted(set(weight_map.values()))])
    raise LMForgeError(
        f"{path}: no weights found (model.safetensors, its sharded index, or pytorch_model.bin)"
    )


def read_state(path: Path, config: ModelConfig, naming: str) -> dict[str, torch.Tensor]:
    names, get = weight_getter(path)
    if naming == "lmforge":
        return {n: get(n) for n in names}
    return hf.state_from_hf(config, names, get, str(path))


def load_into(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Assign loaded tensors to a model built on the meta device, checking names and shapes."""
    expected = model.state_dict()
    if model.config.tie_embeddings:
        tied = ("lm_head.weight", "mlm.decoder.weight", *_quantized_tied(model))
        expected = {k: v for k, v in expected.items() if k not in tied}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise LMForgeError(f"{source}: missing tensors: {', '.join(missing[:5])}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise LMForgeError(f"{source}: unexpected tensors: {', '.join(unexpected[:5])}")
    dtypes = {}
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise LMForgeError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                f"the config expects {tuple(expected[name].shape)}"
            )
        # tensors a module declares in its own dtype (a quantized layer's integer codes and bf16
        # scales) keep it; the float weights take the load dtype
        own = expected[name].dtype != torch.get_default_dtype()
        dtypes[name] = expected[name].dtype if own else dtype
    # on the CPU the weights go into huge pages, which a decode step streams faster (model/huge_pages.py):
    # a float model's straight from the file; a quantized one's once its modules have put their codes in
    # the layout their kernels read (a copy of what was loaded, `place`d below)
    quantized = getattr(model, "quantization", None)
    sizes = ((state[name].shape, dtypes[name]) for name in state)
    arena = (
        huge_pages.Arena.create(huge_pages.Arena.size(sizes))
        if device.type == "cpu" and not quantized
        else None
    )
    for name, tensor in state.items():
        state[name] = (
            arena.copy(tensor, dtypes[name]) if arena else tensor.to(device=device, dtype=dtypes[name])
        )
    model.load_state_dict(state, strict=False, assign=True)
    if quantized:
        from lmforge.quant.convert import tie

        tie(model)
    else:
        model.tie_weights()
    model.init_buffers(device)
    if quantized and device.type == "cpu":
        huge_pages.place(model)


def _quantized_tied(model: torch.nn.Module) -> list[str]:
    if not getattr(model, "quantization", None):
        return []
    from lmforge.quant.convert import tied_names

    return tied_names(model)


def save_state(
    path: Path, config: ModelConfig, state: dict[str, torch.Tensor], quantized: bool = False
) -> str:
    """Write weights (HF names when the family can express the config and the weights are not
    quantized: HF has no names for our integer codes); returns the naming used."""
    from safetensors.torch import save_file

    family = hf.FAMILIES.get(config.family)
    if family and family.expressible(config) and not quantized:
        state, naming = hf.state_to_hf(config, state), "hf"
    else:
        naming = "lmforge"
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return naming


def config_json(
    config: ModelConfig, naming: str, dtype: torch.dtype, quantization: dict[str, Any] | None = None
) -> dict[str, Any]:
    family = hf.FAMILIES.get(config.family)
    out: dict[str, Any] = {}
    if naming == "hf" and family is not None:
        out.update(family.config_to_hf(config))
    else:
        out["model_type"] = "lmforge"
    out["torch_dtype"] = str(dtype).removeprefix("torch.")
    out["lmforge"] = {"config": config.to_dict(), "weight_names": naming}
    if quantization:
        out["lmforge"]["quantization"] = quantization
    return out


def write_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    tokenizer=None,
    generation_config: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a complete checkpoint directory atomically (temporary dir, then rename)."""
    path = Path(path)
    config: ModelConfig = model.config
    state = model.state_dict()
    quantization = getattr(model, "quantization", None)
    if config.tie_embeddings:
        for name in ("lm_head.weight", "mlm.decoder.weight", *_quantized_tied(model)):
            state.pop(name, None)
    dtype = next(model.parameters()).dtype
    size = sum(t.numel() * t.element_size() for t in state.values())
    with atomic_dir(path, expected_bytes=size) as tmp:
        naming = save_state(tmp, config, state, quantized=bool(quantization and quantization.get("layers")))
        meta = config_json(config, naming, dtype, quantization)
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if generation_config:
            (tmp / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)
        for rel, text in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
    return path
