"""Options are declared once, in config dataclasses: every command's flags, defaults and help come from
the fields (drift test), config files and API calls are checked against the same fields, and the same
fields give the HTTP request schema."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from lmforge import cli
from lmforge.errors import LMForgeError
from lmforge.options import build, json_schema, option, specs


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its words ("eval compare")."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


COMMANDS = cli.all_commands()
PARSERS = _subparsers(cli.build_parser())


def _shown(default):
    return default if not isinstance(default, (list, tuple)) or default else "[]"


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_config_field_is_a_flag_with_its_default_and_help(words):
    fn = COMMANDS[words]
    parser = PARSERS[words]
    actions = {a.dest: a for a in parser._actions}
    for name, spec in getattr(fn, "__options__", {}).items():
        action = actions.get(name)
        assert action is not None, f"`lmforge {words}` has no flag for {spec.owner.__name__}.{name}"
        assert f"--{name.replace('_', '-')}" in action.option_strings
        assert spec.help, f"{spec.owner.__name__}.{name} declares no help"
        assert action.help == f"{spec.help} (default: {_shown(spec.default)})"
        assert action.default is argparse.SUPPRESS  # not given: not passed, the field's default applies
        assert fn.__signature__.parameters[name].default == spec.default


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_no_command_declares_a_config_field_again(words):
    assert getattr(COMMANDS[words], "__shadowed__", []) == []


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_command_option_has_help(words):
    parser = PARSERS[words]
    for action in parser._actions:
        if action.dest in ("help", "config") or isinstance(action, argparse._SubParsersAction):
            continue
        text = (action.help or "").split(" (default:")[0].strip()
        assert text, f"`lmforge {words}` option {action.dest} has no help text"
    parser.format_help()  # renders: a literal % in a help text ("95% intervals") once broke `rag eval --help`


@dataclasses.dataclass
class Example:
    steps: int = option(10, "optimizer steps")
    rate: float | None = option(None, "a rate")
    mode: Literal["a", "b"] = option("a", "which mode")
    names: list[str] = option(help="names", default_factory=list)


def test_build_refuses_unknown_keys_and_wrong_types():
    assert build(Example, {"steps": 3, "rate": 1}).rate == 1
    with pytest.raises(
        LMForgeError, match=r"unknown option\(s\) in run.yaml: stepz \(did you mean steps\?\)"
    ):
        build(Example, {"stepz": 3}, "run.yaml")
    with pytest.raises(LMForgeError, match="run.yaml: option steps must be an integer, got '3'"):
        build(Example, {"steps": "3"}, "run.yaml")
    with pytest.raises(LMForgeError, match="option mode must be one of 'a', 'b', got 'c'"):
        build(Example, {"mode": "c"})
    with pytest.raises(LMForgeError, match="option names must be a list of strings"):
        build(Example, {"names": [1]})
    with pytest.raises(LMForgeError, match="option rate must be a number or null"):
        build(Example, {"rate": "fast"})


def test_json_schema_comes_from_the_fields():
    schema = json_schema(Example)
    props = schema["properties"]
    assert props["steps"] == {"type": "integer", "description": "optimizer steps", "default": 10}
    assert props["rate"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert props["mode"]["enum"] == ["a", "b"]
    assert props["names"]["type"] == "array" and props["names"]["items"] == {"type": "string"}
    assert schema["additionalProperties"] is False
    assert [s.name for s in specs(Example)] == list(props)


def test_generation_schema_covers_every_field():
    import lmforge

    schema = json_schema(lmforge.GenerationConfig)
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(lmforge.GenerationConfig)}
    assert schema["properties"]["temperature"]["type"] == "number"


def test_cli_functions_are_thin():
    """Commands parse, call one API function and print: no function in lmforge.cli over 40 lines."""
    import ast
    from pathlib import Path

    folder = Path(cli.__file__).parent
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(folder.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 40
    ]
    assert not long, long
