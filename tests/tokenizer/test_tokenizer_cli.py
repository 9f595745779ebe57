"""`lmforge tokenizer train|encode|decode|inspect|stats` through the real argument parser."""

from __future__ import annotations

import json

import pytest

from lmforge.assets import shakespeare_files
from lmforge.cli import main
from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "corpus.txt"
    path.write_text(shakespeare_files()[0].read_text(encoding="utf-8")[:30000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    outs = {}
    for algorithm in ["bpe", "wordpiece", "unigram"]:
        out = tmp_path_factory.mktemp(algorithm)
        args = ["tokenizer", "train", str(corpus), "--output", str(out), "--algorithm", algorithm]
        assert (
            main(
                [*args, "--vocab-size", "500", "--no-show-progress", "--extra-special-tokens", "<|im_start|>"]
            )
            == 0
        )
        outs[algorithm] = out
    return outs


def test_train_encode_decode(trained, capsys):
    capsys.readouterr()
    bpe = str(trained["bpe"])
    assert main(["tokenizer", "encode", bpe, "The king 🎭"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == Tokenizer.from_dir(bpe).encode("The king 🎭")
    assert main(["tokenizer", "decode", bpe, *map(str, ids)]) == 0
    assert capsys.readouterr().out == "The king 🎭\n"
    assert main(["tokenizer", "encode", bpe, "<|im_start|>", "--allow-special", "--json-output"]) == 0
    assert json.loads(capsys.readouterr().out) == [Tokenizer.from_dir(bpe).token_to_id("<|im_start|>")]


def test_inspect_shows_pieces(trained, capsys, tmp_path):
    text_file = tmp_path / "t.txt"
    text_file.write_text("a 🎭")
    assert main(["tokenizer", "inspect", str(trained["bpe"]), f"@{text_file}"]) == 0
    out = capsys.readouterr().out
    assert "'Ġ'" in out and "f0" in out and "vocab_size=500" in out


def test_stats_compares_tokenizers(trained, capsys, tmp_path):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(
        shakespeare_files()[1].read_text(encoding="utf-8")[:20000] + "\n東京\n", encoding="utf-8"
    )
    paths = [str(trained[a]) for a in ["bpe", "wordpiece", "unigram"]]
    report = tmp_path / "stats.json"
    assert main(["tokenizer", "stats", *paths, "--text-file", str(held_out), "--json-path", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") >= 4 and "bytes/token" in out
    rows = {r["name"]: r for r in json.loads(report.read_text())["tokenizers"]}
    bpe, wordpiece = rows[trained["bpe"].name], rows[trained["wordpiece"].name]
    assert bpe["unk_rate"] == 0 and bpe["round_trip"]
    assert wordpiece["unk_rate"] > 0  # 東京 was never seen
    text = held_out.read_text(encoding="utf-8")
    assert bpe["tokens"] == sum(
        len(r) for r in Tokenizer.from_dir(paths[0]).encode_batch(text.splitlines(True))
    )
    assert bpe["bytes_per_token"] == pytest.approx(len(text.encode()) / bpe["tokens"])


def test_special_tokens_map_replaces_defaults(corpus, tmp_path):
    out = tmp_path / "tok"
    names = '{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}'
    args = [
        "tokenizer",
        "train",
        str(corpus),
        "--output",
        str(out),
        "--vocab-size",
        "400",
        "--no-show-progress",
    ]
    assert main([*args, "--special-tokens", names]) == 0
    tok = Tokenizer.from_dir(out)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert tok.token_to_id("<|endoftext|>") is None


def test_errors_are_one_line(tmp_path, capsys):
    capsys.readouterr()
    assert (
        main(["tokenizer", "train", str(tmp_path), "--output", str(tmp_path / "o"), "--no-show-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error:") and err.count("\n") == 1 and "no text files" in err
    assert main(["tokenizer", "encode", "no-such-tokenizer", "hi"]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_options_are_the_config_fields():
    """`tokenizer train` and `train_tokenizer` take the same options, declared once in TokenizerTrainConfig."""
    import argparse
    import dataclasses

    import lmforge
    from lmforge import cli

    tokenizer = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    tokenizer = tokenizer.choices["tokenizer"]
    train = next(a for a in tokenizer._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    flags = {s for action in train._actions for s in action.option_strings}
    for field in dataclasses.fields(lmforge.TokenizerTrainConfig):
        assert "--" + field.name.replace("_", "-") in flags
    with pytest.raises(lmforge.LMForgeError, match=r"vocab_sise \(did you mean vocab_size\?\)"):
        lmforge.train_tokenizer(["/no/such/file.txt"], vocab_sise=300)
    with pytest.raises(lmforge.LMForgeError, match="option min_frequency must be an integer, got '2'"):
        lmforge.train_tokenizer(["/no/such/file.txt"], min_frequency="2")
