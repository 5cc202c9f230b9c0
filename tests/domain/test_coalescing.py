"""The pure rules of singletons and debounce: key templates, the debounce option as JSON and
as command-line words, what a submission's keys and start become, the type's singleton in
the registry, and the ``TaskDebounced`` transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from execution_ledger.domain.coalescing import (
    Debounce,
    coalescing_of,
    debounce_from_text,
    debounce_option,
    debounced_start,
    render_key,
)
from execution_ledger.domain.errors import ConfigError, InvalidSubmission, InvalidTransition
from execution_ledger.domain.registry import build_registry
from execution_ledger.domain.submission import Requester, SubmissionContext, TaskRequest, plan_tasks
from execution_ledger.domain.task import Task

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_a_template_is_filled_from_the_args_and_a_plain_key_stays_as_it_is() -> None:
    assert render_key("report:{customer}:{year}", {"customer": "acme", "year": 2026}, "k") == (
        "report:acme:2026"
    )
    assert render_key("nightly", {}, "k") == "nightly"


def test_a_template_naming_a_missing_argument_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="needs the argument 'customer'"):
        render_key("report:{customer}", {"other": 1}, "singleton")


def test_a_key_that_comes_out_empty_or_too_long_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="gives a key of 0 characters"):
        render_key("{v}", {"v": ""}, "singleton")
    with pytest.raises(InvalidSubmission, match="gives a key of 201 characters"):
        render_key("{v}", {"v": "x" * 201}, "singleton")
    with pytest.raises(InvalidSubmission, match="NUL"):
        render_key("{v}", {"v": "a\x00b"}, "singleton")


def test_the_debounce_option_reads_json_with_a_duration_and_a_mode() -> None:
    assert debounce_option({"key": "k", "window": "1m30s"}) == Debounce("k", 90.0, "last")
    assert debounce_option({"key": "k", "window": 2, "mode": "first"}) == Debounce(
        "k", 2.0, "first"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("k:5s", "must be an object"),
        ({"key": "k"}, "needs a window"),
        ({"key": "k", "window": -1}, "must be positive"),
        ({"key": "k", "window": "400d"}, "at most a year"),
        ({"window": "5s"}, "key must be a non-empty string"),
        ({"key": "k", "window": "5s", "mode": "both"}, "'last' or 'first'"),
        ({"key": "k", "window": "5s", "extra": 1}, "unknown field 'extra'"),
    ],
)
def test_a_bad_debounce_option_is_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidSubmission, match=message):
        debounce_option(value)


def test_command_line_words_take_the_window_after_the_last_colon() -> None:
    assert debounce_from_text("sync:{account}:5s") == Debounce("sync:{account}", 5.0, "last")
    assert debounce_from_text("k:1m", "first") == Debounce("k", 60.0, "first")
    with pytest.raises(InvalidSubmission, match="KEY:WINDOW"):
        debounce_from_text("5s")


def test_a_debounce_starts_the_window_after_now_and_a_singleton_sets_only_its_key() -> None:
    debounce = coalescing_of(None, Debounce("s:{a}", 5.0, "first"), None, {"a": 1}, NOW)
    assert debounce.debounce_key == "s:1" and debounce.singleton_key is None
    assert debounce.run_at == NOW + timedelta(seconds=5) and not debounce.replace_args
    singleton = coalescing_of(None, None, "t:{a}", {"a": 2}, NOW)
    assert singleton.singleton_key == "t:2" and singleton.run_at is None
    assert coalescing_of("own", None, "t:{a}", {"a": 2}, NOW).singleton_key == "own"
    assert coalescing_of(None, None, None, {}, NOW).singleton_key is None


def plan(request: TaskRequest, registry_config: dict[str, object] | None = None) -> Task:
    registry = build_registry(registry_config or {"task_types": {"echo": {"adapter": "python"}}})
    context = SubmissionContext(registry, Requester("p", "admin"), NOW, uuid4)
    return plan_tasks(context, [request], {})[0]


def test_a_planned_debounce_is_scheduled_for_the_end_of_its_window() -> None:
    task = plan(TaskRequest("echo", {"n": 1}, debounce=Debounce("k", 30.0)))
    assert task.state.value == "scheduled" and task.run_at == NOW + timedelta(seconds=30)
    assert task.debounce_key == "k" and task.singleton_key is None


def test_the_types_singleton_template_is_checked_at_load_and_used_by_default() -> None:
    config = {"task_types": {"echo": {"adapter": "python", "singleton": "e:{n}"}}}
    assert build_registry(config).task_types["echo"].singleton == "e:{n}"
    assert plan(TaskRequest("echo", {"n": 4}), config).singleton_key == "e:4"
    for bad in ("", 5, "x" * 201):
        with pytest.raises(ConfigError) as caught:
            build_registry({"task_types": {"echo": {"adapter": "python", "singleton": bad}}})
        assert caught.value.where == ("task_types", "echo", "singleton")


def test_a_debounce_moves_a_pending_task_and_is_refused_once_it_started() -> None:
    task = plan(TaskRequest("echo", {"n": 1}, debounce=Debounce("k", 30.0)))
    later = NOW + timedelta(minutes=1)
    task.debounce({"n": 2}, later, by="p", replace=True)
    assert (task.args, task.run_at, task.state.value) == ({"n": 2}, later, "scheduled")
    task.debounce({"n": 3}, later, by="p", replace=False)
    assert task.args == {"n": 2}
    task.start("w", later + timedelta(seconds=30), later)
    with pytest.raises(InvalidTransition, match="cannot debounce"):
        task.debounce({"n": 4}, later, by="p", replace=True)


def test_max_wait_bounds_the_start_from_the_first_submission() -> None:
    first = NOW
    bounded = Debounce("k", 60.0, max_wait=90.0)
    assert debounced_start(bounded, NOW + timedelta(seconds=60), first) == NOW + timedelta(
        seconds=60
    )
    later = NOW + timedelta(seconds=80)
    assert debounced_start(bounded, later + timedelta(seconds=60), first) == NOW + timedelta(
        seconds=90
    )
    unbounded = Debounce("k", 60.0)
    assert debounced_start(unbounded, later + timedelta(seconds=60), first) == later + timedelta(
        seconds=60
    )
    assert debounce_option({"key": "k", "window": "5s", "max_wait": "1m"}).max_wait == 60.0
    with pytest.raises(InvalidSubmission, match="max_wait may not be shorter than the window"):
        debounce_option({"key": "k", "window": "5m", "max_wait": "1m"})
    with pytest.raises(InvalidSubmission, match="max_wait: cannot read duration"):
        debounce_option({"key": "k", "window": "5s", "max_wait": "later"})
    assert debounce_from_text("k:5s", max_wait="30s").max_wait == 30.0
