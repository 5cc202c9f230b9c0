"""Registry versions on a real PostgreSQL: recording a file's registry (`ledger registry
apply`, `POST /v1/registry/versions`), the same file recording nothing, changes that would
break queued work refused with their reasons unless forced, tasks carrying the version they
were enqueued under, and reading the versions back (CLI and HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import load_config
from execution_ledger.adapters.registry_follower import registry_versions
from execution_ledger.adapters.runtime import Runtime, open_runtime
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.registry_change import RegistryChangeRefused
from execution_ledger.domain.registry_history import RegistryVersionNotFound, registry_history_id
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import TOKENS, LiveServer, secured_config

V1 = """
[queues.fast]
[queues.slow]

[task_types.echo]
adapter = "python"
queue = "fast"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
schema = { type = "object" }

[task_types.add]
adapter = "python"
queue = "slow"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }
"""
WIDER = V1 + "\n[queues.extra]\nconcurrency = 3\n"
WITHOUT_ADD = V1.split("[task_types.add]")[0].replace("[queues.slow]\n", "")
STRICTER = V1.replace(
    'schema = { type = "object" }', 'schema = { type = "object", required = ["n"] }'
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(write(tmp_path, "v1.toml", V1), pool_size=2)
    yield runtime
    runtime.close()


def changes_recorded(rt: Runtime) -> list[object]:
    return [
        r.event
        for r in rt.store.history(registry_history_id())
        if type(r.event).__name__ == "RegistryChanged"
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_applying_records_versions_and_the_same_file_again_records_nothing(
    rt: Runtime, tmp_path: Path
) -> None:
    versions = registry_versions(rt)
    first = versions.apply(load_config(write(tmp_path, "a.toml", V1)), "alice")
    assert (first.version, first.recorded) == (1, True)
    again = versions.apply(load_config(write(tmp_path, "b.toml", "# same\n" + V1)), "bob")
    assert (again.version, again.recorded) == (1, False)
    second = versions.apply(load_config(write(tmp_path, "c.toml", WIDER)), "carol")
    assert (second.version, second.recorded, second.forced) == (2, True, False)
    assert second.diff == [{"op": "added", "path": ["queues", "extra"], "new": {"concurrency": 3}}]
    recorded = changes_recorded(rt)
    assert [(e.version, e.by) for e in recorded] == [(1, "alice"), (2, "carol")]  # type: ignore[attr-defined]
    assert recorded[1].source.endswith("c.toml")  # type: ignore[attr-defined]
    assert versions.registry_of(versions.version(2)).queue("extra").concurrency == 3


def test_removing_a_type_that_has_queued_tasks_is_refused_and_forcing_records_it_as_forced(
    rt: Runtime, tmp_path: Path
) -> None:
    versions = registry_versions(rt)
    versions.apply(load_config(write(tmp_path, "v1.toml", V1)), "alice")
    rt.ledger.enqueue(TaskRequest(type_name="add", args={"a": 1, "b": 2}))
    smaller = load_config(write(tmp_path, "smaller.toml", WITHOUT_ADD))
    with pytest.raises(RegistryChangeRefused) as refused:
        versions.apply(smaller, "bob")
    assert refused.value.reasons == [
        "task type 'add' is removed but 1 of its tasks are live",
        "queue 'slow' is removed but holds 1 live tasks",
    ]
    assert len(changes_recorded(rt)) == 1  # nothing recorded
    dry = versions.apply(smaller, "bob", dry_run=True)
    assert (dry.recorded, dry.reasons) == (False, refused.value.reasons)
    forced = versions.apply(smaller, "bob", force=True)
    assert (forced.version, forced.recorded, forced.forced) == (2, True, True)
    assert changes_recorded(rt)[-1].forced is True  # type: ignore[attr-defined]


def test_a_schema_that_queued_args_no_longer_satisfy_is_refused_naming_the_task(
    rt: Runtime, tmp_path: Path
) -> None:
    versions = registry_versions(rt)
    versions.apply(load_config(write(tmp_path, "v1.toml", V1)), "alice")
    misfit = rt.ledger.enqueue(TaskRequest(type_name="echo", args={"x": 1}))
    rt.ledger.enqueue(TaskRequest(type_name="echo", args={"n": 2}))
    with pytest.raises(RegistryChangeRefused) as refused:
        versions.apply(load_config(write(tmp_path, "strict.toml", STRICTER)), "bob")
    (reason,) = refused.value.reasons
    assert str(misfit.id) in reason and "'n' is a required property" in reason
    rt.ledger.cancel(misfit.id)  # ended tasks do not count
    assert versions.apply(load_config(write(tmp_path, "strict.toml", STRICTER)), "bob").recorded


def test_tasks_record_the_registry_version_they_were_enqueued_under(
    ledger_env: None, tmp_path: Path
) -> None:
    path = write(tmp_path, "v1.toml", V1)
    with_file = open_runtime(path, pool_size=2)
    try:
        unrecorded = with_file.ledger.enqueue(TaskRequest(type_name="echo"))
        registry_versions(with_file).apply(load_config(path), "alice")
    finally:
        with_file.close()
    reopened = open_runtime(path, pool_size=2)  # its file is the latest version: numbered
    try:
        numbered = reopened.ledger.enqueue(TaskRequest(type_name="echo"))
        assert reopened.ledger.task(numbered.id).enqueued_registry_version == 1
        assert reopened.ledger.task(unrecorded.id).enqueued_registry_version is None
        assert reopened.ledger.history(numbered.id)[0].event.registry_version == 1  # type: ignore[attr-defined]
    finally:
        reopened.close()


def test_an_unknown_version_is_not_found(rt: Runtime) -> None:
    with pytest.raises(RegistryVersionNotFound, match="none recorded yet"):
        registry_versions(rt).version(1)


# -- the CLI ------------------------------------------------------------------------------


@pytest.mark.usefixtures("ledger_env")
def test_cli_apply_history_show_and_diff(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    v1, wider = write(tmp_path, "v1.toml", V1), write(tmp_path, "wider.toml", WIDER)
    code, out, _ = run(capsys, "--config", str(v1), "registry", "apply", str(v1), "--by", "ops")
    assert (code, out.splitlines()[0]) == (0, "recorded registry version 1")
    code, out, _ = run(capsys, "--config", str(v1), "registry", "apply", str(v1))
    assert (code, out.strip()) == (0, "no change: the registry is already version 1")
    code, out, _ = run(capsys, "--config", str(v1), "registry", "apply", str(wider), "--dry-run")
    assert code == 0 and "dry run: version 2 would be recorded" in out
    assert "+ queues.extra" in out
    code, out, _ = run(capsys, "--config", str(v1), "registry", "apply", str(wider))
    assert (code, out.splitlines()[0]) == (0, "recorded registry version 2")
    code, out, _ = run(capsys, "--config", str(v1), "registry", "history")
    lines = out.splitlines()
    assert lines[0].split()[0] == "2" and lines[1].split()[0] == "1" and "ops" in lines[1]
    code, out, _ = run(capsys, "--config", str(v1), "registry", "history", "--json")
    assert [v["version"] for v in json.loads(out)] == [2, 1]
    code, out, _ = run(capsys, "--config", str(v1), "registry", "show", "2", "--json")
    shown = json.loads(out)
    assert shown["document"]["queues"]["extra"] == {"concurrency": 3} and shown["diff"]
    code, out, _ = run(capsys, "--config", str(v1), "registry", "diff", "2", "1")
    assert code == 0 and "- queues.extra" in out
    code, _, err = run(capsys, "--config", str(v1), "registry", "show", "9")
    assert code == 2 and "no registry version 9 (versions: 1 to 2)" in err


@pytest.mark.usefixtures("ledger_env")
def test_cli_apply_refuses_a_breaking_change_with_its_reasons_unless_forced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    v1, smaller = write(tmp_path, "v1.toml", V1), write(tmp_path, "small.toml", WITHOUT_ADD)
    run(capsys, "--config", str(v1), "registry", "apply", str(v1))
    code, out, _ = run(capsys, "--config", str(v1), "enqueue", "add", "-a", "a=1", "-a", "b=2")
    assert code == 0
    code, out, err = run(capsys, "--config", str(v1), "registry", "apply", str(smaller))
    assert code == 2 and out == ""
    assert "- task type 'add' is removed but 1 of its tasks are live" in err
    assert "- queue 'slow' is removed but holds 1 live tasks" in err
    code, out, _ = run(capsys, "--config", str(v1), "registry", "apply", str(smaller), "--force")
    assert code == 0 and out.splitlines()[0] == "recorded registry version 2 (forced past refusals)"
    code, out, _ = run(capsys, "--config", str(v1), "registry", "history", "--json")
    assert json.loads(out)[0]["forced"] is True


@pytest.mark.usefixtures("ledger_env")
def test_cli_apply_of_a_bad_file_says_where_and_records_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    v1 = write(tmp_path, "v1.toml", V1)
    bad = write(tmp_path, "bad.toml", V1 + '\n[queues.broken]\nconcurrency = "many"\n')
    code, _, err = run(capsys, "--config", str(v1), "registry", "apply", str(bad))
    assert code == 2 and "bad.toml:" in err and "queues.broken.concurrency" in err
    code, out, _ = run(capsys, "--config", str(v1), "registry", "history")
    assert out.startswith("no registry version recorded yet")


def test_cli_registry_help_covers_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["registry", "apply", "--help"])
    text = capsys.readouterr().out
    for option in ("--force", "--dry-run", "--by", "--json", "FILE".lower()):
        assert option in text
    with pytest.raises(SystemExit):
        main(["registry", "--help"])
    text = capsys.readouterr().out
    for action in ("history", "show", "diff", "apply"):
        assert action in text


def test_a_version_that_cannot_run_here_is_a_config_error(rt: Runtime, tmp_path: Path) -> None:
    versions = registry_versions(rt)
    versions.apply(load_config(write(tmp_path, "v1.toml", V1)), "alice")
    version = versions.version(1)
    broken = type(version)(**{**vars(version), "document": {"queues": {"q": {"bad": 1}}}})
    with pytest.raises(ConfigError, match="unknown key 'bad'"):
        versions.registry_of(broken)


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def secured(ledger_env: None, tmp_path: Path) -> Iterator[LiveServer]:
    runtime = open_runtime(secured_config(tmp_path), pool_size=2)
    try:
        with LiveServer(runtime) as live:
            yield live
    finally:
        runtime.close()


def test_http_lists_and_shows_versions_and_only_admin_may_apply(
    secured: LiveServer, tmp_path: Path
) -> None:
    text = secured_config(tmp_path).read_text()
    with secured.client(TOKENS["coder"]) as coder:
        refused = coder.post("/v1/registry/versions", json={"toml": text})
        assert refused.status_code == 403 and "admin only" in refused.json()["error"]["message"]
        assert coder.get("/v1/registry/versions").json()["versions"] == []
    with secured.client(TOKENS["admin"]) as admin:
        created = admin.post("/v1/registry/versions", json={"toml": text})
        assert created.status_code == 201 and created.json()["version"] == 1
        same = admin.post("/v1/registry/versions", json={"toml": text})
        assert same.status_code == 200 and same.json()["recorded"] is False
        wider = text + "\n[queues.extra]\n"
        dry = admin.post("/v1/registry/versions", json={"toml": wider, "dry_run": True})
        assert dry.status_code == 200 and dry.json()["summary"]["changes"] == ["+ queues.extra"]
        assert admin.post("/v1/registry/versions", json={"toml": wider}).status_code == 201
        listed = admin.get("/v1/registry/versions").json()
        assert [v["version"] for v in listed["versions"]] == [2, 1] and listed["latest"] == 2
        assert listed["versions"][0]["by"] == "alice"
        assert listed["versions"][0]["summary"]["added"] == 1
        one = admin.get("/v1/registry/versions/1").json()
        assert one["document"]["principals"][0] == {"name": "alice", "role": "admin"}
        assert "token_sha256" not in json.dumps(one)
        assert admin.get("/v1/registry/versions/7").status_code == 404
        events = admin.get("/v1/events", params={"type": "RegistryChanged"}).json()["events"]
        assert [(e["data"]["version"], e["principal"]) for e in events] == [
            (1, "alice"),
            (2, "alice"),
        ]
        assert "token_sha256" not in json.dumps(events)
        assert admin.get("/v1/registry/versions/x").status_code == 400
        bad = admin.post("/v1/registry/versions", json={"toml": "[queues.q]\nbad = 1\n"})
        assert bad.status_code == 422 and "queues.q.bad" in bad.json()["error"]["message"]
        assert admin.post("/v1/registry/versions", json={"tom": text}).status_code in (400, 422)


def test_http_refuses_a_breaking_change_with_409_and_the_reasons(
    secured: LiveServer, tmp_path: Path
) -> None:
    text = secured_config(tmp_path).read_text()
    with secured.client(TOKENS["admin"]) as admin:
        admin.post("/v1/registry/versions", json={"toml": text})
        task = admin.post("/v1/tasks", json={"type": "echo"}).json()
        without_echo = text.replace("[task_types.echo]", "[task_types.echo_gone]")
        refused = admin.post("/v1/registry/versions", json={"toml": without_echo})
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "registry_change_refused"
        assert "task type 'echo' is removed but 1 of its tasks are live" in error["message"]
        forced = admin.post("/v1/registry/versions", json={"toml": without_echo, "force": True})
        assert forced.status_code == 201 and forced.json()["forced"] is True
        shown = admin.get(f"/v1/tasks/{task['id']}").json()
        assert shown["registry_version"] == {"enqueued": None, "run": None}
    assert UUID(task["id"])
