"""`lmforge <command>`: every command is a typed Python function; its signature and docstring are its CLI.

Each area keeps its commands in a module of this package with a `COMMANDS` dict mapping the command
words ("tokenizer train") to functions. `build_parser` turns signatures into argparse options:
positional parameters without defaults become positionals, the rest `--options` with their defaults in
`--help`; `bool` becomes `--flag/--no-flag`, `list[X]` takes several values, `Literal[...]` gives
choices, `dict` takes JSON, an optional value also takes `none`. Options declared in a config dataclass
are appended to a command with `lmforge.options.with_options`, so each is declared once.
`--config FILE.yaml` (or .json) supplies any option's value; flags given on the command line win.
Only the options a user gives (on the command line or in the file) reach the function: "not given"
is never mistaken for "equal to the default", so a typed value wins over a model's own defaults.
Unknown options, in either place, are one-line errors that name the nearest valid option.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import sys
import traceback
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError, os_error_line

# Modules of this package that define COMMANDS; each area adds its own.
COMMAND_MODULES = [
    "model",
    "eval",
    "data",
    "train",
    "generate",
    "tokenizer",
    "quant",
    "serve",
    "rag",
    "embeddings",
]


def all_commands() -> dict[str, Callable]:
    commands: dict[str, Callable] = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"lmforge.cli.{name}")
        commands.update(module.COMMANDS)
    return commands


def _doc_parts(fn: Callable) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument help."""
    doc = inspect.getdoc(fn) or ""
    description, _, args_block = doc.partition("\nArgs:\n")
    arg_help: dict[str, str] = {}
    current = None
    for line in args_block.splitlines():
        match = re.match(r"^\s{0,8}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if match:
            current = match.group(1)
            arg_help[current] = match.group(2).strip()
        elif current and line.strip():
            arg_help[current] += " " + line.strip()
    return description.strip(), arg_help


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc.msg})") from None


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A converter that also reads `none`/`null` as None (for options whose value may be unset)."""

    def read(text: str) -> Any:
        return None if text.lower() in ("none", "null") else convert(text)

    read.__name__ = getattr(convert, "__name__", "value")
    return read


def _add_param(parser: argparse.ArgumentParser, param: inspect.Parameter, tp: Any, help_text: str) -> None:
    optional = _unwrap_optional(tp) is not tp
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    kwargs: dict[str, Any] = {}
    positional = param.default is inspect.Parameter.empty and param.kind != inspect.Parameter.KEYWORD_ONLY
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        choices = typing.get_args(tp)
        kwargs["choices"] = choices
        kwargs["type"] = type(choices[0])
    elif origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (str,)
        kwargs["nargs"] = "+" if positional else "*"
        kwargs["type"] = _unwrap_optional(item)
        if not positional and not param.default:  # `--model a --model b` collects both
            kwargs["action"] = "extend"
    elif origin is dict or tp is dict:
        kwargs["type"] = _json_arg
    elif tp in (int, float, str, Path):
        kwargs["type"] = _or_none(tp) if optional and tp is not str else tp
    if param.default is not inspect.Parameter.empty:
        default = param.default
        shown = default if not isinstance(default, (list, tuple)) or default else "[]"
        help_text = f"{help_text} (default: {shown})".strip()
        # an option not given stays out of the call: the function's (or the model's) default applies
        kwargs["default"] = default if positional else argparse.SUPPRESS
    help_text = help_text.replace("%", "%%")  # argparse %-formats help: "95% intervals" is text
    if positional:
        parser.add_argument(param.name, help=help_text, **kwargs)
    else:
        flag = "--" + param.name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        parser.add_argument(flag, dest=param.name, help=help_text, required=required, **kwargs)


def add_function(subparsers: Any, words: str, fn: Callable) -> argparse.ArgumentParser:
    description, arg_help = _doc_parts(fn)
    parser = subparsers.add_parser(
        words.split()[-1],
        help=description.splitlines()[0] if description else None,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        _add_param(parser, param, hints.get(param.name, str), arg_help.get(param.name, ""))
    parser.add_argument("--config", type=Path, default=None, help="YAML or JSON file with option values")
    parser.set_defaults(_fn=fn, _parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge", description="A hackable, end-to-end language-model toolkit."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind an error (or LMFORGE_DEBUG=1)"
    )
    top = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups: dict[str, Any] = {}
    parsers: dict[
        str, argparse.ArgumentParser
    ] = {}  # a command may also head a group ("eval", "eval compare")
    for words, fn in sorted(all_commands().items()):
        parts = words.split()
        sub = top
        for depth in range(len(parts) - 1):
            key = " ".join(parts[: depth + 1])
            if key not in groups:
                group_parser = parsers.get(key) or sub.add_parser(parts[depth], help=f"{key} commands")
                groups[key] = group_parser.add_subparsers(title=f"{key} commands", metavar="COMMAND")
            sub = groups[key]
        parsers[words] = add_function(sub, words, fn)
    return parser


def _load_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LMForgeError(f"config file not found: {path}")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = (yaml.safe_load(text) or {}) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LMForgeError(f"config file {path} is not valid YAML/JSON ({first})") from None
    if not isinstance(data, dict):
        raise LMForgeError(f"config file {path} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def run(argv: list[str] | None = None) -> Any:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    fn = getattr(args, "_fn", None)
    if fn is None:
        if extra:
            parser.parse_args(argv)  # argparse's own message for an unknown command
        parser.print_help()
        return None
    if extra:
        raise _unknown_arguments(args._parser, extra)
    params = inspect.signature(fn).parameters  # a subcommand's namespace also holds its group's options
    values = {k: v for k, v in vars(args).items() if k in params}
    if args.config is not None:
        from_file = _load_config(args.config)
        keyword = [p for p in params.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        unknown = set(from_file) - {p.name for p in keyword}
        if unknown:
            from lmforge.options import unknown_error

            raise unknown_error(unknown, [p.name for p in keyword], str(args.config))
        hints = typing.get_type_hints(fn)
        for key, value in from_file.items():
            if key not in values:
                from lmforge.options import check_value

                check_value(key, value, hints.get(key, Any), str(args.config))
                values[key] = value
    return fn(**values)


def _unknown_arguments(parser: argparse.ArgumentParser, extra: list[str]) -> LMForgeError:
    """One line for arguments the command does not take, naming the nearest valid option."""
    from lmforge.options import nearest

    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    for item in extra:
        if item.startswith("--"):
            name = item.split("=")[0]
            guess = nearest(name, flags)
            hint = f"; did you mean {guess}?" if guess else f"; see `{parser.prog} --help`"
            return LMForgeError(f"unknown option {name} for `{parser.prog}`{hint}")
    return LMForgeError(f"unexpected argument(s) for `{parser.prog}`: {' '.join(extra)}")


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors print one line (`--debug` anywhere, or LMFORGE_DEBUG=1, adds the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LMFORGE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    import lmforge

    lmforge.keep_freed_memory()  # every command allocates big tensors: reuse freed memory (see there)
    try:
        run(argv)
    except LMForgeError as exc:
        if debug:
            traceback.print_exc()
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # one a command did not turn into an LMForgeError itself
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug or LMFORGE_DEBUG=1 for the traceback)"
        print(f"lmforge: error: {os_error_line(exc, doing='accessing')}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
