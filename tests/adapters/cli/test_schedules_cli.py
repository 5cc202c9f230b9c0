"""``ledger schedules create|update|delete|backfill`` as a user types them: what they print,
exit status 2 with one ``error:`` line for what is refused, and the events they record."""

from __future__ import annotations

from pathlib import Path

import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.runtime import open_runtime
from tests.conftest import write_config

CONFIG = """
[task_types.beat]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

[schedules.nightly]
cron = "0 3 * * *"
task_type = "beat"
"""


@pytest.fixture
def config(ledger_env: None, tmp_path: Path) -> str:
    return str(write_config(tmp_path, CONFIG))


def ledger(capsys: pytest.CaptureFixture[str], config: str, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", config, "schedules", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def events_of(config: str, name: str) -> list[str]:
    runtime = open_runtime(config, pool_size=1)
    try:
        control = runtime.store.load_schedule_control(name)
        return [type(e.event).__name__ for e in runtime.store.history(control.id)]
    finally:
        runtime.close()


def test_a_schedule_is_created_updated_backfilled_and_deleted(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ledger(
        capsys, config, "create", "hourly", "--cron", "0 * * * *", "--type", "beat",
        "-a", "n=3", "--overlap", "queue_one", "--catch-up", "latest",
    )  # fmt: skip
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {"hourly", "nightly"}
    assert "runtime" in lines["hourly"] and "overlap queue_one" in lines["hourly"]
    assert "file" in lines["nightly"] and "overlap allow" in lines["nightly"]
    code, out, _ = ledger(capsys, config, "update", "hourly", "--cron", "30 * * * *")
    assert (code, out.splitlines()[0]) == (0, "hourly: cron '0 * * * *' -> '30 * * * *'")
    code, out, _ = ledger(capsys, config, "update", "hourly", "--cron", "30 * * * *")
    assert out.splitlines()[0] == "hourly: nothing changed"
    window = ("--since", "2026-01-01T00:00:00+00:00", "--until", "2026-01-01T03:00:00+00:00")
    code, out, _ = ledger(capsys, config, "backfill", "hourly", *window, "--dry-run")
    assert out.strip() == (
        "hourly: 3 ticks in the range; 0 enqueued before, 3 would be enqueued (dry run)"
    )
    ledger(capsys, config, "backfill", "hourly", *window)
    code, out, _ = ledger(capsys, config, "backfill", "hourly", *window)
    assert out.strip() == "hourly: 3 ticks in the range; 0 enqueued, 3 enqueued before"
    code, out, _ = ledger(capsys, config, "pause", "hourly")
    assert "paused" in next(line for line in out.splitlines() if line.startswith("hourly"))
    code, out, _ = ledger(capsys, config, "delete", "hourly")
    assert (code, out.strip()) == (0, "hourly: deleted")
    assert events_of(config, "hourly") == [
        "ScheduleRegistered",
        "ScheduleDefined",
        "ScheduleUpdated",
        "ScheduleBackfilled",
        "ScheduleBackfilled",
        "SchedulePaused",
        "ScheduleDeleted",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("create", "x", "--cron", "99 * * * *", "--type", "beat"), "not a valid cron"),
        (("create", "x", "--cron", "* * * * *", "--type", "nope"), "unknown task type"),
        (
            ("create", "x", "--cron", "* * * * *", "--type", "beat", "--timezone", "Nowhere/X"),
            "unknown time zone",
        ),
        (("create", "x", "--cron", "* * * * *", "--type", "beat", "--max-catch-up", "0"), "1 to"),
        (("create", "nightly", "--cron", "* * * * *", "--type", "beat"), "registry file"),
        (("update", "nightly", "--cron", "0 4 * * *"), "changed there"),
        (("update", "x", "--cron", "0 4 * * *"), "unknown schedule"),
        (("update", "x"), "at least one key"),
        (("delete", "x"), "unknown schedule"),
        (("backfill", "x", "--since", "2026-01-01T00:00Z", "--until", "2026-01-02T00:00Z"), "x"),
        (("backfill", "nightly", "--since", "yesterday", "--until", "today"), "ISO 8601"),
        (
            ("backfill", "nightly", "--since", "2026-01-01T00:00", "--until", "2026-01-02T00:00"),
            "time zone",
        ),
    ],
)
def test_refusals_exit_2_with_one_error_line_and_record_nothing(
    config: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = ledger(capsys, config, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert events_of(config, "x") == []
    assert events_of(config, "nightly") == []


def test_a_bad_choice_of_overlap_is_refused_by_the_parser(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        ledger(capsys, config, "create", "x", "--cron", "* * * * *", "--type", "beat",
               "--overlap", "sometimes")  # fmt: skip
    assert exited.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
