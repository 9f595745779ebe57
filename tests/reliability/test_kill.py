"""SIGKILL every writer at each point of the writer discipline and at times spread over its run: the
destination is then the previous version or the new one, byte for byte and loadable, never a mix;
the killed writer's staging is left behind, and the next write removes it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from faultlib import loads, tree

from lmforge.io.atomic import clean_stale, staging_dirs

# kill points that apply to each writer (see writers.KILL_POINTS); an existing destination is replaced
POINTS = {
    "save": ["staged", "fsynced", "exchanged", "half-swapped"],
    "checkpoint": ["staged", "fsynced", "exchanged", "half-swapped"],
    "prepare": ["staged", "fsynced", "exchanged", "half-swapped"],
    "tokenizer": ["journal", "fsynced"],
    "report": ["staged", "fsynced", "replaced"],
}
# of the reference run's duration; a loaded machine stretches a killed run past it (CI runs saw every
# timed kill, 1.5x included, land before the commit), so a named point after the commit ("exchanged",
# "journal", "replaced") is what puts each writer's outcomes on both sides, not the timed kills
FRACTIONS = [0.1, 0.3, 0.5, 0.7, 0.9, 1.5]


@pytest.mark.parametrize("writer", list(POINTS))
def test_kill_leaves_old_or_new_and_next_write_cleans(writer, zygote, inputs, tmp_path):
    base = {"writer": writer, **inputs}
    refs = []
    for v in range(2):
        dst = tmp_path / f"ref{v}" / "out"
        answer = zygote({**base, "dst": str(dst), "version": v})
        assert answer["exit"] == 0, answer
        refs.append(tree(dst))
        loads(writer, dst)
    assert refs[0] != refs[1]
    duration = answer["seconds"]

    kills = [{"kill": p} for p in POINTS[writer]] + [{"after": f * duration} for f in FRACTIONS]
    seen = {"old": 0, "new": 0}
    outcomes = []
    for i, kill in enumerate(kills):
        parent = tmp_path / f"k{i}"
        dst = parent / "out"
        staging = dst if writer == "tokenizer" else parent  # a pair of files stages inside its directory
        shutil.copytree(tmp_path / "ref0", parent)  # the previous version, as the writer left it
        answer = zygote({**base, "dst": str(dst), "version": 1, **kill})
        if "kill" in kill:
            assert answer["killed"], (kill, answer)
            assert staging_dirs(staging), f"{kill}: the kill should leave the writer's staging"
        if kill.get("kill") in ("journal", "half-swapped"):
            # killed between two renames: the next write finishes a pair of files, or puts back the
            # previous directory (the two-rename swap, only where the file system has no exchange)
            clean_stale(staging)
        got = tree(dst)
        assert got in refs, f"{writer} killed at {kill}: the destination is neither version"
        seen["old" if got == refs[0] else "new"] += 1
        outcomes.append(
            (kill.get("kill") or f"{kill['after'] / duration:.0%}", "old" if got == refs[0] else "new")
        )
        loads(writer, dst)

        answer = zygote({**base, "dst": str(dst), "version": 1})  # the next run
        assert answer["exit"] == 0, answer
        assert staging_dirs(staging) == [], f"{writer} after {kill}: stale staging not removed"
        assert tree(dst) == refs[1]
        assert sorted(p.name for p in parent.iterdir()) == ["out"]
        if writer == "tokenizer":
            assert sorted(p.name for p in dst.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    print(f"\n{writer} ({duration * 1000:.0f} ms) killed at -> destination: {outcomes}")
    assert seen["old"] and seen["new"], seen  # the kill points reach both sides of the commit


def digests(path: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in tree(path).items()}


@pytest.mark.slow
def test_kill_convert_smollm2_spread_over_its_run(zygote, tmp_path):
    """`lmforge convert smollm2 OUT` (540 MB) over an earlier checkpoint, SIGKILLed at five times spread
    over a full run's duration: OUT is the earlier checkpoint or SmolLM2, whole, every time."""
    job = {"writer": "convert", "src": "smollm2", "version": 1}
    durations = []
    for _ in range(2):  # the second run reads the GGUF from the page cache, as the killed runs will
        answer = zygote({**job, "dst": str(tmp_path / "new" / "out")})
        assert answer["exit"] == 0, answer
        durations.append(answer["seconds"])
    new, duration = digests(tmp_path / "new" / "out"), min(durations)
    assert zygote({"writer": "save", "version": 0, "dst": str(tmp_path / "old" / "out")})["exit"] == 0
    old = digests(tmp_path / "old" / "out")
    outcomes = []
    for i, fraction in enumerate([0.2, 0.4, 0.55, 0.7, 0.85]):
        parent = tmp_path / f"k{i}"
        shutil.copytree(tmp_path / "old", parent)
        answer = zygote({**job, "dst": str(parent / "out"), "after": fraction * duration})
        got = digests(parent / "out")
        assert got in (old, new), f"killed at {fraction:.0%} of the run: neither version"
        outcomes.append(
            (fraction, answer["killed"], "old" if got == old else "new", len(staging_dirs(parent)))
        )
        assert zygote({"writer": "save", "version": 0, "dst": str(parent / "out")})["exit"] == 0  # next run
        assert staging_dirs(parent) == []
        shutil.rmtree(parent)
    print(
        f"convert smollm2 ({duration:.1f} s) killed at (fraction, killed, result, staging left): {outcomes}"
    )
    assert any(killed for _, killed, _, _ in outcomes)
