"""Quantized modules that take the place of `nn.Linear` / `nn.Embedding` (through `lmforge.model.swap`).

- `Int8Linear`: int8 codes (N, K) and per-row scales; decode-sized inputs go through lmforge's own
  kernel (`native.py`) where it is built and not measured clearly slower than `aten._weight_int8pack_mm`
  on this CPU (`kernels.native_int8`: 25% more CPU time would be), else through torch's; larger ones
  (prefill) through a matmul on weights dequantized on the fly when that is faster (`kernels.int8_rows`,
  measured for each kernel).
- `Int4Linear`: group-wise codes, scale and zero per group, packed for lmforge's int4 kernel where it
  is not measured clearly slower (`kernels.native_int4`; it takes the activations as int16 per row and
  group, see native.c) or for `aten._weight_int4pack_mm_for_cpu`; like Int8Linear, inputs of more rows than the
  kernel is faster for dequantize (`kernels.int4_rows`). Its checkpoint form is portable (`qweight`: codes two to a byte); the kernel's
  own layout is built when the module is made or loaded, and is the only copy of the codes held in memory.
- `BF16Linear`: the `bf16` scheme's linears, the model's `Linear` with bfloat16 weights whose decode
  rows go through lmforge's bf16 kernel where it is not measured clearly slower (`kernels.native_bf16`).
- `Int8Embedding`: rows of int8 codes with a scale each; with tied embeddings it reads the LM head's
  codes (one copy serves both: a row scale of the embedding is an output-channel scale of the head).
Activations enter the kernels in `kernels.fast_dtype()` (bf16 where measured faster) and leave in the
dtype they came in; inputs past the kernels' rows multiply weights dequantized to
`kernels.matmul_dtype()`. Where a kernel is missing each module dequantizes and uses `F.linear` (`.path`
says which: "native", "kernel" or "dequantize").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.linear import Linear
from lmforge.quant import kernels, native
from lmforge.quant.formats import QuantizedWeight, dequantize_int4, dequantize_int8

NATIVE_DTYPES = (torch.float32, torch.bfloat16)


def _bias(linear_bias: torch.Tensor | None, dtype: torch.dtype) -> nn.Parameter | None:
    return None if linear_bias is None else nn.Parameter(linear_bias.detach().to(dtype), requires_grad=False)


class Int8Linear(nn.Module):
    """y = x · (codes · scale)ᵀ + bias, weights int8 per output channel."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None = None, dtype=torch.float32):
        super().__init__()
        self.out_features, self.in_features = weight.codes.shape
        self.register_buffer("qweight", weight.codes.to(torch.int8))
        self.register_buffer("scale", weight.scale.to(torch.bfloat16))
        self.bias = _bias(bias, dtype)
        self._choose_path()

    def _choose_path(self) -> None:
        """The path and its measured limits, fixed here so that forward reads plain attributes (a
        compiled step traces no measurement)."""
        on_cpu = self.qweight.device.type in ("cpu", "meta")
        if on_cpu and native.fits(self.in_features) and kernels.native_int8():
            self.path, self.kernel_rows = "native", kernels.int8_rows(True)
        elif on_cpu and kernels.available("int8"):
            self.path, self.kernel_rows = "kernel", kernels.int8_rows(False)
        else:
            self.path, self.kernel_rows = "dequantize", 0
        self.kernel_dtype = torch.float32 if self.path == "native" else kernels.fast_dtype()
        self.matmul_dtype = kernels.matmul_dtype()
        # the scales in the kernel's dtype ahead of time: a cast inside a compiled step leaves the
        # kernel an unrealized input, which inductor's lowering of the int8/int4 kernels rejects
        self.register_buffer("kernel_scale", self.scale.to(self.kernel_dtype), persistent=False)
        native_bias = self.bias.detach().float() if self.path == "native" and self.bias is not None else None
        self.register_buffer("native_bias", native_bias, persistent=False)  # added in the native kernel

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        # a tensor read from a safetensors file may start anywhere in it; the kernel needs alignment
        self.qweight, self.scale = kernels.aligned(self.qweight), kernels.aligned(self.scale)
        self._choose_path()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.qweight, self.scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.path == "native" and rows.shape[0] <= self.kernel_rows and rows.device.type == "cpu":
            # float32 or bfloat16 activations as they come, through the operator or ctypes (`native.entry`)
            rows = rows.contiguous() if rows.dtype in NATIVE_DTYPES else rows.float()
            mm = native.entry("int8_native")
            y = mm(rows, self.qweight, self.kernel_scale, self.native_bias).to(x.dtype)
        elif self.path == "kernel" and rows.shape[0] <= self.kernel_rows:
            y = kernels.int8_mm(rows.to(self.kernel_dtype), self.qweight, self.kernel_scale).to(x.dtype)
            y = y if self.bias is None else y + self.bias
        else:
            dtype = self.matmul_dtype if self.path != "dequantize" else x.dtype
            y = kernels.linear(rows.to(dtype), self.dequantize(dtype), self.bias).to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, path={self.path}"


class Int4Linear(nn.Module):
    """y = x · ((codes − 8) · scale + zero)ᵀ + bias, codes 0..15 in groups of `group_size` inputs."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None = None, dtype=torch.float32):
        super().__init__()
        self.out_features, self.in_features = weight.codes.shape
        self.group_size = weight.group_size
        self.register_buffer("scale", weight.scale.to(torch.bfloat16))
        self.register_buffer("zero", weight.zero.to(torch.bfloat16))
        self.bias = _bias(bias, dtype)
        self.matmul_dtype = kernels.matmul_dtype()
        self._set_codes(weight.codes, self._choose_path(weight.codes.device.type))

    def _choose_path(self, device: str) -> str:
        """lmforge's kernel where it suits the shape and is not clearly slower here, else torch's (which
        packs 16 outputs at a time; a model built on meta is given its real path at load), else
        dequantize-then-matmul."""
        on_cpu = device in ("cpu", "meta")
        if on_cpu and native.fits(self.in_features, self.group_size) and kernels.native_int4(self.group_size):
            return "native"
        if kernels.available("int4") and (
            device == "meta" or (device == "cpu" and self.out_features % 16 == 0)
        ):
            return "kernel"
        return "dequantize"

    def _set_codes(self, codes: torch.Tensor, path: str) -> None:
        """Hold the codes in the form the forward path reads (the kernel's packing, or plain codes) and
        fix what forward reads (nothing is measured in a compiled step)."""
        self.path = path
        if codes.device.type == "meta":
            held = torch.empty(self.out_features, self.in_features // 2, dtype=torch.uint8, device="meta")
        else:
            pack = {"native": native.pack_int4, "kernel": kernels.pack_int4}.get(
                path, lambda c: c.to(torch.uint8)
            )
            held = pack(codes)
        self.register_buffer("codes", held, persistent=False)
        if path == "native":
            self.kernel_dtype, scale_zero = torch.float32, native.scale_offset(self.scale, self.zero)
            self.kernel_rows = kernels.int4_rows(self.group_size, True)
        else:
            self.kernel_dtype = kernels.fast_dtype()
            scale_zero = kernels.scale_and_zero(self.scale, self.zero).to(self.kernel_dtype)  # see Int8Linear
            self.kernel_rows = kernels.int4_rows(self.group_size, False) if path == "kernel" else 0
        self.register_buffer("scale_zero", scale_zero, persistent=False)
        native_bias = self.bias.detach().float() if path == "native" and self.bias is not None else None
        self.register_buffer("native_bias", native_bias, persistent=False)

    def int_codes(self) -> torch.Tensor:
        """The codes (N, K) in 0..15."""
        if self.path == "kernel":
            return kernels.unpack_int4(self.codes, self.out_features, self.in_features)
        return native.unpack_int4(self.codes) if self.path == "native" else self.codes

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int4(self.int_codes(), self.scale, self.zero, self.group_size, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        # compiled steps keep the kernel: unpacking its layout inside a graph would repeat every step
        kernel = rows.shape[0] <= self.kernel_rows or torch.compiler.is_compiling()
        if self.path == "native" and kernel and rows.device.type == "cpu":
            rows = rows.contiguous() if rows.dtype in NATIVE_DTYPES else rows.float()
            mm = native.entry("int4_native")
            y = mm(rows, self.codes, self.group_size, self.scale_zero, self.native_bias).to(x.dtype)
        elif self.path == "kernel" and kernel:
            dtype = self.kernel_dtype
            mm = torch.ops.lmforge.int4_torch if torch.compiler.is_compiling() else kernels.int4_mm
            y = mm(rows.to(dtype), self.codes, self.group_size, self.scale_zero).to(x.dtype)
            y = y if self.bias is None else y + self.bias
        else:
            dtype = self.matmul_dtype if self.path != "dequantize" else x.dtype
            y = kernels.linear(rows.to(dtype), self.dequantize(dtype), self.bias).to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    # the checkpoint holds the codes two to a byte (`qweight`), not the kernel's CPU-specific layout
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.codes.device.type == "meta":
            shape = (self.out_features, self.in_features // 2)
            destination[prefix + "qweight"] = torch.empty(shape, dtype=torch.uint8, device="meta")
        else:
            destination[prefix + "qweight"] = kernels.nibbles(self.int_codes())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        qweight = state_dict.pop(prefix + "qweight", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        if qweight is None:
            missing.append(prefix + "qweight")
            return
        codes = kernels.from_nibbles(qweight)
        path = self._choose_path("cpu")
        self._set_codes(codes.cpu() if path != "dequantize" else codes, path)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, path={self.path}"
        )


class BF16Linear(Linear):
    """The `bf16` scheme's linear: the model's `Linear` with bfloat16 weights, whose decode-sized inputs
    (up to `kernel_rows` rows, without autograd) go through lmforge's bf16 kernel (`native.bf16_mm`)
    where it is built and not measured clearly slower than torch's one-row product on this machine
    (`kernels.native_bf16`; `.path` "native", else "torch": the `Linear` it is). The same parameters as
    the `Linear` it replaces (a tied LM head stays tied) and the same state dict."""

    @classmethod
    def of(cls, linear: nn.Linear) -> BF16Linear:
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        module.weight, module.bias = linear.weight, linear.bias
        module._choose_path()
        return module

    def _choose_path(self) -> None:
        on_cpu = self.weight.device.type in ("cpu", "meta")
        if on_cpu and native.fits(self.in_features) and kernels.native_bf16():
            self.path, self.kernel_rows = "native", kernels.bf16_rows()
        else:
            self.path, self.kernel_rows = "torch", 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        w = self.weight
        if (
            self.path == "native"
            and rows.shape[0] <= self.kernel_rows
            and x.device.type == "cpu"
            and x.dtype in NATIVE_DTYPES
            and w.dtype is torch.bfloat16
            and w.is_contiguous()
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
        ):
            bias = None if self.bias is None else self.bias.float()
            y = native.entry("bf16_native")(rows.contiguous(), w, bias)
            return y.view(*x.shape[:-1], self.out_features)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, path={self.path}"


class Int8Embedding(nn.Module):
    """Rows of int8 codes times their scale; `tied_to` an `Int8Linear` LM head, it reads the head's."""

    def __init__(
        self, weight: QuantizedWeight | None, dtype=torch.float32, tied_to: Int8Linear | None = None
    ):
        super().__init__()
        self.dtype = dtype
        if tied_to is not None:
            self.tie(tied_to)
        else:
            self.register_buffer("qweight", weight.codes.to(torch.int8))
            self.register_buffer("scale", weight.scale.to(torch.bfloat16))
        self.num_embeddings, self.embedding_dim = self.qweight.shape

    def tie(self, head: Int8Linear) -> None:
        """Read the head's codes and scales (the same tensors, not copies)."""
        self.register_buffer("qweight", head.qweight)
        self.register_buffer("scale", head.scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qweight).to(self.dtype) * F.embedding(ids, self.scale[:, None]).to(
            self.dtype
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.qweight, self.scale, dtype)


def is_quantized(model: nn.Module) -> bool:
    from lmforge.quant.w8a8 import W8A8Linear

    return any(isinstance(m, (Int8Linear, Int4Linear, Int8Embedding, W8A8Linear)) for m in model.modules())
