"""``ledger tasks`` and the commands that name one task, as a user types them: full ids
when piped or at 80 columns, unique id prefixes, filters that say what they accept."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from uuid import UUID

import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest

LEDGER = [sys.executable, "-m", "execution_ledger.adapters.cli.main"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ledger_at_80_columns(*argv: str, terminal: bool) -> str:
    """Run ``ledger ARGV`` with COLUMNS=80, its stdout a pipe or a terminal."""
    env = {**os.environ, "COLUMNS": "80"}
    if not terminal:
        done = subprocess.run([*LEDGER, *argv], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([*LEDGER, *argv], env=env, stdout=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


@pytest.fixture
def two_tasks(runtime: Runtime) -> list[str]:
    tasks = [
        runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}, lane="a-rather-long-lane")),
        runtime.ledger.enqueue(TaskRequest("echo", {"x": 1}, tags=("piped",))),
    ]
    return [str(task.id) for task in tasks]


def test_piped_task_lists_show_whole_ids_and_states(two_tasks: list[str]) -> None:
    out = ledger_at_80_columns("tasks", terminal=False)
    lines = out.splitlines()
    assert lines[0].split() == ["id", "type", "queue", "state", "attempts", "lane", "enqueued"]
    assert {line.split()[0] for line in lines[1:]} == set(two_tasks)
    assert all(line.split()[3] == "ready" for line in lines[1:])


@pytest.mark.parametrize("wide", [False, True])
def test_a_task_list_at_80_columns_on_a_terminal_keeps_ids_and_states_whole(
    two_tasks: list[str], wide: bool
) -> None:
    out = ledger_at_80_columns("tasks", *(["--wide"] if wide else []), terminal=True)
    for task_id in two_tasks:
        assert task_id in out
    assert out.count("ready") == 2


def test_show_history_cancel_and_retry_take_a_unique_id_prefix(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    task = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
    prefix = str(task.id)[:6]
    code, out, _ = run(capsys, "show", prefix, "--json")
    assert code == 0 and json.loads(out)["id"] == str(task.id)
    code, out, _ = run(capsys, "history", str(task.id)[:11], "--json")  # with its dash
    assert code == 0 and [e["type"] for e in json.loads(out)["events"]] == ["TaskEnqueued"]
    code, out, _ = run(capsys, "cancel", prefix.upper())
    assert code == 0 and out.split() == [str(task.id), "cancelled"]
    code, out, _ = run(capsys, "retry", prefix)
    assert code == 0 and out.split()[0] == str(task.id)


def test_an_ambiguous_prefix_is_refused_naming_the_tasks(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = iter(
        [UUID("abcd0000-0000-4000-8000-000000000001"), UUID("abcd0000-0000-4000-8000-000000000002")]
    )
    runtime.ledger.new_id = lambda: next(ids)
    first = runtime.ledger.enqueue(TaskRequest("echo", {}))
    second = runtime.ledger.enqueue(TaskRequest("echo", {}))
    for command in ("show", "history", "cancel", "retry"):
        code, out, err = run(capsys, command, "abcd")
        assert code == 2 and out == ""
        assert "matches several tasks" in err and str(first.id) in err and str(second.id) in err
    assert runtime.ledger.task(first.id).state.value == "ready"  # nothing was cancelled
    code, out, _ = run(capsys, "show", "abcd0000000040008000000000000002", "--json")
    assert code == 0 and json.loads(out)["id"] == str(second.id)


@pytest.mark.usefixtures("ledger_env")
def test_an_unknown_prefix_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("show", "history", "cancel", "retry"):
        code, out, err = run(capsys, command, "0f0f")
        assert (code, out, err) == (2, "", "error: no task id starts with '0f0f'\n")


@pytest.mark.parametrize(
    ("ref", "says"),
    [("abc", "at least 4 hex digits"), ("not-hex", "not a task id or id prefix")],
)
def test_a_malformed_id_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str], ref: str, says: str
) -> None:
    for command in ("show", "history", "cancel", "retry"):
        with pytest.raises(SystemExit) as exited:
            main([command, ref])
        assert exited.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.usefixtures("ledger_env")
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--state", "bogus", "unknown state 'bogus' (valid: blocked, scheduled, ready, running"),
        ("--queue", "nope", "unknown queue 'nope' (valid: agents, default)"),
        ("--type", "nope", "unknown task type 'nope' (valid: add, "),
        ("--limit", "0", "limit must be between 1 and 500"),
    ],
)
def test_task_filters_that_cannot_match_are_refused_naming_the_valid_values(
    capsys: pytest.CaptureFixture[str], option: str, value: str, says: str
) -> None:
    code, out, err = run(capsys, "tasks", option, value)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and says in err and err.count("\n") == 1


def test_a_known_type_with_no_tasks_is_an_empty_list(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime.ledger.enqueue(TaskRequest("echo", {}))
    code, out, _ = run(capsys, "tasks", "--type", "hello", "--json")
    assert code == 0 and json.loads(out)["tasks"] == []
