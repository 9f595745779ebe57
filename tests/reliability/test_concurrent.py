"""Two writers to one destination at once: each commit lands whole (the later one wins), a reader
watching the destination meanwhile only ever sees one complete version, and no staging is left."""

from __future__ import annotations

import threading

import pytest
from faultlib import loads, tree

from lmforge.io.atomic import staging_dirs


@pytest.mark.parametrize("writer", ["save", "report", "tokenizer"])
def test_two_writers_at_once(writer, zygote, inputs, tmp_path):
    base = {"writer": writer, **inputs}
    refs = []
    for v in range(2):
        dst = tmp_path / f"ref{v}" / "out"
        assert zygote({**base, "dst": str(dst), "version": v})["exit"] == 0
        refs.append(tree(dst))
    dst = tmp_path / "shared" / "out"
    answer = {}
    writing = threading.Thread(
        target=lambda: answer.update(zygote({**base, "dst": str(dst), "copies": 2, "repeat": 15}))
    )
    writing.start()
    seen = set()
    while writing.is_alive():  # a reader that takes no lock
        if dst.exists():
            try:
                got = tree(dst)
            except FileNotFoundError:  # the replaced version was removed while being read: read again
                continue
            if (
                writer != "tokenizer" and got
            ):  # a pair of files is whole for writers, not for lock-free readers
                assert got in refs, "a reader saw a mix of the two writers"
                seen.add(refs.index(got))
    writing.join()
    assert answer["exits"] == [0, 0]
    assert tree(dst) in refs
    loads(writer, dst)
    assert staging_dirs(dst.parent) == [] and staging_dirs(dst) == []
    if writer != "tokenizer":
        assert seen, "the reader never saw the destination"
