"""Planning a submission: what is refused (and that one bad task refuses them all), how refs
and stored ids become dependencies, and what each new task is given: initial state, lane,
timeouts, attempts, priority."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any
from uuid import UUID

import pytest

from execution_ledger.domain.errors import (
    ConfigError,
    DependencyCycle,
    Forbidden,
    InvalidSubmission,
    SchemaViolation,
    UnknownDependency,
    UnknownTaskType,
)
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import (
    MAX_ARGS_BYTES,
    Requester,
    SubmissionContext,
    TaskRequest,
    external_dependencies,
    plan_tasks,
    render_lane,
)
from execution_ledger.domain.task import Task, TaskState
from execution_ledger.domain.timeouts import TimeoutOverrides

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STORED = UUID("00000000-0000-0000-0000-00000000abcd")

REGISTRY = build_registry(
    {
        "defaults": {
            "timeouts": {"start_to_close": "5m", "heartbeat": "30s", "schedule_to_close": "1d"},
            "retry": {"max_attempts": 3},
        },
        "queues": {
            "agents": {
                "timeouts": {"start_to_close": "2m", "heartbeat": "20s", "schedule_to_start": "1h"}
            }
        },
        "roles": {
            "critic": {"task_types": ["review.*"]},
            "auditor": {"adapters": ["http"]},
            "operator": {"adhoc": True, "adapters": ["python"]},
        },
        "task_types": {
            "echo": {"adapter": "python", "priority": 5, "tags": ["demo"]},
            "add": {
                "adapter": "python",
                "schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                },
            },
            "agent.step": {
                "adapter": "python",
                "queue": "agents",
                "lane": "agent:{agent_id}",
                "timeouts": {"start_to_close": "90s", "heartbeat": "10s"},
                "retry": {"max_attempts": 4},
            },
            "review.code": {"adapter": "python"},
            "deploy": {"adapter": "shell", "roles": ["admin"]},
        },
    }
)


def submit(
    *requests: TaskRequest,
    role: str = "coder",
    stored: dict[UUID, TaskState] | None = None,
    adapter_check: Any = None,
    graph_id: UUID | None = None,
) -> list[Task]:
    """Plan ``requests`` as one submission by ``alice``; new ids are UUID(int=1), 2, ..."""
    ids = (UUID(int=n) for n in count(1))
    context = SubmissionContext(
        registry=REGISTRY,
        requester=Requester("alice", role),
        now=NOW,
        new_id=lambda: next(ids),
        adapter_check=adapter_check,
    )
    return plan_tasks(context, list(requests), stored or {}, graph_id)


# -- one task -----------------------------------------------------------------------------


def test_a_plain_request_becomes_a_ready_task_of_its_type() -> None:
    [task] = submit(TaskRequest("echo", {"text": "hi"}, idempotency_key="k-1"))

    assert task.id == UUID(int=1)
    assert task.state is TaskState.READY
    assert (task.type_name, task.adapter, task.args) == ("echo", "python", {"text": "hi"})
    assert (task.queue, task.priority, task.tags) == ("default", 5, ["demo"])
    assert (task.principal, task.role) == ("alice", "coder")
    assert task.idempotency_key == "k-1"
    assert task.depends_on == []
    assert task.lane is None
    assert task.adapter_settings is None
    assert [type(e).__name__ for e in task.collect_events()] == ["TaskEnqueued"]


def test_the_priority_defaults_to_the_types_and_a_request_may_set_its_own() -> None:
    default, chosen = submit(TaskRequest("echo"), TaskRequest("echo", priority=-2))

    assert default.priority == 5
    assert chosen.priority == -2


def test_the_requests_tags_replace_the_types_tags() -> None:
    [task] = submit(TaskRequest("echo", tags=("urgent", "nightly")))

    assert task.tags == ["urgent", "nightly"]


def test_a_request_may_choose_another_queue() -> None:
    [task] = submit(TaskRequest("echo", queue="agents"))

    assert task.queue == "agents"


@pytest.mark.parametrize(
    ("run_at", "state"),
    [
        (NOW + timedelta(seconds=1), TaskState.SCHEDULED),
        (NOW, TaskState.READY),
        (NOW - timedelta(hours=1), TaskState.READY),
    ],
)
def test_a_task_is_scheduled_only_when_its_run_at_is_in_the_future(
    run_at: datetime, state: TaskState
) -> None:
    [task] = submit(TaskRequest("echo", run_at=run_at))

    assert task.state is state
    assert task.run_at == run_at


# -- refusals -----------------------------------------------------------------------------


def test_an_empty_submission_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="the submission has no tasks"):
        submit()


def test_an_unknown_task_type_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        UnknownTaskType,
        match=r"unknown task type 'ecko' \(known: add, agent.step, deploy, echo, review.code\)",
    ):
        submit(TaskRequest("ecko"))


def test_args_of_the_wrong_type_are_refused_naming_the_field() -> None:
    with pytest.raises(
        SchemaViolation,
        match=r"args do not match the schema of 'add' at a: 'one' is not of type 'number'",
    ):
        submit(TaskRequest("add", {"a": "one", "b": 2}))


def test_args_missing_a_required_field_are_refused() -> None:
    with pytest.raises(SchemaViolation, match=r"at \(root\): 'b' is a required property"):
        submit(TaskRequest("add", {"a": 1}))


def test_args_matching_the_schema_are_accepted() -> None:
    [task] = submit(TaskRequest("add", {"a": 1, "b": 2.5}))

    assert task.args == {"a": 1, "b": 2.5}


def test_args_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(SchemaViolation, match="args must be a JSON object"):
        submit(TaskRequest("echo", args=[1, 2]))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{1, 2}, object(), math.nan, math.inf])
def test_args_that_are_not_json_are_refused(value: object) -> None:
    with pytest.raises(SchemaViolation, match="args are not JSON"):
        submit(TaskRequest("echo", {"x": value}))


def test_args_up_to_the_size_limit_are_accepted_and_one_byte_more_is_refused() -> None:
    envelope = len('{"s":""}')
    fits = "x" * (MAX_ARGS_BYTES - envelope)

    [task] = submit(TaskRequest("echo", {"s": fits}))
    assert task.args == {"s": fits}
    with pytest.raises(InvalidSubmission, match=f"more than the {MAX_ARGS_BYTES} allowed"):
        submit(TaskRequest("echo", {"s": fits + "x"}))


def test_a_dependency_that_is_neither_a_ref_nor_an_id_is_refused() -> None:
    with pytest.raises(
        UnknownDependency,
        match="task 'b' depends on 'ghost', which is neither a ref in this submission nor a task",
    ):
        submit(TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("ghost",)))


def test_a_dependency_on_an_id_that_is_not_stored_is_refused() -> None:
    missing = "00000000-0000-0000-0000-0000000000ff"

    with pytest.raises(UnknownDependency, match=f"unknown dependency: no task {missing}"):
        submit(TaskRequest("echo", depends_on=(missing,)))


def test_a_two_task_cycle_is_refused_naming_the_cycle() -> None:
    with pytest.raises(DependencyCycle, match="dependency cycle: a -> b -> a"):
        submit(
            TaskRequest("echo", ref="a", depends_on=("b",)),
            TaskRequest("echo", ref="b", depends_on=("a",)),
        )


def test_a_task_depending_on_itself_is_refused_as_a_cycle() -> None:
    with pytest.raises(DependencyCycle, match="dependency cycle: a -> a"):
        submit(TaskRequest("echo", ref="a", depends_on=("a",)))


def test_a_cycle_reached_through_a_task_outside_it_names_only_the_cycle() -> None:
    with pytest.raises(DependencyCycle, match=r"dependency cycle: b -> c -> d -> b$"):
        submit(
            TaskRequest("echo", ref="a", depends_on=("b",)),
            TaskRequest("echo", ref="b", depends_on=("c",)),
            TaskRequest("echo", ref="c", depends_on=("d",)),
            TaskRequest("echo", ref="d", depends_on=("b",)),
        )


def test_a_diamond_of_dependencies_is_not_a_cycle() -> None:
    top, left, right, bottom = submit(
        TaskRequest("echo", ref="top"),
        TaskRequest("echo", ref="left", depends_on=("top",)),
        TaskRequest("echo", ref="right", depends_on=("top",)),
        TaskRequest("echo", ref="bottom", depends_on=("left", "right")),
    )

    assert bottom.depends_on == [left.id, right.id]
    assert [t.state for t in (top, left, right, bottom)] == [
        TaskState.READY, TaskState.BLOCKED, TaskState.BLOCKED, TaskState.BLOCKED,
    ]  # fmt: skip


def test_a_ref_used_twice_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="ref 'a' is used twice in this submission"):
        submit(TaskRequest("echo", ref="a"), TaskRequest("echo", ref="a"))


@pytest.mark.parametrize("ref", ["", "#0"])
def test_an_empty_ref_or_one_that_looks_like_a_position_is_refused(ref: str) -> None:
    with pytest.raises(InvalidSubmission, match="invalid ref"):
        submit(TaskRequest("echo", ref=ref))


def test_naming_the_same_dependency_twice_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="task 'b' names the same dependency twice"):
        submit(TaskRequest("echo", ref="a"), TaskRequest("echo", ref="b", depends_on=("a", "a")))


def test_a_role_not_listed_by_the_task_type_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="role 'tester' may not enqueue 'deploy'"):
        submit(TaskRequest("deploy"), role="tester")


def test_a_role_whose_policy_does_not_cover_the_type_name_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="role 'critic' may not enqueue 'echo'"):
        submit(TaskRequest("echo"), role="critic")


def test_a_role_whose_policy_covers_the_type_name_by_glob_may_enqueue_it() -> None:
    [task] = submit(TaskRequest("review.code"), role="critic")

    assert task.role == "critic"


def test_a_role_whose_policy_does_not_cover_the_adapter_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="role 'auditor' may not enqueue 'echo'"):
        submit(TaskRequest("echo"), role="auditor")


def test_an_unknown_role_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="unknown role 'janitor'"):
        submit(TaskRequest("echo"), role="janitor")


def test_a_max_attempts_below_one_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="max_attempts must be from 1 to 1000"):
        submit(TaskRequest("echo", max_attempts=0))


# -- atomicity ----------------------------------------------------------------------------

BAD_REQUESTS = {
    "unknown type": (TaskRequest("nope"), UnknownTaskType),
    "schema violation": (TaskRequest("add", {"a": 1}), SchemaViolation),
    "forbidden type": (TaskRequest("deploy"), Forbidden),
    "missing lane argument": (TaskRequest("agent.step", {}), SchemaViolation),
    "bad max_attempts": (TaskRequest("echo", max_attempts=0), InvalidSubmission),
}


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize(("bad", "error"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_one_bad_task_anywhere_refuses_the_whole_submission(
    bad: TaskRequest, error: type[Exception], position: int
) -> None:
    requests = [TaskRequest("echo", {"n": n}) for n in range(2)]
    requests.insert(position, bad)

    with pytest.raises(error):
        submit(*requests)


# -- dependencies -------------------------------------------------------------------------


def test_refs_resolve_to_the_ids_of_the_tasks_of_the_same_submission() -> None:
    graph = UUID(int=100)
    fetch, parse = submit(
        TaskRequest("echo", ref="fetch"),
        TaskRequest("echo", ref="parse", depends_on=("fetch",)),
        graph_id=graph,
    )

    assert (fetch.id, parse.id) == (UUID(int=1), UUID(int=2))
    assert parse.depends_on == [fetch.id]
    assert (fetch.ref, parse.ref) == ("fetch", "parse")
    assert fetch.graph_id == parse.graph_id == graph
    assert fetch.state is TaskState.READY
    assert parse.state is TaskState.BLOCKED


def test_tasks_are_returned_dependencies_first_whatever_the_submission_order() -> None:
    fetch, parse = submit(
        TaskRequest("echo", ref="parse", depends_on=("fetch",)),
        TaskRequest("echo", ref="fetch"),
    )

    assert parse.depends_on == [fetch.id]
    assert parse.state is TaskState.BLOCKED


def test_a_task_depending_on_a_stored_succeeded_task_is_ready() -> None:
    [task] = submit(
        TaskRequest("echo", depends_on=(str(STORED),)), stored={STORED: TaskState.SUCCEEDED}
    )

    assert task.depends_on == [STORED]
    assert task.state is TaskState.READY


def test_a_task_depending_on_a_stored_succeeded_task_with_a_future_run_at_is_scheduled() -> None:
    [task] = submit(
        TaskRequest("echo", depends_on=(str(STORED),), run_at=NOW + timedelta(hours=1)),
        stored={STORED: TaskState.SUCCEEDED},
    )

    assert task.state is TaskState.SCHEDULED


@pytest.mark.parametrize("dependency_state", [s for s in TaskState if s is not TaskState.SUCCEEDED])
def test_a_task_depending_on_a_stored_task_not_yet_succeeded_is_blocked(
    dependency_state: TaskState,
) -> None:
    [task] = submit(
        TaskRequest("echo", depends_on=(str(STORED),)), stored={STORED: dependency_state}
    )

    assert task.state is TaskState.BLOCKED


def test_a_task_depending_on_a_succeeded_stored_task_and_a_new_one_is_blocked() -> None:
    first, second = submit(
        TaskRequest("echo", ref="first"),
        TaskRequest("echo", ref="second", depends_on=(str(STORED), "first")),
        stored={STORED: TaskState.SUCCEEDED},
    )

    assert second.depends_on == [STORED, first.id]
    assert second.state is TaskState.BLOCKED


def test_external_dependencies_are_the_stored_ids_named_not_the_refs() -> None:
    other = UUID(int=77)
    requests = [
        TaskRequest("echo", ref="a", depends_on=(str(STORED),)),
        TaskRequest("echo", ref="b", depends_on=("a", str(other), str(STORED))),
    ]

    assert external_dependencies(requests) == {STORED, other}


def test_external_dependencies_refuse_a_name_that_is_not_an_id() -> None:
    with pytest.raises(UnknownDependency, match="task of type 'echo' depends on 'nope'"):
        external_dependencies([TaskRequest("echo", depends_on=("nope",))])


# -- lanes --------------------------------------------------------------------------------


def test_the_lane_is_rendered_from_the_types_template_and_the_args() -> None:
    [task] = submit(TaskRequest("agent.step", {"agent_id": 42}))

    assert task.lane == "agent:42"


def test_a_lane_given_by_the_request_wins_over_the_template() -> None:
    [task] = submit(TaskRequest("agent.step", {"agent_id": 42}, lane="agent:special"))

    assert task.lane == "agent:special"


def test_a_lane_template_whose_argument_is_missing_is_refused() -> None:
    with pytest.raises(
        SchemaViolation,
        match=re.escape("the lane template 'agent:{agent_id}' needs the argument 'agent_id'"),
    ):
        submit(TaskRequest("agent.step", {"agent": 42}))


def test_a_lane_template_may_use_several_arguments() -> None:
    assert render_lane("{team}/{agent_id}", {"team": "red", "agent_id": 7}) == "red/7"
    assert render_lane(None, {"agent_id": 7}) is None


# -- timeouts and attempts ----------------------------------------------------------------


def test_each_timeout_comes_from_the_most_specific_level_that_sets_it() -> None:
    [task] = submit(
        TaskRequest(
            "agent.step",
            {"agent_id": 1},
            timeouts=TimeoutOverrides(start_to_close=60.0),
        )
    )

    assert task.timeouts == {
        "start_to_close": 60.0,  # task (beats type 90s, queue 2m, default 5m)
        "heartbeat": 10.0,  # type (beats queue 20s, default 30s)
        "schedule_to_start": 3600.0,  # queue (unset by task and type)
        "schedule_to_close": 86400.0,  # default (unset elsewhere)
    }


def test_without_a_task_override_the_type_timeout_applies() -> None:
    [task] = submit(TaskRequest("agent.step", {"agent_id": 1}))

    assert task.timeouts["start_to_close"] == 90.0


def test_the_queue_level_timeouts_are_those_of_the_queue_the_task_goes_to() -> None:
    [task] = submit(TaskRequest("agent.step", {"agent_id": 1}, queue="default"))

    assert task.timeouts == {
        "start_to_close": 90.0,
        "heartbeat": 10.0,
        "schedule_to_start": None,
        "schedule_to_close": 86400.0,
    }


def test_a_type_without_timeouts_gets_the_queue_and_default_ones() -> None:
    [task] = submit(TaskRequest("echo"))

    assert task.timeouts == {
        "start_to_close": 300.0,
        "heartbeat": 30.0,
        "schedule_to_start": None,
        "schedule_to_close": 86400.0,
    }


def test_max_attempts_comes_from_the_type_unless_the_request_overrides_it() -> None:
    default, step, overridden = submit(
        TaskRequest("echo"),
        TaskRequest("agent.step", {"agent_id": 1}),
        TaskRequest("agent.step", {"agent_id": 2}, max_attempts=7),
    )

    assert (default.max_attempts, default.retry["max_attempts"]) == (3, 3)
    assert (step.max_attempts, step.retry["max_attempts"]) == (4, 4)
    assert (overridden.max_attempts, overridden.retry["max_attempts"]) == (7, 7)
    assert overridden.retry["backoff_initial"] == step.retry["backoff_initial"]


# -- ad-hoc tasks -------------------------------------------------------------------------


def test_a_role_without_adhoc_may_not_name_an_adapter() -> None:
    with pytest.raises(Forbidden, match="role 'coder' may not enqueue ad-hoc tasks"):
        submit(TaskRequest("one-off", adapter="shell", adapter_settings={"argv": ["/bin/true"]}))


def test_an_admin_may_enqueue_an_adhoc_task_with_its_adapter_and_settings() -> None:
    settings = {"argv": ["/bin/echo", "hi"]}

    [task] = submit(
        TaskRequest("one-off", {"x": 1}, adapter="shell", adapter_settings=settings), role="admin"
    )

    assert (task.type_name, task.adapter, task.adapter_settings) == ("one-off", "shell", settings)
    assert task.queue == "default"
    assert task.retry["max_attempts"] == 3
    assert task.state is TaskState.READY


def test_the_settings_of_an_adhoc_task_are_checked_by_the_adapter_check() -> None:
    seen = []

    def refuse(adapter: str, settings: dict, where: tuple[str, ...]) -> None:
        seen.append((adapter, settings, where))
        raise ConfigError("argv must be a list", (*where, "argv"))

    with pytest.raises(InvalidSubmission, match=r"adapter_settings\.argv: argv must be a list"):
        submit(
            TaskRequest("one-off", adapter="shell", adapter_settings={"argv": "ls"}),
            role="admin",
            adapter_check=refuse,
        )
    assert seen == [("shell", {"argv": "ls"}, ("adapter_settings",))]


def test_an_adhoc_task_without_settings_is_planned_with_empty_settings() -> None:
    [task] = submit(TaskRequest("one-off", adapter="python"), role="admin")

    assert task.adapter_settings == {}


def test_an_adhoc_task_through_an_adapter_outside_the_roles_policy_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        submit(
            TaskRequest("one-off", adapter="shell", adapter_settings={"argv": ["/bin/rm"]}),
            role="operator",  # adhoc = true, adapters = ["python"]
        )


def test_an_adhoc_task_through_an_adapter_inside_the_roles_policy_is_allowed() -> None:
    [task] = submit(
        TaskRequest("one-off", adapter="python", adapter_settings={"callable": "m:f"}),
        role="operator",
    )

    assert task.adapter == "python"


def test_a_queue_the_registry_does_not_declare_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="unknown queue 'nowhere'"):
        submit(TaskRequest("echo", queue="nowhere"))


@pytest.mark.parametrize(
    "request_",
    [
        TaskRequest("echo", {"text": "a\x00b"}),
        TaskRequest("echo", {"text": "\ud800"}),
        TaskRequest("echo", lane="agent:\x00"),
        TaskRequest("echo", tags=("ok", "\udfff")),
    ],
    ids=["nul-in-args", "surrogate-in-args", "nul-in-lane", "surrogate-in-tag"],
)
def test_text_postgres_cannot_store_is_refused_before_it_reaches_the_log(
    request_: TaskRequest,
) -> None:
    with pytest.raises(InvalidSubmission, match="NUL character or a lone surrogate"):
        submit(request_)


def test_a_type_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="type must be a task type name"):
        submit(TaskRequest("echo\n"))


def test_request_timeouts_beyond_a_year_are_refused() -> None:
    from execution_ledger.domain.timeouts import TimeoutOverrides

    with pytest.raises(InvalidSubmission, match=r"timeouts\.start_to_close must be from 0 to a year"):
        submit(TaskRequest("echo", timeouts=TimeoutOverrides(start_to_close=1e12)))
