"""The names the log stores for aggregate and event classes, fixed apart from the import path.

The eventsourcing library names a class by ``module:qualname``. Installed under the one
import name ``execution_ledger``, the modules gain a prefix; but a log written before
(``domain.task:Task.TaskEnqueued``) must keep loading, and SQL that selects events by topic
(``domain.task:Task.%``) must keep finding new ones. So each persisted class carries its
topic without the prefix (``TOPIC``, which the library reads before the module path), and
that topic resolves back to the class. Each aggregate module pins its classes as it loads.
"""

from __future__ import annotations

from collections.abc import Iterator

from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.utils import register_topic

PACKAGE_PREFIX = "execution_ledger."


def stored_topic(cls: type) -> str:
    """``module:qualname`` with the module as the log knows it (no package prefix)."""
    return f"{cls.__module__.removeprefix(PACKAGE_PREFIX)}:{cls.__qualname__}"


def pin_topics(aggregate: type[Aggregate]) -> None:
    """Give the aggregate class and every event class nested in it its stored topic.

    ``TOPIC`` is set on each class itself, so a subclass never inherits its parent's.
    """
    for cls in persisted_classes(aggregate):
        topic = stored_topic(cls)
        cls.TOPIC = topic  # type: ignore[attr-defined]  # read by eventsourcing's get_topic
        register_topic(topic, cls)


def persisted_classes(aggregate: type[Aggregate]) -> Iterator[type]:
    """The aggregate and the event classes defined in it (nested ones included)."""
    yield aggregate
    yield from _events_in(aggregate)


def _events_in(owner: type) -> Iterator[type]:
    for value in vars(owner).values():
        nested = isinstance(value, type) and value.__qualname__.startswith(owner.__qualname__ + ".")
        if nested and issubclass(value, DomainEvent):
            yield value
            yield from _events_in(value)
