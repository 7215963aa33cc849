"""Command-line argument parsing for ``samkit``: ``key=value`` (Ultralytics habit) or ``--key value``.

Values are parsed as Python literals where they look like one: numbers, booleans
(``true``/``false``/``yes``/``no``), ``none``, and lists (``bboxes=[439,437,524,709]``, nested
lists for several objects). Each subcommand declares its arguments as :class:`Arg` records, which
also generate ``--help``.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SamkitError


class UsageError(SamkitError):
    """A command-line usage error (exit code 2)."""


_BOOL = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NONE = {"none", "null"}


def parse_value(text: str) -> Any:
    """Parse a command-line value: number, bool, None, list/tuple literal, or the string itself."""
    s = text.strip()
    low = s.lower()
    if low in _BOOL:
        return _BOOL[low]
    if low in _NONE:
        return None
    if s[:1] in "[(":
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError):
            inner = s[1:-1] if s[-1:] in "])" else None
            if inner is not None and not any(c in inner for c in "[]()"):
                # a flat list of bare words: [sam_b,mobile_sam]
                return [parse_value(item) for item in inner.split(",") if item.strip()]
            raise UsageError(
                f"cannot parse {text!r} as a list; write e.g. [1,2,3] or [[1,2],[3,4]]"
            ) from None
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


@dataclass(frozen=True)
class Arg:
    """One command-line argument: name, default, meaning, and an optional checker/converter."""

    name: str
    default: Any
    help: str
    kind: str = "any"  # any | int | float | bool | str | path | list | choice
    choices: Sequence[str] = ()

    def convert(self, value: Any) -> Any:
        expected = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "path": "a path",
            "list": "a list like [1,2,3]",
            "choice": "one of " + ", ".join(self.choices),
        }.get(self.kind, "a value")
        if value is None or self.kind == "any":
            return value
        ok = True
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind in ("str", "path"):
            value = str(value)
        elif self.kind == "list":
            if isinstance(value, int | float):
                value = [value]
            ok = isinstance(value, list | tuple)
        elif self.kind == "choice":
            value = str(value)
            ok = value in self.choices
        if not ok:
            raise UsageError(f"argument '{self.name}': expected {expected}, got {value!r}")
        return value


def split_argv(argv: Sequence[str], flags: Sequence[str] = ()) -> dict[str, str | None]:
    """``["a=1", "--b", "2", "--c=3", "--flag"]`` -> ``{"a": "1", "b": "2", "c": "3", "flag": None}``."""
    out: dict[str, str | None] = {}
    i = 0
    argv = list(argv)
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            body = token[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif body in flags or i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                key, value = body, None
            else:
                key, value = body, argv[i + 1]
                i += 1
        elif "=" in token:
            key, value = token.split("=", 1)
        else:
            raise UsageError(
                f"unexpected argument {token!r}: write arguments as key=value or --key value"
            )
        key = key.replace("-", "_")
        if not key:
            raise UsageError(f"argument {token!r} has no name")
        out[key] = value
        i += 1
    return out


def parse_args(argv: Sequence[str], spec: Sequence[Arg], command: str) -> dict[str, Any]:
    """Parse ``argv`` against ``spec``: defaults filled in, unknown names and bad values rejected."""
    by_name = {a.name: a for a in spec}
    flags = [a.name for a in spec if a.kind == "bool"]
    raw = split_argv(argv, flags)
    values = {a.name: a.default for a in spec}
    for key, text in raw.items():
        if key not in by_name:
            close = difflib.get_close_matches(key, list(by_name), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(
                f"unknown argument {key!r} for 'samkit {command}'{hint} "
                f"(see 'samkit {command} --help')"
            )
        arg = by_name[key]
        value = True if text is None and arg.kind == "bool" else parse_value(text or "")
        if text is None and arg.kind != "bool":
            raise UsageError(f"argument '{key}' needs a value: {key}=VALUE or --{key} VALUE")
        values[key] = arg.convert(value)
    return values


def format_help(command: str, summary: str, spec: Sequence[Arg], usage: str = "") -> str:
    lines = [f"usage: samkit {command} {usage or '[key=value ...]'}", "", summary, "", "arguments:"]
    width = max((len(a.name) for a in spec), default=0)
    for a in spec:
        default = "-" if a.default is None else repr(a.default)
        lines.append(f"  {a.name:<{width}}  {a.help} (default: {default})")
    lines.append("")
    lines.append("Arguments are written key=value or --key value; lists as [x1,y1,x2,y2].")
    return "\n".join(lines)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    spec: Sequence[Arg]
    run: Callable[[dict[str, Any]], int]
    usage: str = ""
