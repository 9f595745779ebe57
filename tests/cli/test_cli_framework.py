"""Typed functions become commands: signature -> options, docstring -> help, --config supplies values."""

import argparse
import dataclasses
from typing import Literal

import pytest

from lmforge import cli
from lmforge.errors import LMForgeError
from lmforge.options import option, with_options

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
    assert args.lowercase is True and args.bias == {"3": -1.5}
    assert not hasattr(args, "rate")  # not given: left out, so the function's own default applies
    assert parser.parse_args(["demo", "x", "--rate", "none"]).rate is None  # optional values take none


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
    with pytest.raises(LMForgeError, match="unknown option.*vocab_sise \\(did you mean vocab_size\\?\\)"):
        cli.run(["demo", "in.txt", "--config", str(config)])
    config.write_text("vocab_size: many\n")
    with pytest.raises(LMForgeError, match="option vocab_size must be an integer, got 'many'"):
        cli.run(["demo", "in.txt", "--config", str(config)])


@dataclasses.dataclass
class DemoConfig:
    steps: int = option(10, "how many steps")
    name: str | None = option(None, "a name")


@with_options(DemoConfig)
def spy(**options) -> None:
    """Record what arrives."""
    seen.clear()
    seen.update(options)


def test_only_given_options_reach_the_function(monkeypatch):
    monkeypatch.setattr(cli, "all_commands", lambda: {"spy": spy})
    cli.run(["spy", "--steps", "10"])  # typed, though equal to the default: it still arrives
    assert seen == {"steps": 10}
    cli.run(["spy"])
    assert seen == {}  # nothing typed, nothing passed: the library (or model) defaults apply


def test_unknown_flag_names_the_nearest_option(monkeypatch):
    monkeypatch.setattr(cli, "all_commands", lambda: {"demo": demo})
    with pytest.raises(
        LMForgeError, match="unknown option --vocab-sise for `.*demo`; did you mean --vocab-size"
    ):
        cli.run(["demo", "in.txt", "--vocab-sise", "3"])


def test_every_command_builds_and_is_listed(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    for words in cli.all_commands():
        assert words.split()[0] in out
