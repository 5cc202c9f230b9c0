"""The ``ledger`` command line against a real PostgreSQL: what a user types and sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from execution_ledger.adapters.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("ledger_env")
class TestLedgerCommand:
    def test_enqueue_then_show_and_history(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "enqueue", "add", "-a", "a=1", "-a", "b=2", "--tag", "cli")
        assert code == 0 and "ready" in out
        task_id = out.split()[0]
        code, out, _ = run(capsys, "show", task_id, "--json")
        shown = json.loads(out)
        assert (shown["state"], shown["args"], shown["tags"]) == (
            "ready",
            {"a": 1, "b": 2},
            ["cli"],
        )
        code, out, _ = run(capsys, "history", task_id, "--json")
        assert [e["type"] for e in json.loads(out)["events"]] == ["TaskEnqueued"]

    def test_tasks_lists_with_filters(self, capsys: pytest.CaptureFixture[str]) -> None:
        run(capsys, "enqueue", "echo", "--args", '{"x": 1}')
        run(capsys, "enqueue", "hello", "-a", "name=ada")
        code, out, _ = run(capsys, "tasks", "--type", "hello", "--json")
        listed = json.loads(out)["tasks"]
        assert code == 0 and [t["type"] for t in listed] == ["hello"]
        code, out, _ = run(capsys, "tasks")
        assert "echo" in out and "hello" in out

    def test_enqueue_a_graph_from_a_file(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        graph = tmp_path / "dag.json"
        graph.write_text(
            json.dumps(
                {
                    "tasks": [
                        {"ref": "a", "type": "echo"},
                        {"ref": "b", "type": "add", "args": {"a": 1, "b": 2}, "depends_on": ["a"]},
                    ]
                }
            )
        )
        code, out, _ = run(capsys, "enqueue", "--graph", str(graph))
        assert code == 0 and "enqueued 2 tasks atomically" in out and "blocked" in out

    def test_a_cyclic_graph_is_refused_and_nothing_is_stored(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        graph = tmp_path / "dag.json"
        graph.write_text(
            json.dumps(
                {
                    "tasks": [
                        {"ref": "a", "type": "echo", "depends_on": ["b"]},
                        {"ref": "b", "type": "echo", "depends_on": ["a"]},
                    ]
                }
            )
        )
        code, _, err = run(capsys, "enqueue", "--graph", str(graph))
        assert code == 2 and "dependency cycle: a -> b -> a" in err
        code, out, _ = run(capsys, "tasks", "--json")
        assert json.loads(out)["tasks"] == []

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["enqueue", "nope"], "unknown task type 'nope'"),
            (["enqueue", "add", "-a", "a=1"], "'b' is a required property"),
            (["enqueue", "echo", "--args", "{not json"], "--args is not valid JSON"),
            (["enqueue", "echo", "--args", "[1]"], "--args must be a JSON object"),
            (["enqueue", "echo", "--delay", "soon"], "--delay: cannot read duration"),
            (["enqueue", "echo", "--run-at", "2030-01-01T00:00:00"], "--run-at needs a time zone"),
            (
                ["enqueue", "echo", "--depends-on", "x"],
                "neither a ref in this submission nor a task id",
            ),
            (["enqueue"], "name a task type"),
            (["show", "00000000-0000-0000-0000-000000000007"], "no task 00000000"),
            (["tasks", "--limit", "0"], "limit must be between"),
            (["tasks", "--cursor", "@@@"], "invalid cursor"),
            (["projections", "rebuild", "nope"], "unknown projection 'nope'"),
        ],
    )
    def test_bad_input_gets_a_clear_error_and_exit_status_2(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert message in err

    def test_a_malformed_task_id_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["show", "not-a-uuid"])
        assert exit_info.value.code == 2
        assert "not a task id" in capsys.readouterr().err

    def test_rebuild_all_projections_reports_the_events_replayed(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        run(capsys, "enqueue", "echo")
        code, out, _ = run(capsys, "projections", "rebuild", "all")
        assert code == 0
        assert "task_view: replayed 1 events" in out and "readiness: replayed 1 events" in out
        code, out, _ = run(capsys, "projections", "status")
        assert "task_view" in out and "position          1" in out


def test_an_invalid_config_file_fails_at_start_with_file_and_line(
    ledger_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text('[task_types.x]\nadapter = "python"\nqueue = "a b"\n')
    code, _, err = run(capsys, "--config", str(config), "tasks")
    assert code == 2
    assert f"{config}:3:" in err and "not a valid name" in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("enqueue", "tasks", "show", "history", "projections"):
        assert command in out


@pytest.mark.usefixtures("ledger_env")
def test_enqueue_with_a_held_idempotency_key_shows_the_existing_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, first, _ = run(
        capsys, "enqueue", "echo", "--idempotency-key", "nightly", "--unique-for", "1h"
    )
    code, again, _ = run(capsys, "enqueue", "echo", "--idempotency-key", "nightly")
    assert code == 0
    assert again.split()[0] == first.split()[0]
    assert "existing task" in again
    code, _, err = run(capsys, "enqueue", "echo", "--idempotency-key", "x", "--unique-for", "never")
    assert code == 2 and "--unique-for: cannot read duration" in err


@pytest.mark.usefixtures("ledger_env")
def test_a_worker_for_an_unknown_queue_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "worker", "--queues", "default,nope")
    assert code == 2 and "unknown queue 'nope'" in err


@pytest.mark.usefixtures("ledger_env")
def test_serve_refuses_a_public_address_when_no_principals_are_configured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--port", "0")
    assert code == 2 and "no principals are configured" in err


@pytest.mark.usefixtures("ledger_env")
def test_serve_answers_over_http_runs_tasks_and_stops_on_sigterm() -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "serve", "--port", str(port)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        done = httpx.post(
            f"{base}/v1/tasks",
            params={"wait": 10},
            json={"type": "add", "args": {"a": 2, "b": 3}},
            timeout=15,
        )
        assert done.status_code == 200 and done.json()["result"] == {"sum": 5}
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err.decode()


@pytest.mark.usefixtures("ledger_env")
def test_demo_runs_its_graph_through_the_service_and_shows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "POST /v1/graphs: 8 tasks stored atomically" in out
    assert '{"sum": 156}' in out and "144" in out
    assert "skipped" in out and "TaskUnblocked" in out


@pytest.mark.usefixtures("ledger_env")
def test_a_worker_without_projections_runs_tasks_while_another_process_projects() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from execution_ledger.adapters.postgres.task_queries import get_task_row
    from execution_ledger.adapters.runtime import open_runtime
    from execution_ledger.domain.submission import TaskRequest

    runtime = open_runtime(pool_size=1)
    try:
        task = runtime.ledger.enqueue(TaskRequest("add", {"a": 20, "b": 22}))
        command = [sys.executable, "-m", "execution_ledger.adapters.cli.main"]
        processes = [
            subprocess.Popen(
                [*command, "projections", "run"],
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ),
            subprocess.Popen(
                [*command, "worker", "--no-projections"],
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ),
        ]
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    row = get_task_row(runtime.store, task.id)
                    if row["state"] == "succeeded":
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, "the task was not run and projected"
                time.sleep(0.1)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            errors = [process.communicate(timeout=20)[1] for process in processes]
        assert row["result"] == {"sum": 42}
        assert [p.returncode for p in processes] == [0, 0], errors
    finally:
        runtime.close()


@pytest.mark.usefixtures("ledger_env")
def test_a_worker_projects_in_a_lower_priority_child_that_dies_with_it() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from execution_ledger.adapters.postgres.task_queries import get_task_row
    from execution_ledger.adapters.runtime import open_runtime
    from execution_ledger.domain.errors import TaskNotFound
    from execution_ledger.domain.submission import TaskRequest

    runtime = open_runtime(pool_size=1)
    worker = subprocess.Popen(
        [sys.executable, "-m", "execution_ledger.adapters.cli.main", "worker"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        task = runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
        deadline = time.monotonic() + 30
        while True:
            try:  # the task view shows it once the child has projected it
                if get_task_row(runtime.store, task.id)["state"] == "succeeded":
                    break
            except TaskNotFound:
                pass
            assert time.monotonic() < deadline, "the task was not run and projected"
            time.sleep(0.1)
        (child,) = psutil.Process(worker.pid).children()
        assert child.cmdline()[-6:] == [
            *("projections", "run", "--nice", "10", "--parent-pid", str(worker.pid))
        ]
        assert child.nice() == psutil.Process().nice() + 10
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        child.wait(timeout=5)  # it notices its parent is gone and stops
    finally:
        worker.kill()
        runtime.close()


@pytest.mark.usefixtures("ledger_env")
def test_projections_run_refuses_a_negative_nice(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "projections", "run", "--nice", "-5")
    assert code == 2
    assert "--nice must be 0 or more" in err
