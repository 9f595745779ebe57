"""`prepare` end to end: each planted problem is removed or scrubbed and reported; output is
deterministic; bad input is a one-line error."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
from data_helpers import paragraph

import lmforge
from lmforge import cli
from lmforge.cli import main
from lmforge.data.clean import QualityConfig
from lmforge.data.pipeline import PrepareOptions, prepare
from lmforge.errors import LMForgeError


def edit(text: str, n: int) -> str:
    words = text.split()
    for i in range(n):
        words[10 + 40 * i] = "changed"
    return " ".join(words)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    good = [paragraph(i, 150) for i in range(12)]
    for i, text in enumerate(good):
        (root / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    (root / "dup_exact.txt").write_text(good[0] + "\n", encoding="utf-8")
    (root / "dup_near.txt").write_text(edit(good[1], 1), encoding="utf-8")
    (root / "short.txt").write_text("Too short to keep.", encoding="utf-8")
    (root / "spam.txt").write_text("#deal #sale #cheap #now buy today " * 20, encoding="utf-8")
    pii = f"{paragraph(50, 60)} Contact jane.roe@example.com or (555) 123-4567, card 4111 1111 1111 1111."
    (root / "pii.txt").write_text(pii, encoding="utf-8")
    (root / "messy.txt").write_text(
        paragraph(51, 60).replace("the", "the\x00") + " Cafe\u0301.", encoding="utf-8"
    )
    rows = [{"text": paragraph(60 + i, 80)} for i in range(2)]
    (tmp_path / "extra.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return [str(root), str(tmp_path / "extra.jsonl")]


def test_prepare_removes_and_reports_each_rule(tmp_path, corpus, tiny_tok):
    out = tmp_path / "out"
    report = prepare(corpus, tiny_tok, out, PrepareOptions(val_fraction=0.2, workers=1))
    counts = {r["rule"]: r["documents"] for r in report["rules"] if r["documents"]}
    assert counts == {
        "normalize": 1,
        "exact_dup": 1,
        "quality:length": 1,
        "quality:hash_ellipsis_ratio": 1,
        "near_dup": 1,
        "pii:email": 1,
        "pii:phone": 1,
        "pii:credit_card": 1,
    }
    rows = {r["rule"]: r for r in report["rules"]}
    assert rows["exact_dup"]["examples"][0]["source"].endswith("dup_exact.txt")
    assert rows["exact_dup"]["examples"][0]["duplicate_of"].endswith("doc00.txt")
    assert rows["near_dup"]["examples"][0]["similar_to"].endswith("doc01.txt")
    assert rows["quality:length"]["bytes"] == len("Too short to keep.")
    assert rows["quality:length"]["examples"][0]["measured"] == "characters = 18 (limit 200)"
    assert report["read"]["documents"] == 20 and report["kept"]["documents"] == 16
    assert report["splits"]["val"]["documents"] == round(0.2 * 16)
    for name in ("manifest.json", "report.json", "report.md", "train_000.bin", "val_000.bin"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["fingerprint"] == tiny_tok.fingerprint
    assert manifest["dtype"] == "uint16" and manifest["seed"] == 1234
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 16
    tokens = np.concatenate([np.fromfile(out / f"{s}_000.bin", dtype=np.uint16) for s in ("train", "val")])
    text = tiny_tok.decode(tokens.tolist())
    assert "<EMAIL>" in text and "<PHONE>" in text and "<CREDIT_CARD>" in text
    assert "jane.roe" not in text and "\x00" not in text and "Caf\u00e9." in text
    assert (tokens == tiny_tok.eos_token_id).sum() == 16
    md = (out / "report.md").read_text()
    assert "| exact_dup | removed | 1 |" in md and "## Examples" in md


def test_prepare_is_deterministic_and_seed_changes_split(tmp_path, corpus, tiny_tok):
    a = prepare(corpus, tiny_tok, tmp_path / "a", PrepareOptions(workers=2, val_fraction=0.25))
    b = prepare(corpus, tiny_tok, tmp_path / "b", PrepareOptions(workers=1, val_fraction=0.25))
    assert a == b
    for name in ("train_000.bin", "val_000.bin", "manifest.json", "report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    prepare(corpus, tiny_tok, tmp_path / "c", PrepareOptions(workers=1, val_fraction=0.25, seed=99))
    val = lambda d: json.loads((tmp_path / d / "manifest.json").read_text())["val_sources"]  # noqa: E731
    assert val("a") != val("c")


def test_steps_can_be_switched_off(tmp_path, corpus, tiny_tok):
    opts = PrepareOptions(dedup=False, near_dup=False, quality=False, pii=False, workers=1)
    report = prepare(corpus, tiny_tok, tmp_path / "out", opts)
    assert report["kept"]["documents"] == 20
    assert {r["rule"] for r in report["rules"]} == {"normalize", "empty"}


def test_empty_after_filtering_and_bad_output_are_errors(tmp_path, tiny_tok):
    (tmp_path / "tiny.txt").write_text("Hello.", encoding="utf-8")
    with pytest.raises(
        LMForgeError, match=r"no documents left after filtering \(1 read; removed: quality:length 1\)"
    ):
        prepare([str(tmp_path / "tiny.txt")], tiny_tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(LMForgeError, match="not an lmforge prepare directory"):
        prepare([str(tmp_path / "tiny.txt")], tiny_tok, tmp_path / "taken")


def test_cli_prepare(tmp_path, corpus, tiny_tok, tiny_tok_dir, capsys):
    out = tmp_path / "out"
    rc = main(["prepare", *corpus, "--tokenizer", str(tiny_tok_dir), "--output", str(out), "--workers", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| exact_dup | removed | 1 |" in printed and f"wrote {out}" in printed
    assert json.loads((out / "manifest.json").read_text())["tokenizer"]["fingerprint"] == tiny_tok.fingerprint
    # running again over an earlier output replaces it
    assert main(["prepare", *corpus, "--tokenizer", str(tiny_tok_dir), "--output", str(out), "--no-pii"]) == 0
    assert json.loads((out / "report.json").read_text())["kept"]["documents"] == 16


def _prepare_flags() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prepare"]
    return {s: action for action in sub._actions for s in action.option_strings}


def test_every_option_field_is_a_prepare_flag():
    flags = _prepare_flags()
    fields = [f for cls in (PrepareOptions, QualityConfig) for f in dataclasses.fields(cls)]
    names = [f.name for f in fields if f.name != "quality_rules"]  # its fields are the QualityConfig ones
    assert len(names) == 13 + 13
    for name in names:
        action = flags.get("--" + name.replace("_", "-"))
        assert action is not None, f"lmforge prepare has no --{name}"
        assert action.default is argparse.SUPPRESS
    assert "--no-quality" in flags and "--no-pii" in flags


def test_cli_options_reach_the_pipeline(tmp_path, corpus, tiny_tok_dir):
    out = tmp_path / "out"
    args = ["prepare", *corpus, "--tokenizer", str(tiny_tok_dir), "--output", str(out), "--workers", "1"]
    rules = ["--min-chars", "0", "--max-chars", "none", "--min-words", "none", "--max-top-ngram-fraction"]
    assert main([*args, *rules, "--max-duplicate-ngram-fraction", "0.5", "0.4", "--shingle-words", "3"]) == 0
    options = json.loads((out / "manifest.json").read_text())["options"]
    assert options["shingle_words"] == 3 and options["quality"] is True
    quality = options["quality_rules"]
    assert quality["min_chars"] == 0 and quality["max_chars"] is None and quality["min_words"] is None
    assert quality["max_top_ngram_fraction"] is None and quality["max_duplicate_ngram_fraction"] == [0.5, 0.4]
    report = json.loads((out / "report.json").read_text())
    removed = {r["rule"]: r["documents"] for r in report["rules"] if r["documents"]}
    assert "quality:length" not in removed  # "Too short to keep." stays: no length rule is left
    assert main([*args, "--no-quality"]) == 0
    options = json.loads((out / "manifest.json").read_text())["options"]
    assert options["quality"] is False
    assert not any(
        r["rule"].startswith("quality:") for r in json.loads((out / "report.json").read_text())["rules"]
    )


class _Stop(Exception):
    """Raised by the spy in place of a run."""


def test_cli_passes_only_typed_options_even_when_equal_to_the_default(monkeypatch):
    seen = {}

    def spy(inputs, **kwargs):
        seen.clear()
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(lmforge, "prepare", spy)
    args = ["prepare", "a.txt", "--tokenizer", "t", "--output", "o"]
    with pytest.raises(_Stop):
        cli.run([*args, "--min-chars", "200", "--seed", "1234", "--quality"])
    assert (seen["min_chars"], seen["seed"], seen["quality"]) == (200, 1234, True)
    assert "min_words" not in seen and "max_chars" not in seen
    with pytest.raises(_Stop):
        cli.run(args)
    assert set(seen) == {"tokenizer", "output", "log"}  # nothing typed: the config defaults apply


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_chars": "200"}, "prepare: option min_chars must be an integer or null, got '200'"),
        ({"max_top_ngram_fraction": (0.2, 0.1, 0.1, 0.1)}, "max_top_ngram_fraction takes at most 3 limits"),
        ({"near_dup_threshold": 1.5}, r"option near_dup_threshold must be in \(0, 1\], got 1.5"),
        ({"workers": 0}, "option workers must be at least 1, got 0"),
        ({"normalize": "NFD"}, "option normalize must be one of 'NFC', 'NFKC', 'none'"),
        ({"min_charz": 3}, r"unknown option\(s\) in prepare: min_charz \(did you mean min_chars\?\)"),
    ],
)
def test_api_checks_options_before_reading_anything(tmp_path, monkeypatch, options, message):
    import lmforge.data.pipeline as pipeline

    def read_corpus(*args):
        raise AssertionError("the corpus was read before the options were checked")

    monkeypatch.setattr(pipeline, "read_corpus", read_corpus)
    with pytest.raises(LMForgeError, match=message) as info:
        lmforge.prepare(["no-such-input"], tokenizer="no-such-tokenizer", output=tmp_path / "out", **options)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_api_prepare_takes_flat_options_or_an_options_object(tmp_path, corpus, tiny_tok, tiny_tok_dir):
    flat = lmforge.prepare(
        corpus, tokenizer=tiny_tok_dir, output=tmp_path / "a", workers=1, pii=False, min_chars=0, min_words=0
    )
    assert isinstance(flat, lmforge.PrepareResult)
    assert (flat.documents_read, flat.documents_kept) == (20, 17)  # the short document stays
    assert flat.paths["manifest"].is_file() and flat.tokens["train"] > 0
    base = PrepareOptions(workers=1, pii=False, quality_rules=QualityConfig(min_chars=0, min_words=0))
    same = lmforge.prepare(corpus, tokenizer=tiny_tok, output=tmp_path / "b", config=base)
    assert same.report["rules"] == flat.report["rules"] and same.tokens == flat.tokens
    on_top = lmforge.prepare(corpus, tokenizer=tiny_tok, output=tmp_path / "c", config=base, min_chars=200)
    assert on_top.documents_kept == 16 and base.quality_rules.min_chars == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_bytes(b"caf\xe9 au lait"), "is not UTF-8"),
        (lambda p: None, "input not found"),
        (lambda p: p.write_text("Hi.", encoding="utf-8"), "no documents left after filtering"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, tiny_tok_dir, capsys, setup, message):
    path = tmp_path / "input.txt"
    setup(path)
    rc = main(["prepare", str(path), "--tokenizer", str(tiny_tok_dir), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if not line.startswith("[prepare]")]  # progress lines
    assert len(errors) == 1 and errors[0].startswith("lmforge: error:") and message in errors[0]


def test_lee_corpus_duplicates(tmp_path, tiny_tok):
    """The Lee news corpus repeats seven articles verbatim and one with small edits."""
    report = prepare(["lee"], tiny_tok, tmp_path / "out", PrepareOptions(workers=1))
    counts = {r["rule"]: r["documents"] for r in report["rules"] if r["documents"]}
    assert counts == {"exact_dup": 7, "near_dup": 1}
    (example,) = next(r for r in report["rules"] if r["rule"] == "near_dup")["examples"]
    assert (example["source"], example["similar_to"]) == ("lee:241", "lee:232")
    assert report["kept"]["documents"] == 292


def test_cleaning_releases_the_texts_it_was_given():
    """`clean_documents` consumes its input list, so the caller holds no second copy of the corpus while
    the normalized and scrubbed ones are built: no original text outlives the call."""
    import weakref

    from lmforge.data.corpus import Document
    from lmforge.data.pipeline import Report, clean_documents

    class Text(str):  # a str that can be weakly referenced
        pass

    docs = [Document(Text(paragraph(i, 60) + f" Mail me at user{i}@example.com."), f"d{i}") for i in range(6)]
    alive = [weakref.ref(d.text) for d in docs]
    kept = clean_documents(docs, PrepareOptions(near_dup=False, workers=1), Report())
    assert len(kept) == 6 and all("<EMAIL>" in d.text for d in kept)
    assert docs == [None] * 6 and all(ref() is None for ref in alive)
