"""Replay of the learning dataset from the log alone: bounds by position and by time, the
same bytes for the same log and bound (JSONL, CSV, Parquet), the server-side decoding
agreeing with the library's, ``ledger replay``'s options, and ``GET /v1/dataset``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from execution_ledger.adapters.cli.replay import add_replay_parser, cmd_replay, replay_options
from execution_ledger.adapters.dataset.formats import (
    MissingParquetSupport,
    _json_line,
    require_parquet,
)
from execution_ledger.adapters.dataset.replay import LogBound, Replay, RowFilter, parse_bound
from execution_ledger.adapters.http.app import build_app
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.domain.timeouts import TimeoutKind
from execution_ledger.projections.attempt_fold import COLUMNS, AttemptRow
from tests.helpers import start


def now() -> datetime:
    return datetime.now(UTC)


def finish(runtime: Runtime, task_id: Any, result: Any, details: dict[str, Any]) -> None:
    attempt = start(runtime.store, task_id, worker="node-ü")
    task = runtime.store.load(task_id)
    task.succeed(attempt, result, details=details)
    runtime.store.save(task)


def build_varied_log(runtime: Runtime) -> None:
    """Unicode, nested and large values, scheduled and blocked tasks, odd details, a retry,
    a timeout, a cancel while running."""
    ledger = runtime.ledger
    tasks = ledger.enqueue_graph(
        [
            TaskRequest("echo", {"text": 'é\n"ü"\t😀', "n": [1, 2.5, 1e-7, 2**70]}, ref="a"),
            TaskRequest("echo", {"nested": {"z": None, "a": True}}, ref="b", depends_on=("a",)),
            TaskRequest("echo", ref="c", lane="agent:1", depends_on=("a", "b")),
            TaskRequest("echo", ref="d", run_at=now() - timedelta(seconds=1)),
        ]
    )
    a, b, c, d = (task.id for task in tasks)
    finish(runtime, a, {"ok": "✓"}, {"exit_code": 0, "http_status": 201})
    runtime.catch_up()
    finish(runtime, b, None, {"exit_code": True, "http_status": 1.5})
    runtime.catch_up()
    finish(runtime, c, "x" * 300, {"exit_code": 10**20})
    attempt = start(runtime.store, d)
    task = runtime.store.load(d)
    task.fail(attempt, "HttpStatus", "503", details={"http_status": 503})
    task.schedule_retry(now())
    runtime.store.save(task)
    start(runtime.store, d)
    task = runtime.store.load(d)
    task.cancel(by="alice", reason="enough")
    runtime.store.save(task)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    timed = ledger.enqueue(TaskRequest("sleep", {"seconds": 0}, run_at=later))
    task = runtime.store.load(timed.id)
    task.time_out(TimeoutKind.SCHEDULE_TO_CLOSE)
    runtime.store.save(task)
    ledger.pause_queue("default")  # a Queue event in the log, which the dataset ignores


def rows_of(replay: Replay) -> list[AttemptRow]:
    return [row for page in replay.pages() for row in page]


def write(replay: Replay, path: Path, fmt: str) -> bytes:
    replay.write_file(path, fmt)
    return path.read_bytes()


# -- decoding ---------------------------------------------------------------------------


def test_the_servers_decoding_gives_the_bytes_the_librarys_gives(
    runtime: Runtime, tmp_path: Path
) -> None:
    build_varied_log(runtime)
    fast = write(Replay(runtime.store, fast=True), tmp_path / "fast.jsonl", "jsonl")
    library = write(Replay(runtime.store, fast=False), tmp_path / "library.jsonl", "jsonl")
    assert fast == library
    rows = [json.loads(line) for line in fast.decode().splitlines()]
    outcomes = [r["outcome"] for r in rows]
    assert outcomes == ["succeeded", "succeeded", "succeeded", "failed", "cancelled"]
    first = rows[0]
    assert first["args_bytes"] == len(
        json.dumps(
            {"text": 'é\n"ü"\t😀', "n": [1, 2.5, 1e-7, 2**70]},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    )
    assert (first["exit_code"], first["http_status"], first["node"]) == (0, 201, "node-ü")
    assert (rows[1]["exit_code"], rows[1]["http_status"], rows[1]["result_bytes"]) == (
        None,
        None,
        4,
    )
    assert (rows[2]["exit_code"], rows[2]["dependencies"], rows[2]["dag_depth"]) == (None, 2, 2)
    assert rows[3]["http_status"] == 503 and rows[4]["attempt"] == 2


def test_a_page_the_server_cannot_parse_is_read_through_the_library(
    runtime: Runtime, tmp_path: Path
) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    finish(runtime, task.id, {"x": float("nan")}, {})  # the library writes NaN, not JSON
    fast = write(Replay(runtime.store, fast=True), tmp_path / "fast.csv", "csv")
    library = write(Replay(runtime.store, fast=False), tmp_path / "library.csv", "csv")
    assert fast == library
    assert b",succeeded," in fast


def test_escaped_texts_times_in_other_zones_and_odd_details_read_by_the_server_as_by_the_library(
    runtime: Runtime, tmp_path: Path
) -> None:
    zone = timezone(timedelta(hours=2))
    on_the_second = datetime.now(zone).replace(microsecond=0) - timedelta(seconds=5)
    in_utc = on_the_second.astimezone(UTC).isoformat(timespec="microseconds")
    lane, worker, error = 'l"\\\t\x01é', 'w"\\\t\n\x1f😀', 'Err"\t'
    task = runtime.ledger.enqueue(TaskRequest("echo", lane=lane, run_at=on_the_second))
    attempt = start(runtime.store, task.id, worker=worker)
    loaded = runtime.store.load(task.id)
    loaded.fail(attempt, error, "boom", details={"exit_code": "12", "http_status": -7})
    loaded.schedule_retry(on_the_second)  # stored as 2026-...T..:..:..+02:00
    runtime.store.save(loaded)
    finish(runtime, task.id, 1, {"exit_code": 10**18 - 1, "http_status": 1e3})

    fast = write(Replay(runtime.store, fast=True), tmp_path / "fast.jsonl", "jsonl")
    library = write(Replay(runtime.store, fast=False), tmp_path / "library.jsonl", "jsonl")
    assert fast == library
    failed, succeeded = (json.loads(line) for line in fast.decode().splitlines())
    assert (failed["lane"], failed["node"], failed["error_class"]) == (lane, worker, error)
    assert (failed["exit_code"], failed["http_status"]) == (None, -7)  # "12" is text
    assert succeeded["ready_at"] == in_utc  # the retry's time
    assert (succeeded["exit_code"], succeeded["http_status"]) == (10**18 - 1, None)


def test_a_time_bound_stops_at_a_task_event_the_fold_ignores_too(runtime: Runtime) -> None:
    task = runtime.ledger.enqueue(TaskRequest("echo"))
    attempt = start(runtime.store, task.id)
    loaded = runtime.store.load(task.id)
    loaded.heartbeat(attempt, now() + timedelta(seconds=30))
    runtime.store.save(loaded)
    loaded = runtime.store.load(task.id)
    loaded.succeed(attempt, 1)
    runtime.store.save(loaded)
    events = {type(e.event).__name__: e for e in runtime.store.read(0, 100)}
    moment = events["TaskStarted"].event.timestamp
    for fast in (True, False):
        replay = Replay(runtime.store, LogBound(time=moment), fast=fast)
        assert rows_of(replay) == []
        assert replay.position == events["TaskHeartbeat"].position - 1


def test_json_lines_are_what_json_dumps_writes(runtime: Runtime) -> None:
    build_varied_log(runtime)
    rows = [row for page in Replay(runtime.store).text_pages() for row in page]
    assert len(rows) == 5
    for row in rows:
        expected = json.dumps(
            dict(zip(COLUMNS, row, strict=True)), separators=(",", ":"), ensure_ascii=False
        )
        assert _json_line(row) == expected


# -- bounds -----------------------------------------------------------------------------


def test_a_replay_to_a_position_has_exactly_the_rows_finished_by_then(runtime: Runtime) -> None:
    build_varied_log(runtime)
    everything = rows_of(Replay(runtime.store))
    bound = everything[2].position
    replay = Replay(runtime.store, LogBound(position=bound))
    assert rows_of(replay) == [r for r in everything if r.position <= bound]
    assert replay.position == bound
    assert rows_of(Replay(runtime.store, LogBound(position=0))) == []


def test_a_replay_to_a_time_stops_before_the_first_task_event_stamped_after_it(
    runtime: Runtime,
) -> None:
    build_varied_log(runtime)
    everything = rows_of(Replay(runtime.store))
    moment = everything[1].finished_at
    events = runtime.store.read(0, 10_000)
    stop = next(
        e.position
        for e in events
        if type(e.event).__qualname__.startswith("Task.") and e.event.timestamp > moment
    )
    replay = Replay(runtime.store, LogBound(time=moment))
    assert rows_of(replay) == [r for r in everything if r.position < stop]
    assert replay.position == stop - 1
    # The same rows as a replay to that position.
    assert rows_of(Replay(runtime.store, LogBound(position=stop - 1))) == rows_of(
        Replay(runtime.store, LogBound(time=moment))
    )


def test_filters_keep_one_type_and_rows_after_a_position_or_from_a_time(runtime: Runtime) -> None:
    build_varied_log(runtime)
    everything = rows_of(Replay(runtime.store))
    only_echo = rows_of(Replay(runtime.store, row_filter=RowFilter(task_type="echo")))
    assert only_echo == [r for r in everything if r.task_type == "echo"]
    cut = everything[1]
    after = rows_of(Replay(runtime.store, row_filter=RowFilter(since=LogBound(cut.position))))
    assert after == everything[2:]
    since = RowFilter(since=LogBound(time=cut.finished_at))
    assert rows_of(Replay(runtime.store, row_filter=since)) == everything[1:]


# -- the same bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_two_replays_of_the_same_log_and_bound_write_the_same_bytes(
    runtime: Runtime, tmp_path: Path, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    build_varied_log(runtime)
    bound = LogBound(position=runtime.store.head_position() - 1)
    first = write(Replay(runtime.store, bound), tmp_path / f"one.{fmt}", fmt)
    runtime.ledger.enqueue(TaskRequest("echo"))  # the log grows past the bound
    second = write(Replay(runtime.store, bound), tmp_path / f"two.{fmt}", fmt)
    assert first == second
    assert not list(tmp_path.glob("*.partial"))


def test_a_parquet_file_holds_the_rows_with_the_fixed_schema(
    runtime: Runtime, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    build_varied_log(runtime)
    rows = rows_of(Replay(runtime.store))
    path = tmp_path / "dataset.parquet"
    replay = Replay(runtime.store)
    replay.write_file(path, "parquet")
    table = pq.read_table(path)
    assert table.column_names == list(COLUMNS)
    read = table.to_pylist()
    assert [r["task_id"] for r in read] == [str(r.task_id) for r in rows]
    assert [r["finished_at"] for r in read] == [r.finished_at for r in rows]
    assert [r["queue_wait_s"] for r in read] == [r.queue_wait_s for r in rows]


def test_a_replay_streamed_in_chunks_is_the_file_byte_for_byte(
    runtime: Runtime, tmp_path: Path
) -> None:
    build_varied_log(runtime)
    for fmt in ("jsonl", "csv"):
        whole = write(Replay(runtime.store), tmp_path / f"d.{fmt}", fmt)
        assert b"".join(Replay(runtime.store).chunks(fmt)) == whole


# -- ledger replay ----------------------------------------------------------------------


def replay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ledger")
    add_replay_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["replay", *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120", LogBound(position=120)),
        (" 0 ", LogBound(position=0)),
        ("2026-11-25T15:00:00Z", LogBound(time=datetime(2026, 11, 25, 15, tzinfo=UTC))),
        (
            "2026-11-25T17:00:00+02:00",
            LogBound(time=datetime(2026, 11, 25, 15, tzinfo=UTC)),
        ),
    ],
)
def test_a_bound_is_a_log_position_or_a_time_with_a_zone(text: str, expected: LogBound) -> None:
    assert parse_bound(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "--until must be a log position"),
        ("-5", "--until must be a log position"),
        ("12.5", "--until must be a log position"),
        ("2026-11-25T15:00:00", "--until needs a time zone"),
    ],
)
def test_a_bad_bound_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        replay_options(replay_args("--out", "d.jsonl", "--until", text))


def test_the_format_comes_from_the_option_or_the_file_name() -> None:
    assert replay_options(replay_args("--out", "d.csv"))[0] == "csv"
    assert replay_options(replay_args("--out", "d.txt", "--format", "jsonl"))[0] == "jsonl"
    with pytest.raises(InvalidQuery, match=r"cannot tell the format from 'd\.txt'"):
        replay_options(replay_args("--out", "d.txt"))


def test_parquet_without_pyarrow_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingParquetSupport, match=r"execution-ledger\[parquet\]"):
        require_parquet()
    with pytest.raises(MissingParquetSupport):
        replay_options(replay_args("--out", "d.parquet"))


def test_ledger_replay_writes_the_file_a_replay_writes(runtime: Runtime, tmp_path: Path) -> None:
    build_varied_log(runtime)
    out = tmp_path / "dataset.csv"
    bound = str(runtime.store.head_position())
    cmd_replay(runtime, replay_args("--out", str(out), "--until", bound, "--type", "echo"))
    expected = write(
        Replay(runtime.store, LogBound(position=int(bound)), RowFilter(task_type="echo")),
        tmp_path / "expected.csv",
        "csv",
    )
    assert out.read_bytes() == expected
    assert out.read_text().count("\n") == 1 + 5  # header and five echo attempts


# -- GET /v1/dataset --------------------------------------------------------------------


def http_get(runtime: Runtime, path: str) -> tuple[int, dict[str, str], bytes]:
    async def main() -> tuple[int, dict[str, str], bytes]:
        app = build_app(runtime)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, dict(response.headers), await response.read()

    return asyncio.run(main())


def test_the_http_export_streams_the_bytes_of_a_replay(runtime: Runtime, tmp_path: Path) -> None:
    build_varied_log(runtime)
    head = runtime.store.head_position()
    status, headers, body = http_get(runtime, f"/v1/dataset?format=csv&until={head}&type=echo")
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["X-Ledger-Until-Position"] == str(head)
    expected = Replay(runtime.store, LogBound(position=head), RowFilter(task_type="echo"))
    assert body == write(expected, tmp_path / "d.csv", "csv")
    status, headers, body = http_get(runtime, "/v1/dataset")
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert body == write(Replay(runtime.store), tmp_path / "d.jsonl", "jsonl")


def test_the_http_export_refuses_a_bad_bound_or_format_with_a_json_400(runtime: Runtime) -> None:
    status, _, body = http_get(runtime, "/v1/dataset?until=soon")
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_query"
    status, _, body = http_get(runtime, "/v1/dataset?format=xml")
    assert status == 400
    assert "unknown format 'xml'" in json.loads(body)["error"]["message"]
