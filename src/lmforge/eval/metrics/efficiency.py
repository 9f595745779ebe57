"""Efficiency: throughput (tokens/s), latency percentiles, time to first token, peak memory.

`measure_generation` times greedy decoding of a decoder through the inference engine (prefill, then one
token per step over the KV cache), with warm-up runs that are not counted. Wall clock comes from
`time.perf_counter`; on CUDA every timed region ends with `torch.cuda.synchronize()` so queued kernels
are counted. Peak memory is the process's resident set size sampled while the work runs (plus the
kernel's high-water mark), and `torch.cuda.max_memory_allocated` when a GPU is used.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lmforge.errors import LMForgeError


def latency_percentiles(
    latencies_s: Sequence[float], percentiles: Sequence[int] = (50, 95, 99)
) -> dict[str, float]:
    """`{"p50": ..., "p95": ..., "p99": ..., "mean": ...}` in seconds (linear interpolation, as NumPy)."""
    values = np.asarray(latencies_s, dtype=np.float64)
    if values.size == 0:
        raise LMForgeError("no latencies measured")
    out = {f"p{p}": float(np.percentile(values, p)) for p in percentiles}
    out["mean"] = float(values.mean())
    return out


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Context manager tracking the peak RSS (sampled every `interval_s`) and CUDA peak allocation.

    `peak_rss_bytes` is the largest RSS seen during the block; `process_max_rss_bytes` is the kernel's
    high-water mark for the whole process so far (`getrusage`), which the sampler cannot miss.
    """

    def __init__(self, interval_s: float = 0.005, device: torch.device | str | None = None):
        self.interval_s = interval_s
        self.device = torch.device(device) if device is not None else None
        self.peak_rss_bytes = 0
        self.process_max_rss_bytes = 0
        self.cuda_peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_bytes = max(self.peak_rss_bytes, current_rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak_rss_bytes = current_rss_bytes()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, current_rss_bytes())
        self.process_max_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))


@dataclass
class SpeedResult:
    """Timings of `repeats` greedy generations of `new_tokens` tokens after a `prompt_tokens` prompt."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    repeats: int
    device: str
    dtype: str
    ttft_s: dict[str, float]  # prefill + first token, percentiles over repeats
    token_latency_s: dict[str, float]  # one decode step (after the first token), percentiles
    prefill_tokens_per_s: float
    decode_tokens_per_s: float  # generated tokens (all rows) per second of decoding
    end_to_end_tokens_per_s: float  # generated tokens per second including prefill
    peak_rss_bytes: int
    process_max_rss_bytes: int
    cuda_peak_bytes: int | None = None
    raw: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("raw")
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_generation(
    model: torch.nn.Module,
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    batch_size: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> SpeedResult:
    """Time greedy generation with the engine on random prompt tokens (content does not change speed).

    Every row generates exactly `new_tokens` tokens (no stop tokens), so tokens/s counts real work.
    """
    from lmforge.generate.engine import Engine

    if prompt_tokens < 1 or new_tokens < 1 or batch_size < 1 or repeats < 1:
        raise LMForgeError("prompt_tokens, new_tokens, batch_size and repeats must all be at least 1")
    engine = Engine(model)
    if prompt_tokens + new_tokens > engine.max_seq_len:
        raise LMForgeError(
            f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's context of "
            f"{engine.max_seq_len}"
        )
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=gen).tolist()
    device = engine.device
    ttft, step_times, prefill_times, decode_times, totals = [], [], [], [], []
    with PeakMemory(device=device) as mem:
        for run in range(warmup + repeats):
            batch = engine.new_batch(prompts, capacity=prompt_tokens + new_tokens)
            _sync(device)
            t0 = time.perf_counter()
            logits = engine.prefill(batch)
            token = logits.argmax(dim=-1)
            token.cpu()  # the first token is known only once it reaches the host
            _sync(device)
            t1 = time.perf_counter()
            steps = []
            for _ in range(new_tokens - 1):
                s0 = time.perf_counter()
                token = engine.step(batch, token).argmax(dim=-1)
                token.cpu()
                _sync(device)
                steps.append(time.perf_counter() - s0)
            t2 = time.perf_counter()
            if run >= warmup:
                ttft.append(t1 - t0)
                prefill_times.append(t1 - t0)
                step_times.extend(steps)
                decode_times.append(t2 - t1)
                totals.append(t2 - t0)
    generated = batch_size * new_tokens
    decode_time = sum(decode_times)
    return SpeedResult(
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        repeats=repeats,
        device=str(device),
        dtype=str(engine.dtype).replace("torch.", ""),
        ttft_s=latency_percentiles(ttft),
        token_latency_s=latency_percentiles(step_times) if step_times else {},
        prefill_tokens_per_s=batch_size * prompt_tokens * repeats / sum(prefill_times),
        # decode steps produce new_tokens - 1 tokens per row (the first comes from the prefill)
        decode_tokens_per_s=(batch_size * (new_tokens - 1) * repeats / decode_time)
        if decode_time > 0
        else 0.0,
        end_to_end_tokens_per_s=generated * repeats / sum(totals),
        peak_rss_bytes=mem.peak_rss_bytes,
        process_max_rss_bytes=mem.process_max_rss_bytes,
        cuda_peak_bytes=mem.cuda_peak_bytes,
        raw={"ttft_s": ttft, "token_latency_s": step_times},
    )
