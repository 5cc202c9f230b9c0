"""The central registry: task types, queues, lanes, roles and defaults, as immutable objects.

Built once at start from the configuration mapping (the TOML file, parsed elsewhere) by
``build_registry``; every error is a ``ConfigError`` naming the key path at fault.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jsonschema

from execution_ledger.domain.coalescing import check_type_singleton
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.nats_routes import NatsSettings, build_nats_settings
from execution_ledger.domain.rate_limits import RateLimit, build_rate_limits, check_key_template
from execution_ledger.domain.retry import RetryPolicy
from execution_ledger.domain.schedules import Schedule, build_schedule
from execution_ledger.domain.timeouts import TimeoutOverrides, Timeouts

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
BUILTIN_ROLES = ("admin", "coder", "tester", "critic")

# (adapter name, settings, key path) -> None, raising ConfigError; supplied by the wiring.
AdapterCheck = Callable[[str, dict[str, Any], tuple[str, ...]], None]


@dataclass(frozen=True)
class QueueConfig:
    name: str
    concurrency: int = 10
    paused: bool = False
    timeouts: TimeoutOverrides = field(default_factory=TimeoutOverrides)
    fair_key: str | None = None  # a key template: candidates taken in turns across its keys


@dataclass(frozen=True)
class LaneRule:
    """Lanes whose key matches ``pattern`` (a glob such as ``agent:*``) run ``limit`` at once."""

    pattern: str
    limit: int = 1


@dataclass(frozen=True)
class TaskType:
    name: str
    adapter: str
    settings: Mapping[str, Any]
    queue: str
    priority: int
    timeouts: TimeoutOverrides
    retry: RetryPolicy
    roles: tuple[str, ...]
    schema: Mapping[str, Any] | None
    lane: str | None = None
    learn_hook: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    inputs: bool = False  # take the dependencies' results as inputs (by ref)
    signals: tuple[str, ...] = ()  # signals needed before the task runs
    signal_by_other: bool = False  # a signaller must not be the task's requester
    signals_to_finish: tuple[str, ...] = ()  # signals needed before a success is final
    singleton: str | None = None  # a key template: one queued-or-running task per key


@dataclass(frozen=True)
class WorkflowLimits:
    """``[defaults.workflows]``: limits on children spawned at run time and on inputs."""

    max_children: int = 100  # children per attempt
    max_depth: int = 5  # a child's depth (a submitted task is 0)
    max_input_bytes: int = 1024 * 1024  # the JSON of all of a task's inputs


@dataclass(frozen=True)
class Role:
    """What a role may do: enqueue types matching ``task_types`` through ``adapters``."""

    name: str
    task_types: tuple[str, ...] = ("*",)
    adapters: tuple[str, ...] = ("*",)
    may_cancel: bool = True
    adhoc: bool = False
    signals: tuple[str, ...] = ("*",)  # globs of the signal names it may deliver
    may_schedule: bool = False  # create, change, pause and backfill schedules (admin always may)

    def may_signal(self, name: str) -> bool:
        return matches_any(name, self.signals)

    def may_enqueue(self, task_type: TaskType) -> bool:
        return matches_any(task_type.name, self.task_types) and matches_any(
            task_type.adapter, self.adapters
        )


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    token_sha256: str


@dataclass(frozen=True)
class Registry:
    default_timeouts: Timeouts
    default_retry: RetryPolicy
    default_queue: str
    task_types: Mapping[str, TaskType]
    queues: Mapping[str, QueueConfig]
    lanes: tuple[LaneRule, ...] = ()
    roles: Mapping[str, Role] = field(default_factory=dict)
    principals: tuple[Principal, ...] = ()
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    nats: NatsSettings = field(default_factory=NatsSettings)
    workflows: WorkflowLimits = field(default_factory=WorkflowLimits)
    version: int | None = None  # its recorded version (RegistryChanged); None: not recorded
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)

    def task_type(self, name: str) -> TaskType | None:
        return self.task_types.get(name)

    def queue(self, name: str) -> QueueConfig:
        return self.queues.get(name) or QueueConfig(name=name)

    def lane_limit(self, lane: str) -> int:
        for rule in self.lanes:
            if fnmatch.fnmatchcase(lane, rule.pattern):
                return rule.limit
        return 1


def matches_any(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# -- building from a configuration mapping ----------------------------------------------

_TOP_LEVEL = {
    "ledger",
    "http",
    "adapters",
    "defaults",
    "queues",
    "lanes",
    "task_types",
    "roles",
    "principals",
    "schedules",
    "nats",
    "rate_limits",
    "retention",
    "telemetry",
}


def build_registry(data: Mapping[str, Any], adapter_check: AdapterCheck | None = None) -> Registry:
    """Check and convert the parsed configuration into a ``Registry``."""
    _refuse_unknown(data, _TOP_LEVEL, ())
    defaults = _table(data, "defaults", ())
    _refuse_unknown(defaults, {"queue", "timeouts", "retry", "workflows"}, ("defaults",))
    default_timeouts = _default_timeouts(defaults.get("timeouts"))
    default_retry = RetryPolicy().overridden(defaults.get("retry"), ("defaults", "retry"))
    default_queue = _name(defaults.get("queue", "default"), ("defaults", "queue"))
    queues = {
        name: _queue(name, spec, ("queues", name))
        for name, spec in _table(data, "queues", ()).items()
    }
    queues.setdefault(default_queue, QueueConfig(name=default_queue))
    roles = _roles(_table(data, "roles", ()))
    task_types = {
        name: _task_type(name, spec, ("task_types", name), default_queue, default_retry, roles)
        for name, spec in _table(data, "task_types", ()).items()
    }
    for task_type in task_types.values():
        if adapter_check is not None:
            adapter_check(
                task_type.adapter,
                dict(task_type.settings),
                ("task_types", task_type.name, "settings"),
            )
        queues.setdefault(task_type.queue, QueueConfig(name=task_type.queue))
    return Registry(
        default_timeouts=default_timeouts,
        default_retry=default_retry,
        default_queue=default_queue,
        task_types=MappingProxyType(task_types),
        queues=MappingProxyType(queues),
        lanes=tuple(
            _lane(pattern, spec, ("lanes", pattern))
            for pattern, spec in _table(data, "lanes", ()).items()
        ),
        roles=MappingProxyType(roles),
        principals=_principals(data.get("principals", []), roles),
        nats=build_nats_settings(data.get("nats"), task_types),
        workflows=_workflows(_table(defaults, "workflows", ("defaults",))),
        schedules=MappingProxyType(
            {
                name: build_schedule(
                    _name(name, ("schedules", name)), spec, ("schedules", name), task_types
                )
                for name, spec in _table(data, "schedules", ()).items()
            }
        ),
        rate_limits=MappingProxyType(
            build_rate_limits(_table(data, "rate_limits", ()), task_types, queues)
        ),
    )


def _workflows(spec: Mapping[str, Any]) -> WorkflowLimits:
    where = ("defaults", "workflows")
    _refuse_unknown(spec, {"max_children", "max_depth", "max_input_bytes"}, where)
    base = WorkflowLimits()
    return WorkflowLimits(
        **{
            key: _positive_int(spec.get(key, getattr(base, key)), (*where, key))
            for key in ("max_children", "max_depth", "max_input_bytes")
        }
    )


def _default_timeouts(data: Any) -> Timeouts:
    overrides = TimeoutOverrides.from_mapping(data, ("defaults", "timeouts"))
    return Timeouts(
        start_to_close=overrides.start_to_close or 300.0,
        schedule_to_start=overrides.schedule_to_start,
        heartbeat=overrides.heartbeat or 30.0,
        schedule_to_close=overrides.schedule_to_close,
    )


def _queue(name: str, spec: Any, where: tuple[str, ...]) -> QueueConfig:
    _name(name, where)
    spec = _as_table(spec, where)
    _refuse_unknown(spec, {"concurrency", "paused", "timeouts", "fair_key"}, where)
    return QueueConfig(
        name=name,
        concurrency=_positive_int(spec.get("concurrency", 10), (*where, "concurrency")),
        paused=_bool(spec.get("paused", False), (*where, "paused")),
        timeouts=TimeoutOverrides.from_mapping(spec.get("timeouts"), (*where, "timeouts")),
        fair_key=None
        if spec.get("fair_key") is None
        else check_key_template(spec["fair_key"], (*where, "fair_key")),
    )


def _lane(pattern: str, spec: Any, where: tuple[str, ...]) -> LaneRule:
    spec = _as_table(spec, where)
    _refuse_unknown(spec, {"limit"}, where)
    return LaneRule(pattern=pattern, limit=_positive_int(spec.get("limit", 1), (*where, "limit")))


_TASK_TYPE_KEYS = {
    "adapter",
    "settings",
    "queue",
    "priority",
    "timeouts",
    "retry",
    "roles",
    "schema",
    "lane",
    "learn_hook",
    "description",
    "tags",
    "inputs",
    "signals",
    "signal_by_other",
    "signals_to_finish",
    "singleton",
}


def _task_type(
    name: str,
    spec: Any,
    where: tuple[str, ...],
    default_queue: str,
    default_retry: RetryPolicy,
    roles: Mapping[str, Role],
) -> TaskType:
    _name(name, where)
    spec = _as_table(spec, where)
    _refuse_unknown(spec, _TASK_TYPE_KEYS, where)
    if "adapter" not in spec:
        raise ConfigError("a task type needs an adapter", where)
    allowed_roles = _strings(spec.get("roles", list(roles)), (*where, "roles"))
    for role in allowed_roles:
        if role not in roles:
            raise ConfigError(f"unknown role {role!r}", (*where, "roles"))
    return TaskType(
        name=name,
        adapter=_name(spec["adapter"], (*where, "adapter")),
        settings=MappingProxyType(dict(_as_table(spec.get("settings", {}), (*where, "settings")))),
        queue=_name(spec.get("queue", default_queue), (*where, "queue")),
        priority=_priority(spec.get("priority", 0), (*where, "priority")),
        timeouts=TimeoutOverrides.from_mapping(spec.get("timeouts"), (*where, "timeouts")),
        retry=default_retry.overridden(spec.get("retry"), (*where, "retry")),
        roles=allowed_roles,
        schema=_schema(spec.get("schema"), (*where, "schema")),
        lane=_optional_str(spec.get("lane"), (*where, "lane")),
        learn_hook=_optional_str(spec.get("learn_hook"), (*where, "learn_hook")),
        description=_optional_str(spec.get("description"), (*where, "description")) or "",
        tags=_strings(spec.get("tags", []), (*where, "tags")),
        inputs=_bool(spec.get("inputs", False), (*where, "inputs")),
        signals=tuple(
            _name(signal, (*where, "signals"))
            for signal in _strings(spec.get("signals", []), (*where, "signals"))
        ),
        signal_by_other=_bool(spec.get("signal_by_other", False), (*where, "signal_by_other")),
        signals_to_finish=tuple(
            _name(signal, (*where, "signals_to_finish"))
            for signal in _strings(spec.get("signals_to_finish", []), (*where, "signals_to_finish"))
        ),
        singleton=check_type_singleton(spec.get("singleton"), (*where, "singleton")),
    )


def _schema(value: Any, where: tuple[str, ...]) -> Mapping[str, Any] | None:
    if value is None:
        return None
    schema = _as_table(value, where)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ConfigError(f"not a valid JSON schema: {error.message}", where) from None
    return MappingProxyType(dict(schema))


def _roles(data: Mapping[str, Any]) -> dict[str, Role]:
    roles = {name: Role(name=name) for name in BUILTIN_ROLES}
    roles["admin"] = Role(name="admin", adhoc=True)
    for name, spec in data.items():
        where = ("roles", name)
        _name(name, where)
        spec = _as_table(spec, where)
        _refuse_unknown(
            spec,
            {"task_types", "adapters", "may_cancel", "adhoc", "signals", "may_schedule"},
            where,
        )
        roles[name] = Role(
            name=name,
            task_types=_strings(spec.get("task_types", ["*"]), (*where, "task_types")),
            adapters=_strings(spec.get("adapters", ["*"]), (*where, "adapters")),
            may_cancel=_bool(spec.get("may_cancel", True), (*where, "may_cancel")),
            adhoc=_bool(spec.get("adhoc", name == "admin"), (*where, "adhoc")),
            signals=_strings(spec.get("signals", ["*"]), (*where, "signals")),
            may_schedule=_bool(spec.get("may_schedule", False), (*where, "may_schedule")),
        )
    return roles


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _principals(data: Any, roles: Mapping[str, Role]) -> tuple[Principal, ...]:
    if not isinstance(data, list):
        raise ConfigError("principals must be an array of tables ([[principals]])", ("principals",))
    principals = []
    for index, spec in enumerate(data):
        where = ("principals", str(index))
        spec = _as_table(spec, where)
        _refuse_unknown(spec, {"name", "role", "token_sha256"}, where)
        for key in ("name", "role", "token_sha256"):
            if not isinstance(spec.get(key), str):
                raise ConfigError(f"a principal needs {key!r} (a string)", (*where, key))
        if spec["role"] not in roles:
            raise ConfigError(f"unknown role {spec['role']!r}", (*where, "role"))
        if not _SHA256_HEX.fullmatch(spec["token_sha256"]):
            raise ConfigError(
                "token_sha256 must be the hex SHA-256 of the token (never the token itself)",
                (*where, "token_sha256"),
            )
        principals.append(Principal(spec["name"], spec["role"], spec["token_sha256"]))
    return tuple(principals)


# -- small checkers ---------------------------------------------------------------------


def _table(data: Mapping[str, Any], key: str, where: tuple[str, ...]) -> Mapping[str, Any]:
    return _as_table(data.get(key, {}), (*where, key))


def _as_table(value: Any, where: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError("expected a table", where)
    return value


def _refuse_unknown(data: Mapping[str, Any], known: set[str], where: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r} (expected one of: {', '.join(sorted(known))})", (*where, key)
            )


def _name(value: Any, where: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{value!r} is not a valid name (letters, digits, and _ . : - ; at most 100)", where
        )
    return value


def _int(value: Any, where: tuple[str, ...]) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {value!r}", where)
    return value


PRIORITY_RANGE = (-1000, 1000)


def _priority(value: Any, where: tuple[str, ...]) -> int:
    low, high = PRIORITY_RANGE
    priority = _int(value, where)
    if not low <= priority <= high:
        raise ConfigError(f"priority must be from {low} to {high}, got {value!r}", where)
    return priority


def _positive_int(value: Any, where: tuple[str, ...]) -> int:
    number = _int(value, where)
    if number < 1:
        raise ConfigError(f"expected an integer >= 1, got {value!r}", where)
    return number


def _bool(value: Any, where: tuple[str, ...]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", where)
    return value


def _optional_str(value: Any, where: tuple[str, ...]) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r}", where)
    return value


def _strings(value: Any, where: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("expected an array of strings", where)
    return tuple(value)
