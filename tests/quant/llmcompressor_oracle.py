"""llm-compressor's GPTQ and SmoothQuant on a saved tiny Hugging Face Llama: run by
tests/quant/test_llmcompressor.py with the interpreter of the separate environment that holds
llm-compressor (its pins clash with this one's), never imported by lmforge or the tests.

    python llmcompressor_oracle.py MODEL_DIR IDS.safetensors PARAMS.safetensors OUT.safetensors

IDS holds the calibration token ids ("ids", (n, T)); PARAMS holds, per GPTQ layer L, our int4 scales and
zeros in llm-compressor's convention ("L.scale", "L.zero_point", (N, K/g)). OUT receives, per layer L:
"L.x" (the layer's calibration inputs, (n·T, K)), "L.gptq_ours_params" (GPTQ's dequantized weight with
the given parameters), "L.gptq", "L.rtn", "L.scale", "L.zero_point" (with llm-compressor's own min-max
observer parameters); and for each smoothing strength α, "smoothquant.α.NAME" for every weight the
SmoothQuantModifier changed, after `oneshot` on the same ids.
"""

from __future__ import annotations

import sys

import torch
from compressed_tensors.quantization import QuantizationArgs, fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
from llmcompressor.modifiers.gptq.helpers import accumulate_hessian
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

GPTQ_LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
GROUP_SIZE = 32
DAMPING = 0.01
ALPHAS = (0.5, 0.8)


def gptq(model, ids, params) -> dict[str, torch.Tensor]:
    """Each layer of GPTQ_LAYERS quantized alone from the float model's inputs (as the first block of a
    sequential pipeline sees them), int4 asymmetric groups, act-order by the Hessian diagonal with
    groups of original columns ("weight"), blocks of 128, damping 0.01."""
    args = QuantizationArgs(
        num_bits=4, type="int", symmetric=False, strategy="group", group_size=GROUP_SIZE, actorder="weight"
    )
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in GPTQ_LAYERS}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs[n].append(a[0].detach()))
        for n in GPTQ_LAYERS
    ]
    with torch.no_grad():
        for row in ids:  # one sequence per pass, as llm-compressor calibrates
            model(row[None])
    for h in handles:
        h.remove()
    out = {}
    for name in GPTQ_LAYERS:
        module = model.get_submodule(name)
        w = module.weight.detach().float()
        hessian = torch.zeros(w.shape[1], w.shape[1])
        samples = torch.zeros((), dtype=torch.int64)
        for x in inputs[name]:
            hessian, samples = accumulate_hessian(x, module, hessian, samples)
        hessian = hessian / samples
        groups = w.reshape(w.shape[0], -1, GROUP_SIZE)
        scale, zero_point = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        own = quantize_weight(
            w[None].clone(), hessian[None].clone(), scale[None], zero_point[None], None, args
        )
        given = quantize_weight(
            w[None].clone(),
            hessian[None].clone(),
            params[f"{name}.scale"][None],
            params[f"{name}.zero_point"][None],
            None,
            args,
        )
        rtn = fake_quantize(w, scale, zero_point, args)
        out.update(
            {
                f"{name}.x": torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs[name]]).float(),
                f"{name}.gptq_ours_params": given[0][0],
                f"{name}.gptq": own[0][0],
                f"{name}.rtn": rtn,
                f"{name}.scale": scale.float(),
                f"{name}.zero_point": zero_point.float(),
            }
        )
    return out


def smoothquant(model_dir: str, ids: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}  # oneshot wants a processor
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), pad_token="t0"
    )
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    oneshot(
        model=model,
        dataset=data,
        processor=tokenizer,
        recipe=SmoothQuantModifier(smoothing_strength=alpha),
        num_calibration_samples=len(ids),
        max_seq_length=ids.shape[1],
    )
    return {
        f"smoothquant.{alpha}.{k}": v.detach().clone()
        for k, v in model.state_dict().items()
        if not torch.equal(v, before[k])
    }


def main(model_dir: str, ids_file: str, params_file: str, out_file: str) -> None:
    torch.manual_seed(0)
    ids = load_file(ids_file)["ids"]
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    out = gptq(model, ids, load_file(params_file))
    for alpha in ALPHAS:
        out.update(smoothquant(model_dir, ids, alpha))
    save_file({k: v.contiguous() for k, v in out.items()}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
