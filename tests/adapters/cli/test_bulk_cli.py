"""``ledger bulk`` as a user types it, on a real PostgreSQL: a dry run that counts and changes
nothing, each action run with ``--yes`` to the end, the question it needs answered without
``--yes``, and bad filters refused with one line and exit status 2 before anything changes."""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.task import TaskState
from tests.helpers import fail


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def enqueue(runtime: Runtime, count: int, **fields: object) -> list[UUID]:
    return [
        runtime.ledger.enqueue(TaskRequest("echo", {"n": n}, **fields)).id  # type: ignore[arg-type]
        for n in range(count)
    ]


def last_event(runtime: Runtime, task_id: UUID) -> object:
    return runtime.ledger.history(task_id)[-1].event


def test_a_dry_run_prints_the_count_and_a_sample_and_changes_nothing(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    tagged = enqueue(runtime, 2, tags=("nightly",))
    enqueue(runtime, 1)
    head = runtime.store.head_position()
    code, out, _ = run(capsys, "bulk", "cancel", "--tag", "nightly", "--dry-run")
    assert code == 0
    assert "2 tasks match tag=nightly: cancel" in out
    assert all(str(t) in out for t in tagged)
    assert "dry run: nothing changed" in out
    assert runtime.store.head_position() == head


def test_bulk_cancel_with_yes_cancels_every_match_as_one_recorded_action(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    tagged = enqueue(runtime, 3, tags=("nightly",))
    other = enqueue(runtime, 1)
    code, out, _ = run(
        capsys, "bulk", "cancel", "--tag", "nightly", "--reason", "bad deploy", "--yes"
    )
    assert code == 0, out
    assert "completed: 3 changed, 0 skipped" in out
    bulk_ids = {last_event(runtime, t).bulk_id for t in tagged}  # type: ignore[attr-defined]
    assert len(bulk_ids) == 1 and None not in bulk_ids
    action = runtime.ledger.bulk_action(bulk_ids.pop())
    assert (action.principal, action.action, action.matched) == ("system", "cancel", 3)
    assert {runtime.ledger.task(t).state for t in tagged} == {TaskState.CANCELLED}
    assert runtime.ledger.task(other[0]).state is TaskState.READY


def test_bulk_retry_reprioritise_and_move_each_change_their_matches(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = enqueue(runtime, 2, tags=("f",))
    for task_id in failed:
        fail(runtime.store, task_id)
    waiting = enqueue(runtime, 2, tags=("w",))
    assert run(capsys, "bulk", "retry", "--state", "failed", "--yes")[0] == 0
    assert {runtime.ledger.task(t).state for t in failed} == {TaskState.SCHEDULED}
    code, out, _ = run(capsys, "bulk", "reprioritise", "--tag", "w", "--priority", "-20", "--yes")
    assert code == 0 and "2 changed" in out
    assert {runtime.ledger.task(t).priority for t in waiting} == {-20}
    code, out, _ = run(capsys, "bulk", "move", "--tag", "w", "--to", "agents", "--yes")
    assert code == 0 and "2 changed" in out
    assert {runtime.ledger.task(t).queue for t in waiting} == {"agents"}
    code, out, _ = run(capsys, "tasks", "--queue", "agents", "--json")
    assert {row["id"] for row in json.loads(out)["tasks"]} == {str(t) for t in waiting}


def test_without_yes_and_without_a_terminal_it_asks_for_yes_and_changes_nothing(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = enqueue(runtime, 2, tags=("t",))
    head = runtime.store.head_position()
    code, out, err = run(capsys, "bulk", "cancel", "--tag", "t")
    assert code == 2
    assert "2 tasks match tag=t: cancel" in out
    assert "error: this would cancel 2 tasks; give --yes to confirm" in err
    assert runtime.store.head_position() == head
    assert {runtime.ledger.task(t).state for t in tasks} == {TaskState.READY}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["cancel"], "name at least one filter"),
        (["cancel", "--state", "bogus"], "unknown state 'bogus' (valid: blocked"),
        (["cancel", "--queue", "nowhere"], "unknown queue 'nowhere' (valid: agents, default)"),
        (["cancel", "--since", "yesterday"], "--since is not an ISO 8601 time"),
        (["cancel", "--until", "2026-01-01T00:00:00"], "--until needs a time zone"),
        (["retry", "--state", "ready"], "no task in state 'ready' would change"),
        (["reprioritise", "--state", "ready", "--priority", "5000"], "between -1000 and 1000"),
        (["move", "--state", "ready", "--to", "nowhere"], "unknown queue 'nowhere' to move to"),
    ],
)
def test_a_bad_filter_or_action_is_one_line_and_exit_status_2(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    enqueue(runtime, 1)
    head = runtime.store.head_position()
    code, out, err = run(capsys, "bulk", *argv, "--yes")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and says in err and err.count("\n") == 1
    assert runtime.store.head_position() == head


def test_a_missing_priority_or_target_queue_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["reprioritise", "--state", "ready"], ["move", "--state", "ready"]):
        with pytest.raises(SystemExit) as exited:
            main(["bulk", *argv])
        assert exited.value.code == 2
        assert "required" in capsys.readouterr().err


def test_the_task_list_takes_the_same_time_filters(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(runtime, 1)
    code, out, _ = run(capsys, "tasks", "--since", "2000-01-01T00:00:00+00:00", "--json")
    assert code == 0 and len(json.loads(out)["tasks"]) == 1
    code, out, _ = run(capsys, "tasks", "--until", "2000-01-01T00:00:00+00:00", "--json")
    assert code == 0 and json.loads(out)["tasks"] == []
