"""Workflows through the Python API with a real worker node on PostgreSQL: dependencies'
results as inputs (every adapter's way of reading them, and the failures when missing or
too large), children spawned at run time (fan-out/fan-in, failure policies, refusals),
signals before a task runs, progress reported by task code, and a conversing agent."""

from __future__ import annotations

import http.server
import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from psycopg import sql

from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import Forbidden, InvalidTransition
from execution_ledger.domain.execution import ClaimedAttempt
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import Requester, TaskRequest
from execution_ledger.domain.task import Task, TaskState, event_name
from execution_ledger.domain.timeouts import Timeouts
from execution_ledger.processors import worker as worker_module
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

DEMO = "execution_ledger.adapters.executors.workflow_demo"
CONFIG = textwrap.dedent(
    f"""
    [defaults.timeouts]
    start_to_close = "20s"

    [defaults.workflows]
    max_children = 3
    max_depth = 2
    max_input_bytes = 300

    [lanes."agent:*"]
    limit = 1

    [task_types.add]
    adapter = "python"
    settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:add" }}

    [task_types.echo]
    adapter = "python"
    settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

    [task_types.inputs]
    adapter = "python"
    inputs = true
    settings = {{ callable = "{DEMO}:inputs_of" }}

    [task_types.lua_inputs]
    adapter = "lua"
    inputs = true
    settings = {{ script = "return {{ doubled = deps.sum.result.sum * 2 }}" }}

    [task_types.shell_inputs]
    adapter = "shell"
    inputs = true
    settings = {{ argv = ["/bin/echo", "sum={{deps[sum][result][sum]}}"] }}

    [task_types.shell_missing]
    adapter = "shell"
    inputs = true
    settings = {{ argv = ["/bin/echo", "{{deps[nope][result]}}"] }}

    [task_types.fan]
    adapter = "python"
    settings = {{ callable = "{DEMO}:fan_out" }}

    [task_types.square]
    adapter = "python"
    schema = {{ type = "object", required = ["n"], properties = {{ n = {{ type = "integer" }} }} }}
    settings = {{ callable = "{DEMO}:square" }}

    [task_types.lua_spawn]
    adapter = "lua"
    settings = {{ script = "return {{ children = {{ {{ type = 'square', args = {{ n = args.n }} }} }}, wait = true }}" }}

    [task_types.shell_spawn]
    adapter = "shell"
    settings = {{ argv = ["/bin/echo", '{{{{"children": [{{{{"type": "square", "args": {{{{"n": 5}}}}}}}}]}}}}'] }}

    [task_types.nest]
    adapter = "python"
    settings = {{ callable = "{DEMO}:nest" }}

    [task_types.gate]
    adapter = "python"
    signals = ["approval", "budget"]
    timeouts = {{ signal_wait = "60s" }}
    settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

    [task_types.own_gate]
    adapter = "python"
    signals = ["approval"]
    signal_by_other = true
    settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

    [task_types.spawn_one]
    adapter = "python"
    settings = {{ callable = "{DEMO}:spawn_one" }}

    [task_types.finish_gate]
    adapter = "python"
    signals_to_finish = ["review"]
    settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

    [task_types.progress]
    adapter = "python"
    settings = {{ callable = "{DEMO}:report_progress" }}

    [task_types."agent.step"]
    adapter = "python"
    lane = "agent:{{agent_id}}"
    settings = {{ callable = "{DEMO}:agent_step" }}

    [roles.coder]
    task_types = ["fan", "echo", "gate", "own_gate"]
    signals = []

    [roles.critic]
    task_types = ["echo"]
    signals = ["approval"]
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_with_config(tmp_path, CONFIG)
    yield runtime
    runtime.close()


def ended(rt: Runtime, *ids: UUID) -> bool:
    return all(rt.store.load(i).state.is_terminal for i in ids)


def run_until_ended(rt: Runtime, *ids: UUID) -> list[Task]:
    run_nodes_until(rt, lambda: ended(rt, *ids), timeout=30)
    return [rt.store.load(i) for i in ids]


def events_of(rt: Runtime, task_id: UUID) -> list[str]:
    return [event_name(type(r.event)) for r in rt.ledger.history(task_id)]


# -- results to dependents ------------------------------------------------------------


def test_dependents_take_their_dependencies_results_in_every_adapter(rt: Runtime) -> None:
    tasks = rt.ledger.enqueue_graph(
        [
            TaskRequest("add", {"a": 2, "b": 3}, ref="sum"),
            TaskRequest("inputs", ref="py", depends_on=("sum",)),
            TaskRequest("lua_inputs", ref="lua", depends_on=("sum",)),
            TaskRequest("shell_inputs", ref="sh", depends_on=("sum",)),
            TaskRequest("echo", ref="plain", depends_on=("sum",)),  # takes none
        ]
    )
    total, py, lua, sh, plain = run_until_ended(rt, *(t.id for t in tasks))
    assert py.result == {"sum": {"result": {"sum": 5}, "task_id": str(total.id)}}
    assert lua.result == {"doubled": 10}
    assert sh.result["stdout"] == "sum=5\n"
    assert plain.state is TaskState.SUCCEEDED and plain.inputs is None


def test_inputs_can_be_named_and_must_name_a_dependency(rt: Runtime) -> None:
    [first] = rt.ledger.enqueue_graph([TaskRequest("add", {"a": 1, "b": 1}, ref="one")])
    named = rt.ledger.enqueue(
        TaskRequest("inputs", depends_on=(str(first.id),), inputs={"previous": str(first.id)})
    )
    with pytest.raises(Exception, match="input 'other' names 'x', which is not in depends_on"):
        rt.ledger.enqueue(TaskRequest("inputs", depends_on=(str(first.id),), inputs={"other": "x"}))
    _, done = run_until_ended(rt, first.id, named.id)
    assert done.result == {"previous": {"result": {"sum": 2}, "task_id": str(first.id)}}


def test_a_template_naming_a_missing_input_fails_for_good_as_input_missing(rt: Runtime) -> None:
    tasks = rt.ledger.enqueue_graph(
        [
            TaskRequest("add", {"a": 1, "b": 1}, ref="sum"),
            TaskRequest("shell_missing", ref="missing", depends_on=("sum",), max_attempts=3),
        ]
    )
    _, missing = run_until_ended(rt, *(t.id for t in tasks))
    assert missing.state is TaskState.FAILED
    assert missing.error["class"] == "InputMissing" and missing.attempts == 1
    assert "deps.nope" in missing.error["message"]


def test_inputs_larger_than_the_limit_fail_for_good_as_input_too_large(rt: Runtime) -> None:
    tasks = rt.ledger.enqueue_graph(
        [
            TaskRequest("echo", {"blob": "x" * 400}, ref="big"),
            TaskRequest("inputs", ref="reader", depends_on=("big",), max_attempts=3),
        ]
    )
    _, reader = run_until_ended(rt, *(t.id for t in tasks))
    assert reader.state is TaskState.FAILED
    assert reader.error["class"] == "InputTooLarge" and reader.attempts == 1
    assert "more than the 300 allowed" in reader.error["message"]


# -- children at run time ---------------------------------------------------------------


def test_a_parent_waits_for_its_children_and_a_failed_child_fails_it(rt: Runtime) -> None:
    fails = rt.ledger.enqueue(TaskRequest("fan", {"numbers": [2, -1]}))
    ignores = rt.ledger.enqueue(
        TaskRequest("fan", {"numbers": [3, -1], "on_child_failure": "ignore"})
    )
    run_nodes_until(rt, lambda: ended(rt, fails.id, ignores.id), timeout=30)
    failed, ignored = rt.store.load(fails.id), rt.store.load(ignores.id)
    assert failed.state is TaskState.FAILED and failed.error["class"] == "ChildFailed"
    assert ignored.state is TaskState.SUCCEEDED
    assert ignored.result == {"result": {"spawned": 2}, "children": [{"square": 9}, None]}
    names = events_of(rt, ignores.id)
    assert names[names.index("TaskChildrenSpawned") :] == [
        "TaskChildrenSpawned",
        "TaskChildEnded",
        "TaskChildEnded",
        "TaskSucceeded",
    ]
    for child_id in ignored.children:
        child = rt.store.load(child_id)
        assert (child.parent_id, child.depth) == (ignores.id, 1)


def test_every_adapter_spawns_children_through_its_result(rt: Runtime) -> None:
    lua = rt.ledger.enqueue(TaskRequest("lua_spawn", {"n": 4}))
    shell = rt.ledger.enqueue(TaskRequest("shell_spawn"))
    run_nodes_until(rt, lambda: ended(rt, lua.id, shell.id), timeout=30)
    waited, at_once = rt.store.load(lua.id), rt.store.load(shell.id)
    assert waited.result["children"] == [{"square": 16}]
    assert at_once.state is TaskState.SUCCEEDED and len(at_once.children) == 1  # no wait
    child_id = at_once.children[0]
    run_nodes_until(rt, lambda: ended(rt, child_id), timeout=30)
    assert rt.store.load(child_id).result == {"square": 25}


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (TaskRequest("fan", {"numbers": [1, 2, 3, 4]}), "4 children, more than the 3 allowed"),
        (TaskRequest("nest", {"levels": 3}), "depth 3, deeper than the 2 allowed"),
        (TaskRequest("nest", {"levels": 1, "type": "square"}), "args do not match the schema"),
        (TaskRequest("nest", {"levels": 1, "type": "nope"}), "unknown task type 'nope'"),
    ],
    ids=["count", "depth", "schema", "type"],
)
def test_refused_children_fail_the_parent_and_enqueue_nothing(
    rt: Runtime, request_: TaskRequest, reason: str
) -> None:
    parent = rt.ledger.enqueue(request_)
    run_nodes_until(rt, lambda: _tree_ended(rt, parent.id), timeout=30)
    refused = _deepest(rt, parent.id)
    assert refused.state is TaskState.FAILED
    assert refused.error["class"] == "ChildrenRefused" and reason in refused.error["message"]
    assert refused.children == [] and refused.attempts == 1


def _tree_ended(rt: Runtime, task_id: UUID) -> bool:
    task = rt.store.load(task_id)
    return task.state.is_terminal and all(_tree_ended(rt, c) for c in task.children)


def _deepest(rt: Runtime, task_id: UUID) -> Task:
    task = rt.store.load(task_id)
    return _deepest(rt, task.children[0]) if task.children else task


def test_a_cancelled_child_decides_its_waiting_parent(rt: Runtime, tmp_path: Path) -> None:
    never = tmp_path / "never"
    parent = rt.ledger.enqueue(
        TaskRequest(
            "spawn_one",
            {"child": "progress", "child_args": {"until": str(never), "seconds": 2}},
        )
    )

    def cancel_the_running_child() -> bool:
        task = rt.store.load(parent.id)
        if task.children and rt.store.load(task.children[0]).state is TaskState.RUNNING:
            rt.ledger.cancel(task.children[0], reason="not needed")
        return task.state.is_terminal

    run_nodes_until(rt, cancel_the_running_child, timeout=30)
    done = rt.store.load(parent.id)
    assert done.state is TaskState.FAILED and done.error["class"] == "ChildFailed"
    assert "cancelled" in done.error["message"]
    child_ended = rt.ledger.history(parent.id)[-2].event
    assert event_name(type(child_ended)) == "TaskChildEnded"
    assert child_ended.child_state == "cancelled"  # type: ignore[attr-defined]


def test_children_are_checked_against_the_roles_of_the_parents_requester(rt: Runtime) -> None:
    parent = rt.ledger.enqueue(TaskRequest("fan", {"numbers": [2]}), Requester("ada", "coder"))
    [done] = run_until_ended(rt, parent.id)
    assert done.state is TaskState.FAILED and done.error["class"] == "ChildrenRefused"
    assert "role 'coder' may not enqueue 'square'" in done.error["message"]


# -- signals ------------------------------------------------------------------------------


def test_a_task_runs_only_once_every_signal_it_waits_for_has_come(rt: Runtime) -> None:
    gate = rt.ledger.enqueue(TaskRequest("gate", {"x": 1}))
    assert gate.state is TaskState.WAITING
    critic = Requester("cris", "critic")
    after_one = rt.ledger.signal(gate.id, "approval", {"ok": True}, critic)
    assert after_one.state is TaskState.WAITING and after_one.awaited_signals == ["budget"]
    with pytest.raises(Forbidden, match="may not deliver the signal 'budget'"):
        rt.ledger.signal(gate.id, "budget", None, critic)
    with pytest.raises(InvalidTransition, match="does not wait for the signal 'approval'"):
        rt.ledger.signal(gate.id, "approval", None)
    assert rt.ledger.signal(gate.id, "budget", 100).state is TaskState.READY
    [done] = run_until_ended(rt, gate.id)
    assert done.state is TaskState.SUCCEEDED and done.signals == {"approval": {"ok": True},
                                                                   "budget": 100}  # fmt: skip
    names = events_of(rt, gate.id)
    assert names[:4] == ["TaskEnqueued", "TaskSignalled", "TaskSignalled", "TaskStarted"]


def test_the_requester_may_not_deliver_the_signal_of_a_type_that_wants_another(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(TaskRequest("own_gate"), Requester("ada", "admin"))
    with pytest.raises(Forbidden, match=r"'ada' enqueued task .* may not deliver its signals"):
        rt.ledger.signal(task.id, "approval", None, Requester("ada", "admin"))
    assert events_of(rt, task.id) == ["TaskEnqueued"]
    assert rt.ledger.signal(task.id, "approval", None, Requester("root", "admin")).state is (
        TaskState.READY
    )


def test_a_signal_waits_behind_its_dependencies_and_a_bad_signal_records_nothing(
    rt: Runtime,
) -> None:
    _, gate = rt.ledger.enqueue_graph(
        [
            TaskRequest("add", {"a": 1, "b": 2}, ref="a"),
            TaskRequest("gate", ref="g", depends_on=("a",)),
        ]
    )
    assert gate.state is TaskState.BLOCKED
    bad = [(123, None), ("approval", float("nan")), ("bad name!", None)]
    bad += [("approval", {"note": "a\x00"}), ("approval", "\ud800")]  # unstorable text
    for name, data in bad:
        with pytest.raises(Exception, match="signal"):
            rt.ledger.signal(gate.id, name, data)  # type: ignore[arg-type]
    assert events_of(rt, gate.id) == ["TaskEnqueued"]
    run_nodes_until(rt, lambda: rt.store.load(gate.id).state is TaskState.WAITING, timeout=30)
    rt.ledger.signal(gate.id, "approval", None)
    rt.ledger.signal(gate.id, "budget", None)
    [done] = run_until_ended(rt, gate.id)
    assert done.state is TaskState.SUCCEEDED


def test_a_success_waits_for_the_signals_its_type_needs_before_it_finishes(
    rt: Runtime,
) -> None:
    task = rt.ledger.enqueue(TaskRequest("finish_gate", {"draft": 3}))
    with pytest.raises(InvalidTransition, match="does not wait for the signal 'review'"):
        rt.ledger.signal(task.id, "review", None)  # not yet: it has not run
    run_nodes_until(rt, lambda: rt.store.load(task.id).state is TaskState.WAITING, timeout=30)
    held = rt.store.load(task.id)
    assert held.result is None and held.awaited_signals == ["review"]
    done = rt.ledger.signal(task.id, "review", {"ok": True})
    assert done.state is TaskState.SUCCEEDED and done.result == {"draft": 3}
    assert events_of(rt, task.id) == [
        "TaskEnqueued",
        "TaskStarted",
        "TaskAwaitingSignals",
        "TaskSignalled",
        "TaskSucceeded",
    ]


# -- progress -----------------------------------------------------------------------------


def progress_in_view(rt: Runtime, task_id: UUID) -> tuple[Any, Any]:
    with rt.store.transaction() as cur:
        cur.execute(
            sql.SQL("SELECT progress, progress_message FROM {} WHERE task_id = %s").format(
                sql.Identifier(rt.store.schema, "task_view")
            ),
            (task_id,),
        )
        row = cur.fetchone()
    return (row["progress"], row["progress_message"]) if row else (None, None)


def test_progress_reported_by_python_code_is_a_heartbeat_shown_while_it_runs(
    rt: Runtime, tmp_path: Path
) -> None:
    until = tmp_path / "go"
    task = rt.ledger.enqueue(
        TaskRequest("progress", {"fraction": 0.4, "message": "copying", "until": str(until)})
    )

    def seen_then_released() -> bool:
        if rt.store.load(task.id).progress == 0.4 and progress_in_view(rt, task.id) == (
            0.4,
            "copying",
        ):
            until.touch()
        return ended(rt, task.id)

    run_nodes_until(rt, seen_then_released, timeout=30)
    heartbeats = [
        r.event for r in rt.ledger.history(task.id) if event_name(type(r.event)) == "TaskHeartbeat"
    ]
    assert [(h.progress, h.message) for h in heartbeats] == [(0.4, "copying")]
    assert rt.store.load(task.id).state is TaskState.SUCCEEDED


def test_progress_lines_of_a_shell_task_are_coalesced_into_few_heartbeats(
    ledger_env: None, tmp_path: Path
) -> None:
    until = tmp_path / "go"
    script = (
        'for i in 1 2 3 4 5 6 7 8 9; do echo "::progress 0.$i step $i"; done; '
        'echo "::progress nonsense"; while [ ! -e "$1" ]; do sleep 0.02; done; echo done'
    )
    config = CONFIG + textwrap.dedent(
        f"""
        [task_types.shell_progress]
        adapter = "shell"
        settings = {{ argv = ["/bin/sh", "-c", {json.dumps(script)}, "_", "{{args[until]}}"] }}
        """
    )
    runtime = runtime_with_config(tmp_path, config)
    try:
        task = runtime.ledger.enqueue(TaskRequest("shell_progress", {"until": str(until)}))

        def seen_then_released() -> bool:
            if progress_in_view(runtime, task.id) == (0.9, "step 9"):
                until.touch()
            return ended(runtime, task.id)

        run_nodes_until(runtime, seen_then_released, timeout=30)
        events = [r.event for r in runtime.ledger.history(task.id)]
        beats = [e for e in events if event_name(type(e)) == "TaskHeartbeat"]
        assert 1 <= len(beats) < 9  # ten lines, coalesced
        assert (beats[-1].progress, beats[-1].message) == (0.9, "step 9")
        assert runtime.store.load(task.id).result["stdout"].endswith("done\n")
    finally:
        runtime.close()


# -- agents ---------------------------------------------------------------------------------


def test_an_agent_step_sees_the_previous_steps_result_in_lane_order(rt: Runtime) -> None:
    steps: list[Task] = []
    for message in ("plan", "act", "reflect"):
        previous = steps[-1].id if steps else None
        steps.append(
            rt.ledger.enqueue(
                TaskRequest(
                    "agent.step",
                    {"agent_id": "9", "message": message},
                    depends_on=(str(previous),) if previous else (),
                    inputs={"previous": str(previous)} if previous else None,
                )
            )
        )
    done = run_until_ended(rt, *(s.id for s in steps))
    assert [d.result["turns"] for d in done] == [
        ["plan"],
        ["plan", "act"],
        ["plan", "act", "reflect"],
    ]
    assert {d.lane for d in done} == {"agent:9"}
    starts = [
        next(
            r.position
            for r in rt.ledger.history(d.id)
            if event_name(type(r.event)) == "TaskStarted"
        )
        for d in done
    ]
    assert starts == sorted(starts)


def test_progress_reports_are_coalesced_and_rate_limited_per_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker keeps the latest report of an attempt and hands out at most one per
    ``progress_interval`` (the clock is the worker's monotonic clock, set here)."""
    now = [100.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: now[0])
    settings = worker_module.WorkerSettings("w", ("default",), progress_interval=2.0)
    worker = worker_module.Worker(settings, None, {}, build_registry({}), None, None)  # type: ignore[arg-type]
    attempt = ClaimedAttempt(
        UUID(int=1), 1, "t", "python", {}, None, Timeouts(start_to_close=5), "default", None
    )
    worker.running[attempt.task_id] = None  # type: ignore[assignment]  # "running"
    report = worker._reporter(attempt)

    report(0.1, "a")
    report(0.2, "b")
    assert [(n.progress, n.message) for n in worker._due_notes()] == [(0.2, "b")]
    report(0.3, "c")
    report(7.0, "past the end")  # clamped to 1
    assert worker._due_notes() == []  # within the interval: kept, not handed out
    now[0] += 2.0
    assert [(n.progress, n.message) for n in worker._due_notes()] == [(1.0, "past the end")]
    report(float("nan"), "dropped")
    now[0] += 2.0
    assert worker._due_notes() == []


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers a POST with what it got, and asks for a child when the body says so."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer: dict[str, Any] = {"path": self.path, "got": body}
        if body.get("spawn"):
            answer.update(children=[{"type": "square", "args": {"n": body["spawn"]}}], wait=True)
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)


def test_an_http_task_takes_inputs_in_its_url_and_body_and_spawns_from_its_body(
    ledger_env: None, tmp_path: Path, echo_url: str
) -> None:
    config = CONFIG + textwrap.dedent(
        f"""
        [adapters.http]
        allow_private = true      # the test server listens on loopback

        [task_types.http_inputs]
        adapter = "http"
        inputs = true
        settings = {{ url = "{echo_url}/sum/{{deps[sum][result][sum]}}", method = "POST", json_body = true, allowed_hosts = ["127.0.0.1"] }}
        """
    )
    runtime = runtime_with_config(tmp_path, config)
    try:
        tasks = runtime.ledger.enqueue_graph(
            [
                TaskRequest("add", {"a": 2, "b": 5}, ref="sum"),
                TaskRequest("http_inputs", {"spawn": 3}, ref="call", depends_on=("sum",)),
            ]
        )
        total, call = run_until_ended(runtime, *(t.id for t in tasks))
    finally:
        runtime.close()
    body = call.result["result"]["body"]
    assert body["path"] == "/sum/7"
    assert body["got"] == {
        "spawn": 3,
        "deps": {"sum": {"result": {"sum": 7}, "task_id": str(total.id)}},
    }
    assert call.result["children"] == [{"square": 9}]
