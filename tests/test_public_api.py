"""The one import name: ``execution_ledger``'s public names, its version, what a wheel holds,
and the topics the log stores for each persisted class (the same as before the name)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.utils import get_topic, resolve_topic

import execution_ledger
from execution_ledger.domain.stored_topics import PACKAGE_PREFIX, stored_topic

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("domain", "projections", "processors", "adapters")


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in execution_ledger.__all__:
        assert getattr(execution_ledger, name) is not None, name
    assert execution_ledger.__version__ == version("execution-ledger")
    assert set(dir(execution_ledger)) == set(execution_ledger.__all__)
    with pytest.raises(AttributeError, match="no attribute 'enqueue'"):
        execution_ledger.enqueue  # noqa: B018


def test_the_public_names_are_the_classes_the_subpackages_use() -> None:
    from execution_ledger.adapters.runtime import open_runtime
    from execution_ledger.domain.errors import TaskNotFound
    from execution_ledger.domain.submission import TaskRequest

    assert execution_ledger.open_runtime is open_runtime
    assert execution_ledger.TaskRequest is TaskRequest
    assert execution_ledger.TaskNotFound is TaskNotFound


def test_importing_the_domain_loads_no_adapter() -> None:
    probe = (
        "import sys, execution_ledger.domain.task; "
        "print(sorted(m for m in sys.modules if m.startswith('execution_ledger.adapters')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def persisted_classes() -> list[type]:
    """Every aggregate and event class the product defines (imported with the domain)."""
    import execution_ledger.domain.access
    import execution_ledger.domain.bulk
    import execution_ledger.domain.queue
    import execution_ledger.domain.registry_history
    import execution_ledger.domain.schedule_control
    import execution_ledger.domain.task  # noqa: F401

    found: list[type] = []
    pending: list[type] = [Aggregate, DomainEvent]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith(PACKAGE_PREFIX) and reachable(sub):
                found.append(sub)
    return found


def reachable(cls: type) -> bool:
    """Whether ``module.qualname`` names this class (the library replaces an event class
    declared on ``Aggregate.Event`` with one on the aggregate's own ``Event``: only the
    replacement is stored)."""
    target: object = sys.modules[cls.__module__]
    for part in cls.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is cls


def test_each_persisted_class_keeps_the_topic_the_log_has_always_stored() -> None:
    classes = persisted_classes()
    assert len(classes) > 40
    for cls in classes:
        assert "TOPIC" in vars(cls), f"{cls.__qualname__}: pin_topics was not called for it"
        topic = get_topic(cls)
        assert topic == stored_topic(cls) and not topic.startswith(PACKAGE_PREFIX)
        assert resolve_topic(topic) is cls
    assert get_topic(execution_ledger.Task.TaskEnqueued) == "domain.task:Task.TaskEnqueued"


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_with_the_files_themselves(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("execution_ledger-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"execution_ledger"}
    for needed in (
        "execution_ledger/__init__.py",
        "execution_ledger/py.typed",
        "execution_ledger/domain/task.py",
        "execution_ledger/adapters/default_registry.toml",
        "execution_ledger/adapters/http/console/static/index.html",
    ):
        assert needed in names
    on_disk = {
        f"execution_ledger/{path.relative_to(ROOT).as_posix()}"
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
    }
    assert on_disk <= set(names), sorted(on_disk - set(names))[:5]
