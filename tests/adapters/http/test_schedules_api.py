"""Run-time schedules over real HTTP: create, read, update, pause, backfill and delete, each
an event naming the principal; bad definitions are 400 and roles without the right 403,
with nothing recorded; file schedules are paused here but changed in the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from execution_ledger.adapters.http.auth import token_sha256
from execution_ledger.adapters.runtime import Runtime
from tests.adapters.http.live_server import TOKENS, LiveServer, runtime_with_file

CONFIG = """
[task_types.beat]
adapter = "python"
settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

[roles.coder]
task_types = ["beat"]

[roles.planner]
may_schedule = true

[schedules.nightly]
cron = "0 3 * * *"
task_type = "beat"

[[principals]]
name = "alice"
role = "admin"
token_sha256 = "{admin}"

[[principals]]
name = "carol"
role = "coder"
token_sha256 = "{coder}"

[[principals]]
name = "pat"
role = "planner"
token_sha256 = "{planner}"
"""
PLANNER_TOKEN = "planner-token-cdef"


@pytest.fixture
def live(ledger_env: None, tmp_path: Path) -> Iterator[tuple[Runtime, LiveServer]]:
    hashes = {
        "admin": token_sha256(TOKENS["admin"]),
        "coder": token_sha256(TOKENS["coder"]),
        "planner": token_sha256(PLANNER_TOKEN),
    }
    with (
        runtime_with_file(tmp_path, CONFIG.format(**hashes)) as runtime,
        LiveServer(runtime) as server,
    ):
        yield runtime, server


def events_of(runtime: Runtime, name: str) -> list[tuple[str, str | None]]:
    control = runtime.store.load_schedule_control(name)
    return [
        (type(e.event).__name__, getattr(e.event, "by", None))
        for e in runtime.store.history(control.id)
    ]


def test_a_schedule_is_created_read_updated_paused_backfilled_and_deleted(
    live: tuple[Runtime, LiveServer],
) -> None:
    runtime, server = live
    with server.client(TOKENS["admin"]) as admin:
        made = admin.post(
            "/v1/schedules",
            json={
                "name": "reports",
                "cron": "*/15 * * * *",
                "task_type": "beat",
                "overlap": "skip",
            },
        )
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["source"], body["overlap"], body["paused"], body["skipped_ticks"]) == (
            "runtime",
            "skip",
            False,
            0,
        )
        assert body["next_fire"] is not None
        listed = {s["name"]: s["source"] for s in admin.get("/v1/schedules").json()["schedules"]}
        assert listed == {"nightly": "file", "reports": "runtime"}
        assert admin.get("/v1/schedules/reports").json()["cron"] == "*/15 * * * *"
        changed = admin.patch("/v1/schedules/reports", json={"cron": "0 * * * *", "args": {"a": 1}})
        assert changed.status_code == 200
        assert changed.json()["changes"] == {
            "args": [{}, {"a": 1}],
            "cron": ["*/15 * * * *", "0 * * * *"],
        }
        assert admin.post("/v1/schedules/reports/pause").json()["next_fire"] is None
        dry = admin.post(
            "/v1/schedules/reports/backfill",
            json={
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-01-01T02:59:00Z",
                "dry_run": True,
            },
        ).json()
        assert (dry["ticks"], dry["enqueued"], dry["existing"], dry["dry_run"]) == (3, 0, 0, True)
        done = admin.post(
            "/v1/schedules/reports/backfill",
            json={"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T02:59:00Z"},
        ).json()
        assert (done["enqueued"], len(done["task_ids"])) == (3, 3)
        task = admin.get(f"/v1/tasks/{done['task_ids'][0]}").json()
        assert task["args"] == {"a": 1} and "backfill" in task["tags"]
        gone = admin.delete("/v1/schedules/reports")
        assert gone.json() == {"name": "reports", "deleted": True}
        assert admin.get("/v1/schedules/reports").status_code == 404
    assert events_of(runtime, "reports") == [
        ("ScheduleRegistered", None),
        ("ScheduleDefined", "alice"),
        ("ScheduleUpdated", "alice"),
        ("SchedulePaused", "alice"),
        ("ScheduleBackfilled", "alice"),
        ("ScheduleDeleted", "alice"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"name": "x", "cron": "not cron", "task_type": "beat"}, 400, "invalid_schedule", "cron"),
        ({"name": "x", "cron": "* * * * *", "task_type": "nope"}, 400, "invalid_schedule", "nope"),
        (
            {"name": "x", "cron": "* * * * *", "task_type": "beat", "timezone": "Nowhere/City"},
            400,
            "invalid_schedule",
            "time zone",
        ),
        ({"name": "x", "cron": "* * * * *"}, 422, "invalid_submission", "task_type"),
        (
            {"name": "x", "cron": "* * * * *", "task_type": "beat", "overlap": "sometimes"},
            422,
            "invalid_submission",
            "overlap",
        ),
        ({"name": "nightly", "cron": "* * * * *", "task_type": "beat"}, 409, "", "registry file"),
    ],
)
def test_bad_definitions_are_refused_and_nothing_is_recorded(
    live: tuple[Runtime, LiveServer], body: dict[str, str], status: int, code: str, message: str
) -> None:
    runtime, server = live
    with server.client(TOKENS["admin"]) as admin:
        answer = admin.post("/v1/schedules", json=body)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert message in error["message"]
        if code:
            assert error["code"] == code
        names = [s["name"] for s in admin.get("/v1/schedules").json()["schedules"]]
    assert names == ["nightly"]
    assert events_of(runtime, "x") == []


def test_a_file_schedule_is_paused_here_but_changed_in_the_file(
    live: tuple[Runtime, LiveServer],
) -> None:
    _, server = live
    with server.client(TOKENS["admin"]) as admin:
        update = admin.patch("/v1/schedules/nightly", json={"cron": "0 4 * * *"})
        assert update.status_code == 409 and "change" in update.json()["error"]["message"]
        assert admin.delete("/v1/schedules/nightly").status_code == 409
        assert admin.post("/v1/schedules/nightly/pause").json()["paused"] is True
        assert admin.patch("/v1/schedules/nope", json={"cron": "0 4 * * *"}).status_code == 404
        bad_range = admin.post(
            "/v1/schedules/nightly/backfill",
            json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        )
        assert bad_range.status_code == 400
        assert "ends before it starts" in bad_range.json()["error"]["message"]


def test_roles_without_the_right_are_refused_and_nothing_is_recorded(
    live: tuple[Runtime, LiveServer],
) -> None:
    runtime, server = live
    definition = {"name": "theirs", "cron": "* * * * *", "task_type": "beat"}
    with server.client(TOKENS["coder"]) as coder:
        refused = coder.post("/v1/schedules", json=definition)
        assert refused.status_code == 403
        assert "may not manage schedules" in refused.json()["error"]["message"]
        assert coder.post("/v1/schedules/nightly/pause").status_code == 403
        assert (
            coder.post(
                "/v1/schedules/nightly/backfill",
                json={"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
            ).status_code
            == 403
        )
        assert coder.get("/v1/schedules").status_code == 200  # reading is for everyone
    assert events_of(runtime, "theirs") == [] and events_of(runtime, "nightly") == []
    with server.client(PLANNER_TOKEN) as planner:
        assert planner.post("/v1/schedules", json=definition).status_code == 201
    assert events_of(runtime, "theirs")[1] == ("ScheduleDefined", "pat")
