"""Argument templates: ``"{args.path}"`` or ``"{args[name]}"`` filled from a task's args,
and ``"{deps.NAME.result.path}"`` from the results of the dependencies it takes as inputs
(``domain/inputs.py``; ``NAME`` is the input's name, by default the dependency's ``ref``).

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

from execution_ledger.domain.errors import ConfigError


class ArgumentError(Exception):
    """The task's args cannot fill a template: a key is missing or a value does not fit.
    ``error_class`` is the failure's stable name: ``BadArguments``, or ``InputMissing``
    when a ``{deps...}`` field names an input or a part of a result that is not there."""

    error_class = "BadArguments"


class InputMissing(ArgumentError):
    error_class = "InputMissing"


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
            elif isinstance(value, Mapping) and str(key) in value:
                value = value[str(key)]
            else:
                error = InputMissing if root == "deps" else ArgumentError
                raise error(f"the template needs {'.'.join(path)}, which is missing")
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
        if _field_path(field)[0] not in ("args", "deps"):
            raise ConfigError(f"template field {{{field}}} must start with 'args' or 'deps'", where)
        if spec and "{" in spec:
            raise ConfigError(f"template field {{{field}}} has a nested field in its format", where)


def fill(
    template: str,
    args: Mapping[str, Any],
    quote: Callable[[str], str] = str,
    deps: Mapping[str, Any] | None = None,
) -> str:
    """Fill ``template`` from ``args`` and ``deps`` (the task's inputs); raises
    ``ArgumentError`` if they do not fit it."""
    try:
        values = {"args": args, "deps": deps if deps is not None else {}}
        return ArgsFormatter(quote).vformat(template, (), values)
    except ValueError as exc:
        raise ArgumentError(f"cannot fill {template!r}: {exc}") from exc


def error_class(error: Exception) -> str:
    """The failure's stable name for an error met while filling templates."""
    return getattr(error, "error_class", "BadArguments")


def payload_of(args: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON object an HTTP body or a NATS payload carries: the args, and for a task that
    takes its dependencies' results, those under ``"deps"`` (replacing an arg of that name)."""
    return dict(args) if inputs is None else {**args, "deps": dict(inputs)}
