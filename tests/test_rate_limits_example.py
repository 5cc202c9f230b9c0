"""The example of docs/patterns.md section 7 runs as written: a tenant's 100 e-mails an hour
across a worker node's rounds, the rest held with the reason, and another tenant's few
e-mails not kept waiting behind the backlog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from execution_ledger.adapters.postgres.task_queries import TaskFilter, get_task_row, list_tasks
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.errors import SchemaViolation
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_nodes_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rate_limits.toml"


@pytest.fixture
def mail(ledger_env: None) -> Iterator[Runtime]:
    runtime = open_runtime(EXAMPLE, pool_size=4)
    yield runtime
    runtime.close()


def test_a_tenant_sends_its_hourly_hundred_and_another_tenant_is_not_kept_waiting(
    mail: Runtime,
) -> None:
    backlog = mail.ledger.enqueue_graph(
        [TaskRequest("send_email", {"tenant": "a", "to": f"u{n}@a.example"}) for n in range(110)]
    )
    few = mail.ledger.enqueue_graph(
        [TaskRequest("send_email", {"tenant": "b", "to": f"u{n}@b.example"}) for n in range(3)]
    )

    def settled() -> bool:
        rows = list_tasks(mail.store, TaskFilter(type_name="send_email"), limit=500).rows
        return sum(r["state"] == "succeeded" for r in rows) == 103 and all(
            r["held_by"] for r in rows if r["state"] == "ready"
        )

    run_nodes_until(mail, settled, timeout=30)
    states = {task.id: mail.store.load(task.id).state.value for task in [*backlog, *few]}
    assert sum(states[task.id] == "succeeded" for task in backlog) == 100
    assert all(states[task.id] == "succeeded" for task in few)
    held = [task.id for task in backlog if states[task.id] == "ready"]
    assert len(held) == 10
    mail.catch_up()
    assert get_task_row(mail.store, held[0])["held_by"].startswith(
        "rate limit per_tenant (tenant:a): 100 per 1h, next slot at "
    )


def test_an_email_without_a_tenant_is_refused(mail: Runtime) -> None:
    says = r"rate limit 'per_tenant' .*needs the argument 'tenant'"
    with pytest.raises(SchemaViolation, match=says):
        mail.ledger.enqueue(TaskRequest("send_email", {"to": "x@example"}))
