"""Enqueue options that coalesce submissions, as pure rules: singletons and debounce.

- **Singleton**: a key (or a template over the args, like a lane: ``report:{customer}``),
  given with the request or by the task type (``[task_types.X] singleton``). At most one
  queued-or-running task of the type holds a key; a submission naming a held key is answered
  with the holder and stores nothing.
- **Debounce**: ``Debounce(key, window, mode)``. Submissions of one type and key within
  ``window`` of the last one become one task, which runs once the window has passed since the
  last submission (trailing debounce). ``mode`` says whose args it runs with: ``"last"`` (the
  default: the latest submission's, as a debounced call of a function would) or ``"first"``.
  Once the task has started, the next submission starts a new task. ``max_wait`` (optional)
  bounds how far a burst may push the start: never later than the first submission plus it.

Keys are scoped to the task type: two types may use the same key text. The adapter keeps
the key tables (``adapters/postgres/coalescing_keys.py``) and the flows
(``adapters/coalesced_enqueue.py``); here are the checks and the rendering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from execution_ledger.domain.durations import parse_duration
from execution_ledger.domain.errors import ConfigError, InvalidSubmission

MAX_KEY_LENGTH = 200
DEBOUNCE_MODES = ("last", "first")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Debounce:
    """Coalesce submissions with ``key`` until ``window`` seconds pass without one."""

    key: str  # a key, or a template over the args (``sync:{account}``)
    window: float  # seconds
    mode: str = "last"  # whose args the task runs with: "last" or "first"
    max_wait: float | None = None  # seconds from the first submission the start may reach


@dataclass(frozen=True)
class Coalescing:
    """What the options make of one submission: its keys, and the start a debounce sets."""

    singleton_key: str | None = None
    debounce_key: str | None = None
    run_at: datetime | None = None
    replace_args: bool = True  # a debounce in mode "last"


NONE = Coalescing()


def debounce_option(value: Any, what: str = "debounce") -> Debounce:
    """A ``Debounce`` from ``{"key": ..., "window": "5s", "mode": "last"}`` (as JSON gives
    it), or from a ``Debounce``; anything else is ``InvalidSubmission``."""
    if isinstance(value, Debounce):
        return check_debounce(value, what)
    if not isinstance(value, Mapping):
        raise InvalidSubmission(f"{what} must be an object with a key and a window")
    unknown = sorted(set(value) - {"key", "window", "mode", "max_wait"})
    if unknown:
        known = "key, window, mode, max_wait"
        raise InvalidSubmission(f"{what}: unknown field {unknown[0]!r} (known: {known})")
    if "window" not in value:
        raise InvalidSubmission(f"{what} needs a window (e.g. '5s')")
    try:
        window = parse_duration(value["window"], ("window",))
    except ConfigError as error:
        raise InvalidSubmission(f"{what}.window: {error.reason}") from None
    key = check_template(value.get("key"), f"{what}.key")
    max_wait = None
    if value.get("max_wait") is not None:
        try:
            max_wait = parse_duration(value["max_wait"], ("max_wait",))
        except ConfigError as error:
            raise InvalidSubmission(f"{what}.max_wait: {error.reason}") from None
    return check_debounce(Debounce(key, window, value.get("mode", "last"), max_wait), what)


def check_debounce(debounce: Debounce, what: str = "debounce") -> Debounce:
    check_template(debounce.key, f"{what}.key")
    window = debounce.window
    if isinstance(window, bool) or not isinstance(window, (int, float)):
        raise InvalidSubmission(f"{what}.window must be a duration")
    try:
        parse_duration(window, ("window",))
    except ConfigError as error:
        raise InvalidSubmission(f"{what}.window: {error.reason}") from None
    if debounce.mode not in DEBOUNCE_MODES:
        raise InvalidSubmission(f"{what}.mode must be 'last' or 'first', not {debounce.mode!r}")
    if debounce.max_wait is not None:
        try:
            parse_duration(debounce.max_wait, ("max_wait",))
        except ConfigError as error:
            raise InvalidSubmission(f"{what}.max_wait: {error.reason}") from None
        if debounce.max_wait < window:
            raise InvalidSubmission(f"{what}.max_wait may not be shorter than the window")
    return debounce


def check_template(template: Any, what: str) -> str:
    """Refuse a key or template that is not a string of 1 to 200 characters."""
    if not isinstance(template, str) or not template.strip():
        raise InvalidSubmission(f"{what} must be a non-empty string")
    if len(template) > MAX_KEY_LENGTH:
        raise InvalidSubmission(f"{what} may be at most {MAX_KEY_LENGTH} characters")
    return template


def render_key(template: str, args: Mapping[str, Any], what: str) -> str:
    """Fill a key template from the args; a missing argument, or a key that comes out empty,
    too long or not storable as text, is ``InvalidSubmission``."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in args:
            raise InvalidSubmission(f"{what} {template!r} needs the argument {name!r}")
        return str(args[name])

    key = _FIELD.sub(fill, template)
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidSubmission(f"{what} {template!r} gives a key of {len(key)} characters "
                                f"(1 to {MAX_KEY_LENGTH} allowed)")  # fmt: skip
    if "\x00" in key:
        raise InvalidSubmission(f"{what} {template!r} gives a key holding a NUL character")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSubmission(f"{what} {template!r} gives a key with a lone surrogate") from None
    return key


def coalescing_of(
    singleton: str | None,
    debounce: Debounce | None,
    type_singleton: str | None,
    args: Mapping[str, Any],
    now: datetime,
) -> Coalescing:
    """The keys of one submission (its own singleton key, else its type's template) and,
    for a debounce, its start: ``now`` plus the window."""
    if singleton is None and debounce is None and type_singleton is None:
        return NONE
    template = singleton if singleton is not None else type_singleton
    singleton_key = None
    if template is not None:
        singleton_key = render_key(check_template(template, "singleton"), args, "singleton")
    if debounce is None:
        return Coalescing(singleton_key=singleton_key)
    if singleton_key is not None:
        raise InvalidSubmission(
            "debounce and a singleton key cannot be combined (a debounced task is already the "
            "one task of its key until it starts)"
        )
    debounce = check_debounce(debounce)
    return Coalescing(
        debounce_key=render_key(debounce.key, args, "debounce.key"),
        run_at=now + timedelta(seconds=debounce.window),
        replace_args=debounce.mode == "last",
    )


def debounced_start(debounce: Debounce, run_at: datetime, first_submitted: datetime) -> datetime:
    """Where a coalesced submission moves the start: ``run_at`` (its own window's end), but
    no later than the first submission plus ``max_wait`` when there is one."""
    if debounce.max_wait is None:
        return run_at
    return min(run_at, first_submitted + timedelta(seconds=debounce.max_wait))


def refuse_conflicts(
    debounce: Debounce | None, idempotency_key: str | None, run_at: datetime | None
) -> None:
    """A debounce sets the start itself and answers repeated submissions itself: an explicit
    ``run_at`` or an idempotency key with it is refused."""
    if debounce is None:
        return
    if idempotency_key is not None:
        raise InvalidSubmission(
            "debounce and an idempotency key cannot be combined: every submission with the "
            "debounce key is answered with the one pending task already"
        )
    if run_at is not None:
        raise InvalidSubmission("debounce sets the start (the window after the last "
                                "submission): run_at cannot be given with it")  # fmt: skip


def check_type_singleton(value: Any, where: tuple[str, ...]) -> str | None:
    """``[task_types.X] singleton``: a key template, checked at load (``ConfigError``)."""
    if value is None:
        return None
    try:
        return check_template(value, "singleton")
    except InvalidSubmission as error:
        raise ConfigError(str(error), where) from None


def debounce_from_text(text: str, mode: str = "last", max_wait: str | None = None) -> Debounce:
    """``KEY:WINDOW`` as the command line gives it (``sync:{account}:5s``: the window
    follows the last colon)."""
    key, colon, window = text.rpartition(":")
    if not colon:
        raise InvalidSubmission(f"--debounce takes KEY:WINDOW (e.g. sync:5s), not {text!r}")
    value = {"key": key, "window": window, "mode": mode, "max_wait": max_wait}
    return debounce_option(value, "--debounce")
