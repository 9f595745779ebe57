"""The writers under test, run in a child process that a test can SIGKILL at a chosen point.

`python writers.py` imports lmforge once, then reads one JSON job a line from stdin and answers one JSON
line each: it forks a child that runs the job's writer and
- with `"kill": POINT`, SIGKILLs itself at that point of the writer discipline (see KILL_POINTS), or
- with `"after": SECONDS`, is SIGKILLed by this process that long after the fork, or
- with neither, runs to the end (the answer holds how long that took, to spread the timed kills).
Forking from one warm process keeps each kill at a few milliseconds instead of a 4-second interpreter
start, so the default suite can afford many.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny.py

import torch  # noqa: E402

from lmforge.io import atomic  # noqa: E402

# Points of the discipline: "staged" = everything written, before the fsync and rename; "fsynced" =
# the first staged file is on disk, the rest not; "exchanged" = the new directory swapped in, the old
# one not yet removed; "half-swapped" = the two-rename swap (file systems without RENAME_EXCHANGE)
# between its renames; "journal" = a multi-file write between its first and second rename; "replaced" =
# a single file renamed over the destination, its staging not yet removed (the far side of the commit).
KILL_POINTS = ("staged", "fsynced", "exchanged", "half-swapped", "journal", "replaced")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    real_fsync_tree, real_fsync_path, real_exchange, real_replace = (
        atomic._fsync_tree,
        atomic._fsync_path,
        atomic._exchange,
        os.replace,
    )
    if point == "staged":
        atomic._fsync_tree = lambda path: _die()
    elif point == "fsynced":

        def fsync_then_die(path, directory=False):
            real_fsync_path(path, directory)
            _die()

        atomic._fsync_path = fsync_then_die
    elif point == "exchanged":

        def exchange_then_die(a, b):
            if real_exchange(a, b):
                _die()
            return False

        atomic._exchange = exchange_then_die
    elif point == "half-swapped":
        atomic._exchange = lambda a, b: False

        def replace_then_die(src, dst, **kw):
            real_replace(src, dst, **kw)
            if Path(dst).name == atomic.PREVIOUS:
                _die()

        os.replace = replace_then_die
    elif point == "journal":
        seen = []

        def replace_second_dies(src, dst, **kw):
            if Path(src).parent.name.startswith(".") and atomic.TAG in Path(src).parent.name:
                seen.append(dst)
                if len(seen) == 2:
                    _die()
            real_replace(src, dst, **kw)

        os.replace = replace_second_dies
    elif point == "replaced":

        def replace_then_die(src, dst, **kw):
            real_replace(src, dst, **kw)
            if atomic.TAG in Path(src).parent.name and atomic.TAG not in Path(dst).parent.name:
                _die()

        os.replace = replace_then_die
    else:
        raise ValueError(point)
    del real_fsync_tree


# --- writers: each writes version `v` (0 or 1) of its output to `dst` ----------------------------


def save(dst: str, v: int, job: dict) -> None:
    """`LM.save` / `lmforge convert`: a checkpoint directory."""
    from lmforge.io.checkpoint import write_checkpoint
    from tiny import tiny_model

    write_checkpoint(dst, tiny_model(seed=v, d_model=job.get("d_model", 32)))


def convert(dst: str, v: int, job: dict) -> None:
    """`lmforge convert SRC DST` of a real model (the slow test: SmolLM2, 540 MB written)."""
    import lmforge

    lmforge.load(job["src"], device="cpu", compile="eager").save(dst)


def checkpoint(dst: str, v: int, job: dict) -> None:
    """A training checkpoint: model files + trainer_state.pt."""
    from lmforge.train.checkpoint import save_checkpoint
    from tiny import tiny_model

    state = {"step": v, "moments": torch.full((50_000,), float(v))}
    save_checkpoint(dst, tiny_model(seed=v), trainer_state=state)


def prepare(dst: str, v: int, job: dict) -> None:
    """`lmforge prepare`: shards + manifest + reports."""
    from lmforge.data.pipeline import PrepareOptions, prepare
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.load(job["tokenizer"])
    prepare([job["inputs"][v]], tok, dst, PrepareOptions(workers=1, val_fraction=0.25))


def tokenizer(dst: str, v: int, job: dict) -> None:
    """`lmforge tokenizer train --output DIR`: tokenizer.json + tokenizer_config.json as a pair."""
    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.load(job["tokenizer"])
    tok.model_max_length = 100 + v
    tok.backend.add_tokens([f"<extra_{v}_{i}>" for i in range(20 * (v + 1))])
    tok.save(dst)


def report(dst: str, v: int, job: dict) -> None:
    """An eval/quant report file (atomic_write_text)."""
    atomic.atomic_write_text(dst, json.dumps({"version": v, "rows": [v] * 200_000}))


WRITERS = {
    "convert": convert,
    "save": save,
    "checkpoint": checkpoint,
    "prepare": prepare,
    "tokenizer": tokenizer,
    "report": report,
}


def run_together(job: dict) -> dict:
    """`"copies": K`: K children write versions 0..K-1 to one destination at once, `repeat` times each."""
    pids = []
    for v in range(job["copies"]):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for _ in range(job.get("repeat", 1)):
                    WRITERS[job["writer"]](job["dst"], v, job)
            except BaseException as exc:
                print(f"writer failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                import traceback

                Path(job["dst"]).with_name(f"error{v}.txt").write_text(traceback.format_exc())
                code = 1
            os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    return {"exits": codes}


def run_job(job: dict) -> dict:
    if job.get("copies"):
        return run_together(job)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if job.get("kill"):
                install(job["kill"])
            WRITERS[job["writer"]](job["dst"], job["version"], job)
        except BaseException as exc:  # reported through the exit status and stderr
            print(f"writer failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        os._exit(code)
    if job.get("after") is not None:
        time.sleep(job["after"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return {"killed": killed, "exit": code, "seconds": time.perf_counter() - start}


def main() -> None:
    torch.set_num_threads(1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run_job(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
