"""``ledger simulate`` on a window of a real log: a workload run by a real worker node
(queue limits, a lane, failures and retries), replayed through the registry it ran under
(it must reproduce what happened closely) and through another (what would change); the
report is byte-identical for the same inputs, the log is only read, bad input refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import parse_config
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.simulation import (
    SimulationRequest,
    check_settings,
    simulate,
    text_sha256,
)
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_workload, runtime_with_config

CONFIG = """
[queues.narrow]
concurrency = 2

[task_types.nap]
adapter = "python"
queue = "narrow"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

[task_types.laned]
adapter = "python"
lane = "agent:1"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:sleep" }

[task_types.fail]
adapter = "python"
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:fail" }
retry = { max_attempts = 2, backoff_initial = "100ms", jitter = 0.0 }
"""
WIDER = CONFIG.replace("concurrency = 2", "concurrency = 8")


@pytest.fixture(scope="module")
def ledger_module_env(database_url: str) -> Iterator[None]:
    """One schema for the module's tests (the workload runs once), dropped afterwards."""
    schema = f"test_{uuid4().hex[:16]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEDGER_DATABASE_URL", database_url)
        patch.setenv("LEDGER_SCHEMA", schema)
        patch.delenv("LEDGER_CONFIG", raising=False)
        yield
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, ledger_module_env: None) -> Any:
    """The workload, run once for the module's tests: (runtime, config path)."""
    tmp = tmp_path_factory.mktemp("simulate")
    runtime = runtime_with_config(tmp, CONFIG)
    run_workload(runtime, workload())
    yield runtime, tmp / "ledger.toml"
    runtime.close()


def workload() -> list[TaskRequest]:
    """Eight naps in a queue of two, four tasks in one lane, two failing with a retry."""
    return (
        [TaskRequest("nap", {"seconds": 0.2}) for _ in range(8)]
        + [TaskRequest("laned", {"seconds": 0.1}) for _ in range(4)]
        + [TaskRequest("fail", {}) for _ in range(2)]
    )


def report_of(runtime: Runtime, text: str, **settings: int) -> dict[str, Any]:
    request = SimulationRequest(
        registry=parse_config(text, "test").registry,
        registry_text_sha256=text_sha256(text),
        registry_source="test",
        settings=check_settings(settings.get("workers", 1), settings.get("concurrency", 10), 0),
    )
    return simulate(runtime.store, request, baseline=runtime.settings.config.registry).data


def test_the_registry_it_ran_under_reproduces_what_happened(ran: Any) -> None:
    runtime, _ = ran
    data = report_of(runtime, CONFIG)
    assert data["tasks"] == 14
    assert data["outcomes"]["simulated"] == data["outcomes"]["recorded"]
    assert data["outcomes"]["simulated"] == {"failed": 2, "succeeded": 12}
    assert data["outcomes"]["retries"] == {"simulated": 2, "recorded": 2}
    fidelity = data["fidelity"]
    assert fidelity["tasks"] == 14
    assert fidelity["start_order_spearman"] >= 0.8, fidelity
    # Run times are known; the real wake-up and hop are calibrated from the window itself.
    assert fidelity["wait_error_mean_ms"] < 150, fidelity
    narrow = data["waits_by_queue"]["narrow"]
    assert narrow["simulated"]["tasks"] == narrow["recorded"]["tasks"] == 8
    assert narrow["simulated"]["p99_ms"] >= 550  # four waves of two 0.2 s naps


def test_a_wider_queue_would_have_cut_the_waits(ran: Any) -> None:
    runtime, _ = ran
    before = report_of(runtime, CONFIG)["waits_by_queue"]["narrow"]["simulated"]
    after = report_of(runtime, WIDER)["waits_by_queue"]["narrow"]["simulated"]
    assert after["p99_ms"] < before["p99_ms"] / 2
    lanes = report_of(runtime, CONFIG)["busiest_lanes"]
    assert lanes[0]["lane"] == "agent:1" and lanes[0]["tasks"] == 4


def test_a_type_the_new_registry_drops_is_reported_refused(ran: Any) -> None:
    runtime, _ = ran
    without_fail = CONFIG.split("[task_types.fail]")[0]
    data = report_of(runtime, without_fail)
    assert data["outcomes"]["simulated"]["refused"] == 2
    assert data["outcomes"]["why"] == {"refused: task type not in the registry": 2}


def test_the_cli_prints_the_same_report_twice_and_writes_nothing(
    ran: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, config = ran
    monkeypatch.setenv("LEDGER_CONFIG", str(config))
    new = tmp_path / "new.toml"
    new.write_text(WIDER)
    head = runtime.store.head_position()
    outputs = []
    for _ in range(2):
        assert main(["simulate", "--registry", str(new), "--json", "--concurrency", "4"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0])
    assert data["inputs"]["concurrency"] == 4 and data["tasks"] == 14
    assert runtime.store.head_position() == head  # read only
    assert main(["simulate", "--registry", str(new)]) == 0
    text = capsys.readouterr().out
    assert "waits by queue" in text and "fidelity" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--workers", "0"], "workers must be between"),
        (["--concurrency", "-1"], "concurrency must be between"),
        (["--since", "yesterday"], "--since"),
        (["--since", "1h", "--until", "2h"], "until must be after since"),
    ],
)
def test_bad_options_are_refused_in_one_line(
    ran: Any,
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, config = ran
    monkeypatch.setenv("LEDGER_CONFIG", str(config))
    assert main(["simulate", "--registry", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err


def test_a_registry_file_that_is_missing_or_wrong_is_refused(
    ran: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = ran
    monkeypatch.setenv("LEDGER_CONFIG", str(config))
    assert main(["simulate", "--registry", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("[queues.x]\nconcurrency = 'many'\n")
    assert main(["simulate", "--registry", str(broken)]) == 2
    assert "broken.toml" in capsys.readouterr().err


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidQuery):
        check_settings(1, 10, -1)
