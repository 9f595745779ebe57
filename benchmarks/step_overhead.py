"""Fixed cost of one decode step: lmforge vs transformers on a SmolLM2-shaped model too narrow to matter.

A SmolLM2 decode step on a small CPU is two parts: reading ~513 MiB of fp32 weights (the same for every
engine, and at the mercy of whoever else shares the memory bus and L3) and a fixed cost per step
(dispatching ~120 matmuls and the ops around them, guards, Python). `benchmarks/generate.py` sees their
sum; this benchmark sees the fixed part alone, steadily: the model has SmolLM2's 30 layers, 9 query / 3
K/V heads, tied embeddings and the same ops, but widths so small (d_model 144, d_mlp 256, vocab 512)
that its weights stay in the CPU caches. Both engines run the same random weights (exported to a
transformers `LlamaForCausalLM`) and must give the same greedy tokens.

Sides: lmforge loaded with `compile="eager"`, `"compile"` and `"aot"`, transformers' default `generate` and its static cache +
torch.compile path. Prints ms per decode step (prompt 32, 128 new tokens, greedy, batch 1) and the
ratios; saves benchmarks/results/step_overhead.json.

    python benchmarks/step_overhead.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from generate import benchmark_args, best_times, decode_sides, first_runs, save_results

RESULTS = Path(__file__).parent / "results" / "step_overhead.json"


def main() -> None:
    args = benchmark_args(__doc__, RESULTS, repeats=5)

    import transformers

    import lmforge
    from lmforge import hardware
    from lmforge.io.hf import llama_config_to_hf, state_to_hf
    from lmforge.lm import LM
    from lmforge.model.transformer import Transformer

    transformers.logging.set_verbosity_error()
    smollm2 = lmforge.load("smollm2", dtype=torch.float32, device="cpu")
    config = dataclasses.replace(smollm2.config, d_model=144, head_dim=16, d_mlp=256, vocab_size=512)
    model = Transformer(config)
    model.init_weights(seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # sharper next-token distributions: no near-ties in argmax
    model.eval()
    lm = LM(model, smollm2.tokenizer, source="narrow SmolLM2 shape")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_config_to_hf(config)))
    hf.load_state_dict(state_to_hf(config, model.state_dict()), strict=False)  # tied head: one tensor
    hf.tie_weights()
    hf.eval()

    n_new = args.new_tokens
    prompt = list(range(100, 132))

    sides = decode_sides(lm, hf)
    print(f"machine: {hardware.describe()}")
    first_run, agree = first_runs(sides, [prompt], n_new)

    timed = {}
    for name, fn in sides.items():
        timed[f"{name}_first"] = lambda fn=fn: fn([prompt], 1)
        timed[f"{name}_all"] = lambda fn=fn: fn([prompt], n_new)
    t = best_times(timed, args.repeats)
    step_ms = {name: (t[f"{name}_all"] - t[f"{name}_first"]) / (n_new - 1) * 1000 for name in sides}
    result = {
        "model": "SmolLM2-135M's shape (30 layers, 9/3 heads) at d_model 144, d_mlp 256, vocab 512; random",
        "setup": {
            "prompt_tokens": len(prompt),
            "new_tokens": n_new,
            "threads": args.threads,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "machine": hardware.machine(),
        "greedy_tokens_agree_with_transformers": agree,
        "step_ms": step_ms,
        "first_run_s": first_run,
        "transformers_over_lmforge_compiled": step_ms["transformers"] / step_ms["lmforge_compiled"],
        "transformers_over_lmforge_eager": step_ms["transformers"] / step_ms["lmforge"],
        "transformers_compiled_over_lmforge_compiled": step_ms["transformers_compiled"]
        / step_ms["lmforge_compiled"],
        "transformers_over_lmforge_aot": step_ms["transformers"] / step_ms["lmforge_aot"],
    }
    print(f"{'':23}{'first run s':>12}{'ms/step':>10}")
    for name in sides:
        print(f"{name:23}{first_run[name]:12.1f}{step_ms[name]:10.2f}")
    print(
        f"fixed cost per step, transformers / lmforge: eager {result['transformers_over_lmforge_eager']:.2f}x, "
        f"compiled {result['transformers_over_lmforge_compiled']:.2f}x; transformers compiled / lmforge "
        f"compiled {result['transformers_compiled_over_lmforge_compiled']:.2f}x; transformers / lmforge aot "
        f"{result['transformers_over_lmforge_aot']:.2f}x"
    )
    save_results(args.output, result)


if __name__ == "__main__":
    main()
