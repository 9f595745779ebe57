"""Ingest: each file type, jsonl fields and metadata, skipped files, built-in corpora."""

from __future__ import annotations

import pytest
from rag_corpus import write_corpus

from lmforge.errors import LMForgeError
from lmforge.rag.ingest import content_hash, html_to_text, read_documents, wiki_to_markdown


def test_folder_of_every_type(tmp_path):
    folder = write_corpus(tmp_path / "c")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / "binary.txt").write_bytes(b"abc\x00def")
    (folder / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    docs, skipped, roots = read_documents([folder])
    by_path = {d.path: d for d in docs}
    assert set(by_path) == {
        "volcano.md",
        "bread.txt",
        "chess.html",
        "notes/rivers.md",
        "insects.jsonl#bees",
        "insects.jsonl#ants",
    }
    assert roots == [str(folder.resolve())]
    assert by_path["volcano.md"].title == "Volcanoes"
    assert by_path["volcano.md"].id == content_hash(by_path["volcano.md"].text)
    chess = by_path["chess.html"]
    assert (
        chess.title == "Chess openings" and "## Gambits" in chess.text and "never indexed" not in chess.text
    )
    bees = by_path["insects.jsonl#bees"]
    assert bees.meta == {"id": "bees", "topic": "insects"} and bees.text.startswith("Honey bees")
    reasons = {p.split("/")[-1]: r for p, r in ((s.path, s.reason) for s in skipped)}
    assert reasons["image.png"].startswith("unsupported type")
    assert "binary" in reasons["binary.txt"] and "UTF-8" in reasons["latin1.md"]


def test_jsonl_field_and_bad_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"body": "some text"}\n', encoding="utf-8")
    docs, _, _ = read_documents([tmp_path / "a.jsonl"], text_field="body")
    assert docs[0].text == "some text" and docs[0].path == "a.jsonl#1"
    _, skipped, _ = read_documents([tmp_path / "a.jsonl"])
    assert "no string field 'text'" in skipped[0].reason


def test_missing_path_and_nothing_given(tmp_path):
    with pytest.raises(LMForgeError, match="no such file or folder"):
        read_documents([tmp_path / "nope"])
    with pytest.raises(LMForgeError, match="nothing to index"):
        read_documents([])


def test_html_and_wiki_markup():
    text, title = html_to_text("<title>T</title><h2>Head</h2><p>a &amp; b</p><style>x{}</style>")
    assert title == "T" and text == "## Head\n\na & b"
    md = wiki_to_markdown("'''Bold''' [[Link|shown]] {{cite|x}} text<ref>note</ref>\n== Section ==\nbody")
    assert md == "Bold shown  text\n## Section\nbody"


def test_builtin_wikipedia_corpus():
    docs, skipped, roots = read_documents(["wikipedia"])
    assert roots == ["wikipedia"] and not skipped and len(docs) > 250  # one document per section
    titles = {d.title for d in docs}
    assert len(titles) == 101 and {"Albedo", "Achilles", "Abacus"} <= titles
    assert all(d.text.startswith(f"# {d.title}") for d in docs)
    birth = next(d for d in docs if d.path == "wikipedia/Achilles/02-Birth.md")
    assert birth.text.startswith("# Achilles: Birth\n\nAchilles was the son of the Nereid Thetis")
    assert birth.meta == {"section": "Birth"}
