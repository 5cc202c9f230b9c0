"""``ledger enqueue --singleton KEY`` and ``--debounce KEY:WINDOW``: what a user types and
sees, against a real PostgreSQL; refusals exit 2 with one line and store nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from execution_ledger.adapters.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err  # one line, however rich wrapped it


def history(capsys: pytest.CaptureFixture[str], task_id: str) -> list[str]:
    code, out, _ = run(capsys, "history", task_id, "--json")
    assert code == 0
    return [e["type"] for e in json.loads(out)["events"]]


@pytest.mark.usefixtures("ledger_env")
def test_a_held_singleton_key_shows_the_existing_task(capsys: pytest.CaptureFixture[str]) -> None:
    code, first, _ = run(capsys, "enqueue", "echo", "-a", "c=acme", "--singleton", "r:{c}")
    assert code == 0 and "existing" not in first
    code, again, _ = run(capsys, "enqueue", "echo", "-a", "c=acme", "--singleton", "r:{c}")
    assert code == 0 and again.split()[0] == first.split()[0]
    assert "existing task: singleton key held" in again
    code, other, _ = run(capsys, "enqueue", "echo", "-a", "c=globex", "--singleton", "r:{c}")
    assert code == 0 and other.split()[0] != first.split()[0]


@pytest.mark.usefixtures("ledger_env")
def test_a_debounced_burst_is_one_task_with_the_last_args(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, first, _ = run(capsys, "enqueue", "echo", "-a", "n=1", "--debounce", "sync:{n}x:1m")
    assert code == 0 and "scheduled" in first
    # the key template names n: another n is another key
    _, other, _ = run(capsys, "enqueue", "echo", "-a", "n=2", "--debounce", "sync:{n}x:1m")
    assert other.split()[0] != first.split()[0]
    code, again, _ = run(
        capsys, "enqueue", "echo", "-a", "n=1", "-a", "m=9", "--debounce", "sync:{n}x:1m"
    )
    assert code == 0 and again.split()[0] == first.split()[0]
    assert "debounced into this pending task" in again
    task_id = first.split()[0]
    assert history(capsys, task_id) == ["TaskEnqueued", "TaskDebounced"]
    _, out, _ = run(capsys, "show", task_id, "--json")
    assert json.loads(out)["args"] == {"n": 1, "m": 9}


@pytest.mark.usefixtures("ledger_env")
def test_debounce_mode_first_keeps_the_first_args(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("enqueue", "echo", "--debounce", "k:30s", "--debounce-mode", "first")
    _, first, _ = run(capsys, *argv, "-a", "n=1")
    _, again, _ = run(capsys, *argv, "-a", "n=2")
    assert again.split()[0] == first.split()[0]
    _, out, _ = run(capsys, "show", first.split()[0], "--json")
    assert json.loads(out)["args"] == {"n": 1}


@pytest.mark.usefixtures("ledger_env")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--debounce", "nowindow"), "--debounce takes KEY:WINDOW"),
        (("--debounce", "k:soon"), "--debounce.window: cannot read duration"),
        (("--debounce", ":5s"), "--debounce.key must be a non-empty string"),
        (("--debounce", "k:5s", "--idempotency-key", "i"), "cannot be combined"),
        (("--debounce", "k:5s", "--delay", "1m"), "run_at cannot be given with it"),
        (("--debounce", "k:5m", "--debounce-max-wait", "1m"), "may not be shorter than"),
        (("--singleton", ""), "singleton must be a non-empty string"),
        (("--singleton", "r:{who}"), "needs the argument 'who'"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_store_nothing(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, "enqueue", "echo", *argv)
    assert code == 2 and message in err and err.startswith("error: ")
    _, out, _ = run(capsys, "tasks", "--json")
    assert json.loads(out)["tasks"] == []


def test_enqueue_help_names_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "enqueue", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(result.stdout.split())
    assert "--singleton KEY" in text and "--debounce KEY:WINDOW" in text
    assert "--debounce-mode {last,first}" in text and "--debounce-max-wait DURATION" in text
