"""Argument templates: ``"{args.path}"`` or ``"{args[name]}"`` filled from a task's args.

The formatter can only look up keys of the args mapping (``args.a.b`` and ``args[a][b]`` are
both key lookups, never attribute access), so a template cannot reach Python objects. Strings
and numbers are inserted as text; lists, dicts, booleans and null as JSON.
"""

from __future__ import annotations

import _string
import json
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from domain.errors import ConfigError


class ArgumentError(Exception):
    """The task's args cannot fill a template: a key is missing or a value does not fit."""


class ArgsFormatter(string.Formatter):
    """``str.format`` restricted to key lookups in ``args``; ``quote`` escapes each value."""

    def __init__(self, quote: Callable[[str], str] = str) -> None:
        self.quote = quote

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        root, rest = _field_path(field_name)
        value: Any = kwargs[root]
        path = [root]
        for key in rest:
            path.append(str(key))
            if isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
                value = value[key]
            elif isinstance(value, dict) and str(key) in value:
                value = value[str(key)]
            else:
                raise ArgumentError(f"the template needs {'.'.join(path)}, which is missing")
        return value, root

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, (dict, list, bool)) or value is None:
            value = json.dumps(value)
        return self.quote(format(value, format_spec))


def _field_path(field_name: str) -> tuple[str, list[str | int]]:
    root, rest = _string.formatter_field_name_split(field_name)
    return root, [key for _is_attribute, key in rest]


def check_template(template: str, where: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` unless every field of ``template`` looks a value up in ``args``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"bad template {template!r}: {exc}", where) from exc
    for _text, field, spec, _conversion in parsed:
        if field is None:
            continue
        if _field_path(field)[0] != "args":
            raise ConfigError(f"template field {{{field}}} must start with 'args'", where)
        if spec and "{" in spec:
            raise ConfigError(f"template field {{{field}}} has a nested field in its format", where)


def fill(template: str, args: Mapping[str, Any], quote: Callable[[str], str] = str) -> str:
    """Fill ``template`` from ``args``; raises ``ArgumentError`` if they do not fit it."""
    try:
        return ArgsFormatter(quote).vformat(template, (), {"args": args})
    except ValueError as exc:
        raise ArgumentError(f"cannot fill {template!r}: {exc}") from exc
