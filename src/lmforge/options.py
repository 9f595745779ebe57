"""Options declared once: a config dataclass field holds an option's type, default and help.

```python
@dataclass
class TrainConfig:
    lr: float = option(1e-3, "peak learning rate")
```
Everything else is derived from the field: the CLI flag and its `--help` line (`with_options` appends
a config's fields to a command's signature, which `lmforge.cli` turns into flags), the keys a YAML/JSON
config file may hold (`build` refuses unknown keys, naming the nearest valid one, and values of the
wrong type, naming the field and the type), and the JSON schema of an HTTP request (`json_schema`).
"Not given" is never "equal to the default": the CLI passes only the options a user typed, so a
typed value always wins over a model's or a preset's own defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError

MISSING = dataclasses.MISSING


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING) -> Any:
    """A dataclass field with its help text (the one place an option is described)."""
    metadata = {"help": help}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """One option as every front end sees it."""

    name: str
    type: Any
    default: Any
    help: str
    owner: type


def specs(cls: type, skip: Iterable[str] = ()) -> list[OptionSpec]:
    """The options of config class `cls`, in declaration order (fields without help text included)."""
    hints = typing.get_type_hints(cls)
    skipped = set(skip)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skipped or f.name.startswith("_"):
            continue
        default = f.default
        if f.default_factory is not MISSING:
            default = f.default_factory()
        out.append(OptionSpec(f.name, hints[f.name], default, f.metadata.get("help", ""), cls))
    return out


def with_options(*classes: type, skip: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Append the fields of `classes` to a command function's signature and `Args:` docstring as
    keyword options. The function takes them through `**options`; `fn.__options__` maps each appended
    name to its spec. A field the function names itself keeps the function's definition and is listed
    in `fn.__shadowed__`: leave such a field out with `skip` instead, so it is declared once."""
    skip = tuple(skip)

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        annotations = typing.get_type_hints(fn)
        taken = {p.name for p in params}
        appended: dict[str, OptionSpec] = {}
        lines = []
        for cls in classes:
            for spec in specs(cls, skip):
                if spec.name in taken or spec.name in appended:
                    continue
                params.append(
                    inspect.Parameter(
                        spec.name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=spec.type
                    )
                )
                annotations[spec.name] = spec.type
                appended[spec.name] = spec
                lines.append(f"    {spec.name}: {spec.help}")
        doc = inspect.getdoc(fn) or ""
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        fn.__annotations__ = annotations
        fn.__doc__ = doc + ("\n" if "\nArgs:\n" in doc else "\n\nArgs:\n") + "\n".join(lines)
        fn.__options__ = {**getattr(fn, "__options__", {}), **appended}  # type: ignore[attr-defined]
        # a config field the function declares itself is a second declaration (tests/cli checks none)
        fn.__shadowed__ = sorted(  # type: ignore[attr-defined]
            {s.name for cls in classes for s in specs(cls, skip)} & taken
        )
        return fn

    return decorate


def pick(values: dict[str, Any], cls: type) -> dict[str, Any]:
    """The entries of `values` that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a mistyped `name`, if any is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_error(names: Iterable[str], valid: Iterable[str], where: str) -> LMForgeError:
    """One line naming the unknown option(s) and, for each, the nearest valid one."""
    valid = list(valid)
    parts = []
    for name in sorted(names):
        guess = nearest(name, valid)
        parts.append(f"{name} (did you mean {guess}?)" if guess else name)
    return LMForgeError(f"unknown option(s) in {where}: {', '.join(parts)}")


def build(cls: type, values: dict[str, Any], where: str = "options") -> Any:
    """`cls(**values)` for a config class, after refusing unknown keys (with the nearest valid name)
    and values of the wrong type (naming the field and the type)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = set(values) - set(names)
    if unknown:
        raise unknown_error(unknown, names, where)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        check_value(key, value, hints[key], where)
    return cls(**values)


def configure(
    cls: type, config: Any = None, options: dict[str, Any] | None = None, where: str = "options"
) -> Any:
    """A `cls` from a config object (a `cls`, or one of its base classes) and/or flat keyword options
    on top of it; unknown names and wrong types are refused, naming the nearest valid option. What every
    API function that takes "options as keywords, or one config object, or both" calls."""
    if config is not None and not (isinstance(config, cls) or type(config) in cls.__mro__[1:-1]):
        raise LMForgeError(f"{where}: config must be a {cls.__name__}, not {type(config).__name__}")
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init} if config else {}
    return build(cls, {**base, **(options or {})}, where)


def same_as(cls: type, name: str, default: Any = MISSING) -> Any:
    """Field `name` of config class `cls` declared again for another config (fine-tuning's `steps`,
    LoRA's `rank` as `lora_rank`): the same help, and the same default unless `default` is given."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default is MISSING and f.default_factory is not MISSING:
        return option(default_factory=f.default_factory, help=f.metadata["help"])
    return option(f.default if default is MISSING else default, f.metadata["help"])


def check_types(obj: Any, where: str | None = None) -> None:
    """Check every field of a config dataclass instance against its annotation (from __post_init__)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init:
            check_value(f.name, getattr(obj, f.name), hints[f.name], where or type(obj).__name__)


def check_value(name: str, value: Any, tp: Any, where: str = "options") -> None:
    if not _matches(value, tp):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise LMForgeError(f"{where}: option {name} must be {type_name(tp)}, got {shown}")


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def type_name(tp: Any) -> str:
    """How a type reads in an error message: "an integer", "one of 'a', 'b'", "a list of strings"."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        item = args[0] if args else Any
        return f"a list of {_plural(item)}"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        dict: "a mapping",
    }.get(tp, "a mapping" if origin is dict else getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, type_name(tp))


def json_schema(cls: type, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON schema (draft 2020-12 subset) of a config class: what an HTTP body may hold."""
    properties = {}
    for spec in specs(cls, skip):
        prop = _schema(spec.type)
        if spec.help:
            prop["description"] = spec.help
        if _jsonable(spec.default):
            prop["default"] = spec.default
        properties[spec.name] = prop
    return {"title": cls.__name__, "type": "object", "properties": properties, "additionalProperties": False}


def _jsonable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str, list, dict, tuple))


def _schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple) or tp in (list, tuple):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}
    return {"type": simple[tp]} if tp in simple else {}
