"""Efficiency measurement on a tiny random decoder: counts, shapes and memory figures are consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.errors import LMForgeError
from lmforge.eval.metrics import efficiency
from lmforge.model import Transformer
from tiny import tiny_model


def tiny_decoder() -> Transformer:
    return tiny_model("llama", vocab_size=97, max_seq_len=64)


def test_latency_percentiles_match_numpy() -> None:
    values = np.random.default_rng(0).exponential(size=101)
    got = efficiency.latency_percentiles(values)
    for p in (50, 95, 99):
        assert got[f"p{p}"] == pytest.approx(np.percentile(values, p))
    assert got["p50"] <= got["p95"] <= got["p99"]
    with pytest.raises(LMForgeError, match="no latencies"):
        efficiency.latency_percentiles([])


def test_peak_memory_sees_an_allocation() -> None:
    with efficiency.PeakMemory(interval_s=0.001) as mem:
        before = efficiency.current_rss_bytes()
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        block += 1
    assert mem.peak_rss_bytes >= before + 32 * 1024 * 1024
    assert mem.process_max_rss_bytes >= mem.peak_rss_bytes // 2
    del block


def test_measure_generation_counts_tokens() -> None:
    result = efficiency.measure_generation(
        tiny_decoder(), prompt_tokens=8, new_tokens=5, batch_size=2, repeats=3
    )
    assert len(result.raw["ttft_s"]) == 3
    assert len(result.raw["token_latency_s"]) == 3 * 4  # the first token comes from the prefill
    assert result.decode_tokens_per_s > 0 and result.prefill_tokens_per_s > 0
    # end-to-end throughput is the generated tokens over the summed ttft + decode time
    total = sum(result.raw["ttft_s"]) + sum(result.raw["token_latency_s"])
    assert result.end_to_end_tokens_per_s == pytest.approx(2 * 5 * 3 / total, rel=0.2)
    assert result.ttft_s["p50"] <= result.ttft_s["p99"]
    assert result.cuda_peak_bytes is None and result.peak_rss_bytes > 0
    with pytest.raises(LMForgeError, match="exceeds the model's context"):
        efficiency.measure_generation(tiny_decoder(), prompt_tokens=60, new_tokens=10)
