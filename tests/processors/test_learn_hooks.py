"""Learn hooks see each finished attempt of their task type, in order, once; after a failure
or a restart they resume; a failing hook holds back only its own rows; they can be re-run
from any position."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from execution_ledger.adapters.config_file import ConfigFileError, learn_hooks_of
from execution_ledger.adapters.postgres.learn_feed import PostgresDatasetFeed
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from execution_ledger.processors.learn_hooks import LearnHookFailed, LearnHooks
from tests.processors import learn_hook_fixtures as fixtures
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [task_types.add]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:add" }
    learn_hook = "tests.processors.learn_hook_fixtures:remember"

    [task_types.flaky]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }
    retry = { max_attempts = 2, backoff_initial = "50ms" }
    learn_hook = "tests.processors.learn_hook_fixtures:count_in_database"

    [task_types.echo]
    adapter = "python"
    settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
    """
)


@pytest.fixture
def rt(ledger_env: None, tmp_path: Path) -> Iterator[Runtime]:
    fixtures.SEEN.clear()
    fixtures.FAIL_ONCE.clear()
    runtime = runtime_with_config(tmp_path, CONFIG)
    table = sql.Identifier(runtime.settings.schema, "learned")
    fixtures.TABLE[:] = [table]
    with runtime.store.transaction() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE {} (position bigint PRIMARY KEY, outcome text)").format(table)
        )
    yield runtime
    runtime.close()


def run_tasks(rt: Runtime) -> list[object]:
    ids = [rt.ledger.enqueue(TaskRequest("add", {"a": i, "b": 1})).id for i in range(3)]
    ids.append(rt.ledger.enqueue(TaskRequest("flaky", {"message": "no"})).id)
    ids.append(rt.ledger.enqueue(TaskRequest("echo")).id)
    run_nodes_until(
        rt, lambda: all(rt.store.load(i).state.is_terminal for i in ids), learn_hooks=False
    )
    rt.catch_up()
    return ids


def hooks(rt: Runtime) -> LearnHooks:
    return LearnHooks(
        learn_hooks_of(rt.settings.config.registry),
        lambda task_type: PostgresDatasetFeed(rt.store, task_type),
    )


def learned_rows(rt: Runtime) -> list[tuple[int, str]]:
    with rt.store.transaction() as cur:
        rows = cur.execute(
            sql.SQL("SELECT position, outcome FROM {} ORDER BY position").format(fixtures.TABLE[0])
        ).fetchall()
    return [(r["position"], r["outcome"]) for r in rows]


def test_each_hook_sees_each_finished_attempt_of_its_type_in_order(rt: Runtime) -> None:
    run_tasks(rt)
    processor = hooks(rt)
    while processor.run_once():
        pass
    assert [row["task_type"] for row in fixtures.SEEN] == ["add"] * 3
    assert [row["position"] for row in fixtures.SEEN] == sorted(
        row["position"] for row in fixtures.SEEN
    )
    assert [outcome for _, outcome in learned_rows(rt)] == ["failed", "failed"]  # two attempts


def test_a_failing_hook_gets_its_rows_again_and_a_restart_resumes(rt: Runtime) -> None:
    run_tasks(rt)
    fixtures.FAIL_ONCE.append(True)
    with pytest.raises(LearnHookFailed, match=r"learn hook of add failed.*failed once"):
        hooks(rt).run_once()
    assert fixtures.SEEN == []  # the add hook's batch rolled back with its failure
    assert len(learned_rows(rt)) == 2  # the flaky hook had its rows all the same
    restarted = hooks(rt)
    while restarted.run_once():
        pass
    assert len(fixtures.SEEN) == 3 and len(learned_rows(rt)) == 2
    assert hooks(rt).run_once() == 0  # nothing twice


def test_a_hook_that_keeps_failing_holds_back_only_its_own_rows(rt: Runtime) -> None:
    run_tasks(rt)
    fixtures.FAIL_ONCE.extend([True] * 5)
    processor = hooks(rt)
    for _ in range(3):
        with pytest.raises(LearnHookFailed):
            processor.run_once()
    assert fixtures.SEEN == [] and len(learned_rows(rt)) == 2
    ran = rt.ledger.enqueue(TaskRequest("flaky", {"message": "again"})).id
    run_nodes_until(rt, lambda: rt.store.load(ran).state.is_terminal, learn_hooks=False)
    rt.catch_up()
    with pytest.raises(LearnHookFailed):
        processor.run_once()
    assert len(learned_rows(rt)) == 4  # the new flaky attempts, past the stuck add rows


def test_a_feed_starts_from_the_shared_position_of_earlier_versions(rt: Runtime) -> None:
    run_tasks(rt)
    with rt.store.transaction() as cur:
        cur.execute(
            sql.SQL("SELECT position FROM {} ORDER BY position").format(
                sql.Identifier(rt.settings.schema, "attempt_dataset")
            )
        )
        positions = [row["position"] for row in cur.fetchall()]
        cur.execute(
            sql.SQL("INSERT INTO {} (name, position) VALUES ('learn_hooks', %s)").format(
                sql.Identifier(rt.settings.schema, "projection_positions")
            ),
            (positions[-1],),
        )
    assert hooks(rt).run_once() == 0  # everything up to there was delivered before


def test_hooks_can_be_rerun_from_a_position(rt: Runtime) -> None:
    run_tasks(rt)
    processor = hooks(rt)
    while processor.run_once():
        pass
    first = fixtures.SEEN[1]["position"]
    fixtures.SEEN.clear()
    with rt.store.transaction() as cur:
        cur.execute(sql.SQL("DELETE FROM {}").format(fixtures.TABLE[0]))
    processor.rerun_from(first)
    while processor.run_once():
        pass
    assert [row["position"] > first for row in fixtures.SEEN] == [True]


def test_a_learn_hook_that_does_not_import_is_refused_at_start(tmp_path: Path) -> None:
    from execution_ledger.adapters.config_file import parse_config

    text = '[task_types.t]\nadapter = "python"\nsettings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }\nlearn_hook = "no.such:hook"\n'
    with pytest.raises(ConfigFileError, match=r"cannot import 'no\.such'") as caught:
        parse_config(text, "ledger.toml")
    assert caught.value.line == 4


def test_a_worker_node_feeds_the_hooks(rt: Runtime) -> None:
    ids = [rt.ledger.enqueue(TaskRequest("add", {"a": i, "b": 1})).id for i in range(2)]
    run_nodes_until(rt, lambda: len(fixtures.SEEN) == 2, cron_interval=0.1)
    assert sorted(str(row["task_id"]) for row in fixtures.SEEN) == sorted(str(i) for i in ids)


def test_an_async_hook_is_run_to_its_end() -> None:
    class Feed:
        def __init__(self) -> None:
            self.delivered = 0

        def position(self) -> int:
            return self.delivered

        def next_rows(self, after: int, limit: int) -> list[dict[str, object]]:
            return [{"position": 1, "task_type": "add"}] if after == 0 else []

        def deliver(self, rows, call) -> None:  # type: ignore[no-untyped-def]
            for row in rows:
                call(row, None)
            self.delivered = rows[-1]["position"]

        def reset(self, position: int) -> None:
            self.delivered = position

    fixtures.SEEN.clear()
    processor = LearnHooks({"add": fixtures.remember_async}, lambda _type: Feed())
    assert processor.run_once() == 1 and processor.run_once() == 0
    assert fixtures.SEEN == [{"position": 1, "task_type": "add"}]


def ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str]:
    from execution_ledger.adapters.cli.main import main

    code = main(["--config", str(tmp_path / "ledger.toml"), *argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_ledger_learn_shows_positions_and_reruns_a_hook(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_tasks(rt)
    processor = hooks(rt)
    while processor.run_once():
        pass
    code, out = ledger(capsys, tmp_path, "learn", "status")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["add", "flaky"]
    fixtures.SEEN.clear()
    code, out = ledger(capsys, tmp_path, "learn", "rerun", "0", "--type", "add")
    assert code == 0 and "add: rows after position 0 are delivered again" in out
    while processor.run_once():
        pass
    assert len(fixtures.SEEN) == 3  # add's rows again; flaky's hook was left where it was
    assert len(learned_rows(rt)) == 2


def test_ledger_learn_refuses_bad_input_and_changes_nothing(
    rt: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_tasks(rt)
    processor = hooks(rt)
    while processor.run_once():
        pass
    code, out = ledger(capsys, tmp_path, "learn", "rerun", "0", "--type", "echo")
    assert code == 2 and "task type 'echo' has no learn_hook (hooks: add, flaky)" in out
    code, out = ledger(capsys, tmp_path, "learn", "rerun", "-3")
    assert code == 2 and "the position must be 0 or more" in out
    assert processor.run_once() == 0  # nothing is delivered again


@pytest.mark.usefixtures("ledger_env")
def test_ledger_learn_without_hooks_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from execution_ledger.adapters.cli.main import main

    assert main(["learn", "status"]) == 2
    assert "no task type has a learn_hook" in capsys.readouterr().err
