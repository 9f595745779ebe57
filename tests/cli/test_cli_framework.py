"""Typed functions become commands: signature -> options, docstring -> help, --config supplies values."""

import argparse
from typing import Literal

import pytest

from lmforge import cli
from lmforge.errors import LMForgeError

seen = {}


def demo(
    inputs: list[str],
    vocab_size: int = 100,
    algorithm: Literal["bpe", "unigram"] = "bpe",
    lowercase: bool = False,
    bias: dict | None = None,
    rate: float | None = None,
) -> None:
    """Train something.

    Args:
        inputs: files to read.
        vocab_size: how many tokens.
        algorithm: which algorithm.
        lowercase: lowercase first.
        bias: token id -> bias as JSON.
        rate: a rate.
    """
    seen.update(locals())


@pytest.fixture
def parser():
    p = argparse.ArgumentParser()
    cli.add_function(p.add_subparsers(), "demo", demo)
    return p


def test_signature_becomes_options(parser):
    args = parser.parse_args(
        [
            "demo",
            "a.txt",
            "b.txt",
            "--vocab-size",
            "7",
            "--algorithm",
            "unigram",
            "--lowercase",
            "--bias",
            '{"3": -1.5}',
        ]
    )
    assert args.inputs == ["a.txt", "b.txt"] and args.vocab_size == 7 and args.algorithm == "unigram"
    assert args.lowercase is True and args.bias == {"3": -1.5} and args.rate is None


def test_help_shows_docstring_and_defaults(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    out = capsys.readouterr().out
    assert "Train something." in out and "how many tokens. (default: 100)" in out
    assert "{bpe,unigram}" in out


def test_bad_choice_is_rejected(parser):
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "x", "--algorithm", "wordpiece"])


def test_config_file_supplies_values_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "all_commands", lambda: {"demo": demo})
    config = tmp_path / "c.yaml"
    config.write_text("vocab_size: 42\nalgorithm: unigram\nrate: 0.5\n")
    cli.run(["demo", "in.txt", "--config", str(config), "--vocab-size", "9"])
    assert seen["vocab_size"] == 9 and seen["algorithm"] == "unigram" and seen["rate"] == 0.5
    config.write_text("vocab_sise: 42\n")
    with pytest.raises(LMForgeError, match="unknown option.*vocab_sise"):
        cli.run(["demo", "in.txt", "--config", str(config)])


def test_every_command_builds_and_is_listed(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    for words in cli.all_commands():
        assert words.split()[0] in out
