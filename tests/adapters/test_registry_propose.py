"""`ledger registry propose` and `POST /v1/registry/versions` with a report, on a real
PostgreSQL: a simulation report written by `ledger simulate --json --out` becomes the
evidence of a recorded registry change (shown by `registry show`, `history` and the HTTP
version endpoint, chained by the audit trail); a report edited by hand, one made for
another registry file, an unconfirmed proposal and a breaking change are refused and record
nothing."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.postgres.audit import protect_events_table, verify_chain
from execution_ledger.adapters.postgres.event_store import EVENTS_TABLE
from execution_ledger.adapters.postgres.projection_runner import ProjectionRunner
from execution_ledger.adapters.runtime import open_runtime
from execution_ledger.domain.registry_history import registry_history_id
from execution_ledger.domain.simulation.report import Report
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.projections.audit_chain import AuditChain
from tests.adapters.http.live_server import TOKENS, LiveServer, secured_config
from tests.helpers import fail, succeed

V1 = """
[queues.narrow]
concurrency = 1

[task_types.echo]
adapter = "python"
queue = "narrow"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }

[task_types.add]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }
"""
WIDER = V1.replace("concurrency = 1", "concurrency = 4")
WITHOUT_ADD = WIDER.split("[task_types.add]")[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def v1(ledger_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """Version 1 recorded, and a little history under it: echoes queued on a narrow queue,
    most ended, one failed; an `add` still queued (live work a breaking change would hit)."""
    config = write(tmp_path, "v1.toml", V1)
    assert run(capsys, config, "registry", "apply", str(config))[0] == 0
    runtime = open_runtime(config, pool_size=2)
    try:
        ids = [runtime.ledger.enqueue(TaskRequest("echo", {"n": n})).id for n in range(5)]
        for task_id in ids[:4]:
            succeed(runtime.store, task_id)
        fail(runtime.store, ids[4])
        runtime.ledger.enqueue(TaskRequest("add", {"a": 1, "b": 2}))
    finally:
        runtime.close()
    yield config


def simulate_to(capsys: pytest.CaptureFixture[str], config: Path, registry: Path, out: Path) -> str:
    """`ledger simulate --json --out`; the report's text."""
    code, said, _ = run(
        capsys, config, "simulate", "--registry", str(registry), "--json", "--out", str(out)
    )
    assert code == 0 and "report sha256" in said
    return out.read_text()


def recorded_changes(config: Path) -> list[Any]:
    runtime = open_runtime(config, pool_size=1)
    try:
        return [
            r.event
            for r in runtime.store.history(registry_history_id())
            if type(r.event).__name__ == "RegistryChanged"
        ]
    finally:
        runtime.close()


def sha256(text: str) -> str:
    return hashlib.sha256(text.removesuffix("\n").encode()).hexdigest()


def test_propose_records_the_change_with_its_evidence_shown_by_show_and_history(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = write(tmp_path, "wider.toml", WIDER)
    report = simulate_to(capsys, v1, wider, tmp_path / "report.json")
    code, out, err = run(
        capsys, v1, "registry", "propose", str(wider), "--report", str(tmp_path / "report.json"),
        "--yes", "--by", "ops",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert f"evidence: simulation report sha256 {sha256(report)}" in out
    assert "~ queues.narrow.concurrency: 1 -> 4" in out
    assert "p99 wait narrow: simulated" in out
    assert out.splitlines()[-1] == "recorded registry version 2 with its evidence"

    change = recorded_changes(v1)[-1]
    assert (change.version, change.by) == (2, "ops")
    assert change.evidence["kind"] == "simulation"
    assert change.evidence["report_sha256"] == sha256(report)
    assert change.evidence["inputs"] == json.loads(report)["inputs"]
    assert change.evidence["summary"]["tasks"] == 6
    assert change.evidence["summary"]["outcomes"]["recorded"] == {
        "failed": 1,
        "open": 1,
        "succeeded": 4,
    }
    assert set(change.evidence["summary"]["p99_wait_ms_by_queue"]) == {"default", "narrow"}
    assert recorded_changes(v1)[0].evidence is None  # applied without: none

    code, out, _ = run(capsys, v1, "registry", "show", "2")
    assert code == 0 and f"evidence: simulation report sha256 {sha256(report)}" in out
    code, out, _ = run(capsys, v1, "registry", "show", "2", "--json")
    assert json.loads(out)["evidence"] == change.evidence
    code, out, _ = run(capsys, v1, "registry", "history")
    lines = out.splitlines()
    assert lines[0].startswith("   2") and lines[0].endswith("EVIDENCE")
    assert "EVIDENCE" not in lines[1]


def test_a_report_edited_by_hand_is_refused_and_nothing_recorded(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = write(tmp_path, "wider.toml", WIDER)
    report = simulate_to(capsys, v1, wider, tmp_path / "report.json")
    data = json.loads(report)
    data["tasks"] += 1  # still canonical JSON: caught by the re-run
    edited = write(tmp_path, "edited.json", json.dumps(data, sort_keys=True, separators=(",", ":")))
    code, out, err = run(
        capsys, v1, "registry", "propose", str(wider), "--report", str(edited), "--yes"
    )
    assert (code, out) == (2, "")
    assert "does not match a re-run of its simulation" in err
    assert f"re-run {sha256(report)}" in err  # the re-run gives back the original
    pretty = write(tmp_path, "pretty.json", json.dumps(json.loads(report), indent=2))
    code, _, err = run(
        capsys, v1, "registry", "propose", str(wider), "--report", str(pretty), "--yes"
    )
    assert code == 2 and "not in the canonical form" in err
    not_json = write(tmp_path, "not.json", "tasks: 6\n")
    code, _, err = run(
        capsys, v1, "registry", "propose", str(wider), "--report", str(not_json), "--yes"
    )
    assert code == 2 and "the report is not JSON" in err
    code, _, err = run(
        capsys, v1, "registry", "propose", str(wider), "--report", str(tmp_path / "none.json")
    )
    assert code == 2 and "none.json" in err
    assert [c.version for c in recorded_changes(v1)] == [1]


def test_a_report_of_another_registry_file_is_refused_naming_both_digests(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = write(tmp_path, "wider.toml", WIDER)
    report = tmp_path / "report.json"
    simulate_to(capsys, v1, wider, report)
    other = write(tmp_path, "other.toml", WIDER + "\n[queues.extra]\n")
    code, out, err = run(
        capsys, v1, "registry", "propose", str(other), "--report", str(report), "--yes"
    )
    assert (code, out) == (2, "")
    assert "made for another registry file" in err
    made_for, proposed = (
        hashlib.sha256(t.encode()).hexdigest() for t in (WIDER, other.read_text())
    )
    assert f"registry_sha256 is {made_for}, the proposed file's is {proposed}" in err
    assert [c.version for c in recorded_changes(v1)] == [1]


def test_without_confirmation_nothing_is_recorded(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wider = write(tmp_path, "wider.toml", WIDER)
    report = tmp_path / "report.json"
    simulate_to(capsys, v1, wider, report)
    argv = ("registry", "propose", str(wider), "--report", str(report))
    code, out, err = run(capsys, v1, *argv)  # no terminal, no --yes
    assert code == 2 and "give --yes to confirm" in err
    assert "~ queues.narrow.concurrency: 1 -> 4" in out  # what it would have recorded

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, _ = run(capsys, v1, *argv)
    assert code == 1 and out.endswith(
        "record registry version 2 with this evidence? [y/N] not recorded\n"
    )
    assert [c.version for c in recorded_changes(v1)] == [1]
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = run(capsys, v1, *argv)
    assert code == 0 and out.endswith("[y/N] recorded registry version 2 with its evidence\n")
    assert [c.version for c in recorded_changes(v1)] == [1, 2]


def test_a_breaking_change_is_refused_unless_forced(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smaller = write(tmp_path, "smaller.toml", WITHOUT_ADD)
    report = tmp_path / "report.json"
    simulate_to(capsys, v1, smaller, report)
    argv = ("registry", "propose", str(smaller), "--report", str(report), "--yes")
    code, _, err = run(capsys, v1, *argv)
    assert code == 2
    assert "- task type 'add' is removed but 1 of its tasks are live" in err
    assert [c.version for c in recorded_changes(v1)] == [1]
    code, out, _ = run(capsys, v1, *argv, "--force")
    assert code == 0
    assert out.splitlines()[-1] == (
        "recorded registry version 2 (forced past refusals) with its evidence"
    )
    change = recorded_changes(v1)[-1]
    assert change.forced is True and change.evidence["report_sha256"] == sha256(report.read_text())


def test_the_evidence_is_in_the_audit_chain(
    v1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    runtime = open_runtime(v1, pool_size=2)
    try:
        projection = AuditChain(runtime.settings.schema)
        with runtime.store.transaction() as cursor:
            projection.create(cursor)
        with psycopg.connect(database_url, autocommit=True) as conn:
            protect_events_table(conn, runtime.settings.schema)
        chain = ProjectionRunner(runtime.store, projection)
        wider = write(tmp_path, "wider.toml", WIDER)
        report = simulate_to(capsys, v1, wider, tmp_path / "report.json")
        argv = ("registry", "propose", str(wider), "--report", str(tmp_path / "report.json"))
        assert run(capsys, v1, *argv, "--yes")[0] == 0
        assert verify_chain(runtime.store, chain).ok
        position = runtime.store.history(registry_history_id())[-1].position
        table = sql.Identifier(runtime.settings.schema, EVENTS_TABLE)
        with psycopg.connect(database_url, autocommit=True) as superuser:
            stored = superuser.execute(
                sql.SQL(
                    "SELECT convert_from(state, 'UTF8') FROM {} WHERE notification_id = %s"
                ).format(table),
                (position,),
            ).fetchone()
            assert stored is not None and sha256(report) in stored[0]
            superuser.execute("SET session_replication_role = replica")
            superuser.execute(
                sql.SQL(
                    "UPDATE {} SET state = convert_to(replace(convert_from(state, 'UTF8'), "
                    "%s, %s), 'UTF8') WHERE notification_id = %s"
                ).format(table),
                (sha256(report), "0" * 64, position),
            )
        verdict = verify_chain(runtime.store, chain)
        assert (verdict.ok, verdict.first_bad_position, verdict.reason) == (
            False,
            position,
            "altered",
        )
    finally:
        runtime.close()


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def secured(ledger_env: None, tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    config = secured_config(tmp_path)
    runtime = open_runtime(config, pool_size=2)
    try:
        with LiveServer(runtime) as live:
            yield live, config
    finally:
        runtime.close()


def test_http_records_a_change_with_a_report_and_refuses_a_bad_one(
    secured: tuple[LiveServer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live, config = secured
    text = config.read_text()
    wider_text = text + "\n[queues.extra]\nconcurrency = 3\n"
    wider = write(tmp_path, "wider.toml", wider_text)
    with live.client(TOKENS["admin"]) as admin:
        assert admin.post("/v1/registry/versions", json={"toml": text}).status_code == 201
        for n in range(3):
            assert admin.post("/v1/tasks", json={"type": "echo", "args": {"n": n}}).is_success
        report = simulate_to(capsys, config, wider, tmp_path / "report.json")
        body = {"toml": wider_text, "report": report}
        with live.client(TOKENS["coder"]) as coder:
            refused = coder.post("/v1/registry/versions", json=body)
            assert refused.status_code == 403
        other = admin.post("/v1/registry/versions", json={**body, "toml": wider_text + "\n"})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "evidence_refused"
        assert "made for another registry file" in other.json()["error"]["message"]
        data = json.loads(report)
        data["tasks"] = 99
        edited = json.dumps(data, sort_keys=True, separators=(",", ":"))
        tampered = admin.post("/v1/registry/versions", json={**body, "report": edited})
        assert tampered.status_code == 422
        assert "re-run" in tampered.json()["error"]["message"]
        dry = admin.post("/v1/registry/versions", json={**body, "dry_run": True})
        assert dry.status_code == 200 and dry.json()["recorded"] is False
        assert dry.json()["evidence"]["report_sha256"] == sha256(report)
        assert admin.get("/v1/registry/versions").json()["latest"] == 1
        created = admin.post("/v1/registry/versions", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["evidence"]["report_sha256"] == sha256(report)
        shown = admin.get("/v1/registry/versions/2").json()
        assert shown["evidence"]["report_sha256"] == sha256(report)
        assert shown["evidence"]["inputs"] == json.loads(report)["inputs"]
        assert shown["evidence"]["summary"]["tasks"] == 3
        listed = admin.get("/v1/registry/versions").json()["versions"]
        assert [v["evidence"] is not None for v in listed] == [True, False]


def test_a_change_stored_before_the_evidence_field_still_loads(
    v1: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    runtime = open_runtime(v1, pool_size=1)
    try:
        position = runtime.store.history(registry_history_id())[-1].position
        table = sql.Identifier(runtime.settings.schema, EVENTS_TABLE)
        with psycopg.connect(database_url, autocommit=True) as superuser:
            before = superuser.execute(
                sql.SQL(
                    "SELECT convert_from(state, 'UTF8') FROM {} WHERE notification_id = %s"
                ).format(table),
                (position,),
            ).fetchone()
            assert before is not None and '"evidence"' in before[0]  # stored, as null
            superuser.execute("SET session_replication_role = replica")
            stored = superuser.execute(
                sql.SQL(
                    "UPDATE {} SET state = convert_to((convert_from(state, 'UTF8')::jsonb "
                    "- 'evidence')::text, 'UTF8') WHERE notification_id = %s "
                    "RETURNING convert_from(state, 'UTF8')"
                ).format(table),
                (position,),
            ).fetchone()
        assert stored is not None and "evidence" not in stored[0] and '"version"' in stored[0]
    finally:
        runtime.close()
    assert recorded_changes(v1)[0].evidence is None
    code, out, _ = run(capsys, v1, "registry", "show", "1", "--json")
    assert code == 0 and json.loads(out)["evidence"] is None
    code, out, _ = run(capsys, v1, "registry", "history")
    assert code == 0 and "EVIDENCE" not in out and out.startswith("   1")


def test_propose_help_covers_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["registry", "propose", "--help"])
    text = capsys.readouterr().out
    for option in ("--report", "--yes", "--force", "--by", "file"):
        assert option in text


def test_http_takes_the_answer_of_post_simulations_as_the_report(
    secured: tuple[LiveServer, Path],
) -> None:
    live, config = secured
    text = config.read_text()
    wider_text = text + "\n[queues.extra]\nconcurrency = 3\n"
    with live.client(TOKENS["admin"]) as admin:
        assert admin.post("/v1/registry/versions", json={"toml": text}).status_code == 201
        assert admin.post("/v1/tasks", json={"type": "echo", "args": {"n": 1}}).is_success
        answer = admin.post("/v1/simulations", json={"toml": wider_text, "seed": 3}).json()
        assert answer["inputs"]["seed"] == 3
        wrong = {**answer, "tasks": answer["tasks"] + 1}
        refused = admin.post("/v1/registry/versions", json={"toml": wider_text, "report": wrong})
        assert refused.status_code == 422
        assert "is not the digest of its content" in refused.json()["error"]["message"]
        data = {k: v for k, v in wrong.items() if k != "digest"}
        resigned = {**data, "digest": Report(data).digest}  # a consistent forgery: re-run
        refused = admin.post("/v1/registry/versions", json={"toml": wider_text, "report": resigned})
        assert refused.status_code == 422 and "re-run" in refused.json()["error"]["message"]
        assert admin.get("/v1/registry/versions").json()["latest"] == 1
        created = admin.post("/v1/registry/versions", json={"toml": wider_text, "report": answer})
        assert created.status_code == 201, created.text
        evidence = admin.get("/v1/registry/versions/2").json()["evidence"]
        assert evidence["report_sha256"] == answer["digest"]
        assert evidence["inputs"]["registry_source"] == "POST /v1/simulations"
