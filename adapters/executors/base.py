"""The contract every executor adapter fulfils, and the settings checks they share.

An executor runs one ``Execution`` and turns whatever happens into the one result type:
``Success`` or ``Failure`` with a stable ``error_class``. It never raises for a failure of the
work itself. The worker enforces ``start_to_close`` by cancelling ``run()``; an executor must
stop all the work it started (processes killed, requests aborted) before the
``CancelledError`` propagates.

Settings come from two places: deployment-wide defaults given to the executor's constructor,
overridden key by key by the task type's ``settings``. ``check_settings`` is called once when
the registry is loaded, so bad configuration fails at start, not at the first run. Keys in
``deployment_keys`` (what a sandbox is allowed to loosen, e.g. docker's ``allow_root``) come
from the defaults only, the file's ``[adapters.NAME]``: a task type or an ad-hoc task that
gives one is refused, so no task can allow itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from typing import Any, Generic, TypeVar

from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success

SettingsT = TypeVar("SettingsT")


class Executor(ABC, Generic[SettingsT]):
    """Runs executions of task types whose ``adapter`` is ``name``."""

    name: str
    deployment_keys: frozenset[str] = frozenset()

    def __init__(self, defaults: Mapping[str, Any] | None = None) -> None:
        self.defaults: dict[str, Any] = dict(defaults or {})

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Raise ``ConfigError(reason, where=(key,))`` if ``settings`` cannot be run."""
        self.parse_settings(self.merged(settings))

    def merged(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults overridden by a task's ``settings``, which may not hold a
        deployment key."""
        given = sorted(self.deployment_keys & set(settings))
        if given:
            raise ConfigError(
                f"can only be set in the configuration file's [adapters.{self.name}] table, "
                "not by a task type or an ad-hoc task",
                (given[0],),
            )
        return {**self.defaults, **settings}

    async def run(self, execution: Execution) -> Success | Failure:
        try:
            settings = self.parse_settings(self.merged(execution.settings))
        except ConfigError as exc:
            where = ".".join(exc.where)
            return Failure("BadSettings", f"{where}: {exc.reason}", retryable=False)
        return await self.execute(settings, execution)

    @abstractmethod
    def parse_settings(self, settings: dict[str, Any]) -> SettingsT:
        """Validate raw settings into this executor's typed settings object."""

    @abstractmethod
    async def execute(self, settings: SettingsT, execution: Execution) -> Success | Failure:
        """Run ``execution`` with already validated ``settings``."""


async def settle(future: Awaitable[Any]) -> None:
    """Wait for ``future`` to finish even through further cancellations (an attempt may be
    cancelled twice: its lease lost and a cancel notice), ignoring its outcome. The
    cancellation being handled is re-raised by the caller, once."""
    future = asyncio.ensure_future(future)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])
    if not future.cancelled():
        future.exception()


def refuse_unknown(settings: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})", (unknown[0],)
        )


def optional_int(settings: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    """A positive integer setting, or ``default`` (possibly ``None``) when absent."""
    value = settings.get(key, default)
    return None if value is None else _positive(value, key)


def positive_int(settings: Mapping[str, Any], key: str, default: int) -> int:
    return _positive(settings.get(key, default), key)


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"must be a positive integer, got {value!r}", (key,))
    return value


def boolean(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", (key,))
    return value


def string(settings: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = settings.get(key, default)
    if value is None:
        raise ConfigError("is required", (key,))
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", (key,))
    return value


def string_list(settings: Mapping[str, Any], key: str, default: list[str]) -> tuple[str, ...]:
    value = settings.get(key, default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"must be a list of strings, got {value!r}", (key,))
    return tuple(value)


def string_map(settings: Mapping[str, Any], key: str) -> dict[str, str]:
    value = settings.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"must be a table of strings, got {value!r}", (key,))
    return dict(value)
