"""Whether a new registry may replace the one in use: the changes that would break work.

Work in flight (tasks enqueued and not yet ended: blocked, scheduled, ready, running,
waiting) was planned under the registry before; a new registry must still be able to run
it. A change is refused, with one reason per problem, when it:

- removes a task type that live tasks still have;
- removes a queue that live tasks are still in;
- gives a task type a schema that the args of its live tasks no longer satisfy (the args
  of at most ``ARGS_CHECKED`` live tasks per type are read and checked; a type whose schema
  did not change is not checked).

The caller reads the counts and args (``LiveWork``) and decides nothing itself; forcing a
change records it anyway (``RegistryChanged.forced``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import jsonschema

from execution_ledger.domain.errors import LedgerError
from execution_ledger.domain.registry import Registry

ARGS_CHECKED = 1000  # live tasks per type whose args are checked against a new schema
REASONS_SHOWN = 3  # tasks named per reason


class RegistryChangeRefused(LedgerError):
    """A new registry would break queued or running work; nothing was recorded."""

    code = "registry_change_refused"

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(
            "the registry change would break work in flight (apply with force to record it "
            "anyway): " + "; ".join(reasons)
        )
        self.reasons = list(reasons)


@dataclass(frozen=True)
class LiveWork:
    """The tasks not yet ended, as the store holds them now."""

    by_type: Mapping[str, int] = field(default_factory=dict)  # registry types only
    by_queue: Mapping[str, int] = field(default_factory=dict)
    # Per type named by ``types_to_check``: (task id, args) of up to ARGS_CHECKED of them.
    args: Mapping[str, Sequence[tuple[UUID, Mapping[str, Any]]]] = field(default_factory=dict)


def types_to_check(old: Registry | None, new: Registry, by_type: Mapping[str, int]) -> list[str]:
    """The types with live tasks whose schema the new registry changes (every type with a
    schema when there is no old registry to compare with)."""
    names = []
    for name, count in sorted(by_type.items()):
        new_type = new.task_type(name)
        if count == 0 or new_type is None or new_type.schema is None:
            continue
        old_type = old.task_type(name) if old is not None else None
        if old_type is None or _plain(old_type.schema) != _plain(new_type.schema):
            names.append(name)
    return names


def breaking_changes(old: Registry | None, new: Registry, live: LiveWork) -> list[str]:
    """One reason per way the new registry would break live work (empty: it is safe)."""
    reasons = []
    for name, count in sorted(live.by_type.items()):
        if count and new.task_type(name) is None:
            reasons.append(f"task type {name!r} is removed but {count} of its tasks are live")
    for name, count in sorted(live.by_queue.items()):
        if count and name not in new.queues:
            reasons.append(f"queue {name!r} is removed but holds {count} live tasks")
    for name in types_to_check(old, new, live.by_type):
        reason = _schema_reason(new, name, live.args.get(name, ()), live.by_type[name])
        if reason is not None:
            reasons.append(reason)
    return reasons


def _schema_reason(
    new: Registry, name: str, samples: Sequence[tuple[UUID, Mapping[str, Any]]], live: int
) -> str | None:
    task_type = new.task_type(name)
    assert task_type is not None and task_type.schema is not None
    validator = jsonschema.Draft202012Validator(_plain(task_type.schema))
    misfits = []
    for task_id, args in samples:
        mismatch = jsonschema.exceptions.best_match(validator.iter_errors(dict(args)))
        if mismatch is not None:
            where = "/".join(str(p) for p in mismatch.absolute_path) or "(root)"
            misfits.append(f"task {task_id} at {where}: {mismatch.message}")
    if not misfits:
        return None
    checked = f" (of {len(samples)} checked)" if len(samples) < live else ""
    shown = "; ".join(misfits[:REASONS_SHOWN])
    more = f"; and {len(misfits) - REASONS_SHOWN} more" if len(misfits) > REASONS_SHOWN else ""
    return (
        f"the new schema of task type {name!r} refuses the args of {len(misfits)} live "
        f"tasks{checked}: {shown}{more}"
    )


def _plain(value: Any) -> Any:
    """A schema as plain dicts (the registry holds its top level as a read-only view)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
