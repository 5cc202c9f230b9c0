"""The shell executor runs argv templates in a scrubbed, limited process group."""

from __future__ import annotations

import asyncio
import logging
import resource
from pathlib import Path

import psutil
import pytest

from execution_ledger.adapters.executors.shell import ShellExecutor
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Failure, Success

shell = ShellExecutor()

# A subprocess, connection or future left behind by a cancelled run fails the test.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.asyncio
async def test_a_successful_command_returns_its_output_and_exit_code_zero(execution) -> None:
    result = await shell.run(execution({"argv": ["echo", "hello", "{args.name}"]}, {"name": "Ada"}))

    assert result == Success(
        {
            "stdout": "hello Ada\n",
            "stderr": "",
            "exit_code": 0,
            "stdout_truncated": False,
            "stderr_truncated": False,
        },
        details={"exit_code": 0},
    )


@pytest.mark.asyncio
async def test_json_printed_on_stdout_is_also_returned_parsed(execution) -> None:
    result = await shell.run(execution({"argv": ["echo", '{{"answer": 42}}']}))

    assert isinstance(result, Success)
    assert result.result["json"] == {"answer": 42}


@pytest.mark.asyncio
async def test_an_argument_with_shell_syntax_stays_one_literal_argv_element(
    execution, tmp_path: Path
) -> None:
    victim = tmp_path / "x"
    victim.write_text("still here")
    text = f"a; rm -rf {victim} && echo $HOME `id` | cat"

    result = await shell.run(
        execution(
            {"argv": ["printf", "[%s]\\n", "{args.text}", "{args[other]}"]},
            {"text": text, "other": "two words"},
        )
    )

    assert isinstance(result, Success)
    assert result.result["stdout"] == f"[{text}]\n[two words]\n"
    assert victim.read_text() == "still here"


@pytest.mark.asyncio
async def test_a_nonzero_exit_is_a_retryable_exit_code_failure_with_stderr(execution) -> None:
    result = await shell.run(execution({"argv": ["sh", "-c", "echo broken >&2; exit 3"]}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ExitCode", True)
    assert result.details == {"exit_code": 3, "stderr": "broken\n"}


@pytest.mark.asyncio
async def test_a_missing_command_is_not_retryable(execution) -> None:
    result = await shell.run(execution({"argv": ["no-such-command-here"]}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("CommandNotFound", False)


@pytest.mark.asyncio
async def test_a_template_naming_a_missing_argument_is_bad_arguments(execution) -> None:
    result = await shell.run(execution({"argv": ["echo", "{args.path}"]}, {"other": 1}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadArguments", False)
    assert "args.path" in result.message


@pytest.mark.asyncio
async def test_the_child_sees_only_a_scrubbed_environment(
    execution, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_SECRET", "do not leak")

    result = await shell.run(execution({"argv": ["env"], "env": {"GREETING": "hi"}}))

    assert isinstance(result, Success)
    variables = dict(line.split("=", 1) for line in result.result["stdout"].splitlines())
    assert set(variables) == {"PATH", "HOME", "LANG", "GREETING"}
    assert variables["PATH"] == "/usr/bin:/bin"


@pytest.mark.asyncio
async def test_the_default_working_directory_is_a_fresh_directory_removed_afterwards(
    execution,
) -> None:
    result = await shell.run(execution({"argv": ["pwd"]}))

    assert isinstance(result, Success)
    workdir = Path(result.result["stdout"].strip())
    assert workdir.name.startswith("ledger-shell-")
    assert not workdir.exists()


@pytest.mark.asyncio
async def test_output_beyond_the_cap_is_dropped_and_marked_truncated(execution) -> None:
    settings = {"argv": ["head", "-c", "300000", "/dev/zero"], "max_output_bytes": 1000}

    result = await shell.run(execution(settings))

    assert isinstance(result, Success)
    assert len(result.result["stdout"]) == 1000
    assert result.result["stdout_truncated"] is True
    assert "json" not in result.result


@pytest.mark.asyncio
async def test_the_file_size_limit_stops_a_command_writing_too_much(execution) -> None:
    settings = {
        "argv": ["dd", "if=/dev/zero", "of=big", "bs=1000", "count=100"],
        "file_size_bytes": 10_000,
    }

    result = await shell.run(execution(settings))

    assert isinstance(result, Failure)
    assert result.error_class == "Signal"
    assert result.details["signal"] == "SIGXFSZ"


@pytest.mark.asyncio
async def test_the_memory_limit_refuses_a_large_allocation(execution) -> None:
    settings = {
        "argv": ["python3", "-c", "bytearray(500 * 2**20)"],
        "memory_bytes": 200 * 2**20,
    }

    result = await shell.run(execution(settings))

    assert isinstance(result, Failure)
    assert result.error_class == "ExitCode"
    assert "MemoryError" in result.details["stderr"]


@pytest.mark.asyncio
async def test_the_cpu_limit_stops_a_busy_loop(execution) -> None:
    settings = {"argv": ["sh", "-c", "while :; do :; done"], "cpu_seconds": 1}

    result = await shell.run(execution(settings))

    assert isinstance(result, Failure)
    assert (result.error_class, result.details["signal"]) == ("Signal", "SIGXCPU")


@pytest.mark.asyncio
async def test_cancellation_kills_the_whole_process_group(
    execution, tmp_path: Path, live_group_members
) -> None:
    pid_file = tmp_path / "pid"
    script = 'echo $$ > "$1"; sleep 600 & sleep 600'
    run = shell.run(
        execution(
            {"argv": ["sh", "-c", script, "sh", "{args.pid_file}"]}, {"pid_file": str(pid_file)}
        )
    )

    running = asyncio.ensure_future(run)
    for _ in range(200):  # wait until the command runs (a loaded machine may take a while)
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.025)
    group = int(pid_file.read_text())
    running.cancel()
    await asyncio.wait({running}, timeout=30)  # bounded: a run left waiting for sleep fails

    assert running.cancelled(), "the cancelled run did not end"
    assert await members_after_kill(live_group_members, group) == []


@pytest.mark.asyncio
async def test_background_children_are_killed_when_the_command_exits(
    execution, live_group_members
) -> None:
    result = await shell.run(execution({"argv": ["sh", "-c", "sleep 30 & echo $$"]}))

    assert isinstance(result, Success)
    assert await members_after_kill(live_group_members, int(result.result["stdout"])) == []


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({}, ("argv",)),
        ({"argv": []}, ("argv",)),
        ({"argv": "echo hi"}, ("argv",)),
        ({"argv": ["{args.command}"]}, ("argv",)),
        ({"argv": ["echo", "{0}"]}, ("argv", "1")),
        ({"argv": ["echo", "{args.x"]}, ("argv", "1")),
        ({"argv": ["echo"], "cwd": "/no/such/dir"}, ("cwd",)),
        ({"argv": ["echo"], "env": {"A": 1}}, ("env",)),
        ({"argv": ["echo"], "memory_bytes": -1}, ("memory_bytes",)),
        ({"argv": ["echo"], "max_output_bytes": "1MB"}, ("max_output_bytes",)),
        ({"argv": ["echo"], "shell": True}, ("shell",)),
    ],
)
def test_check_settings_refuses_bad_settings(settings: dict, where: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as refused:
        shell.check_settings(settings)

    assert refused.value.where == where


def test_check_settings_accepts_good_settings(tmp_path: Path) -> None:
    settings = {"argv": ["echo", "{args[name]}"], "cwd": str(tmp_path), "cpu_seconds": 5}

    assert shell.check_settings(settings) is None  # accepted: no ConfigError
    parsed = shell.parse_settings(settings)
    assert (parsed.argv, parsed.cwd) == (("echo", "{args[name]}"), str(tmp_path))
    assert parsed.limits == ((resource.RLIMIT_CPU, 5),)


async def members_after_kill(live_group_members, group: int) -> list[int]:
    """SIGKILL is delivered asynchronously: give the kernel a moment to end the processes."""
    for _ in range(100):
        if not live_group_members(group):
            break
        await asyncio.sleep(0.01)
    return live_group_members(group)


@pytest.mark.asyncio
async def test_a_run_cancelled_twice_ends_once_after_its_command_and_logs_no_error(
    execution, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file = tmp_path / "pid"
    script = 'echo $$ > "$1"; exec sleep 30'
    running = asyncio.ensure_future(
        shell.run(
            execution(
                {"argv": ["sh", "-c", script, "sh", "{args.pid_file}"]}, {"pid_file": str(pid_file)}
            )
        )
    )
    for _ in range(200):  # wait until the command runs
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.025)
    pid = int(pid_file.read_text())
    caplog.set_level(logging.WARNING)

    running.cancel()  # say, the attempt's lease was lost...
    await asyncio.sleep(0)  # (the run is now killing its command and waiting for it)
    running.cancel()  # ...and a cancel notice for it arrives too
    with pytest.raises(asyncio.CancelledError):
        await running

    assert running.cancelled()
    assert not psutil.pid_exists(pid), "the run ended before its command was reaped"
    assert [record.getMessage() for record in caplog.records] == []
