"""``ledger signal ID NAME [--data JSON]`` on a real PostgreSQL, and ``ledger history``
showing the workflow events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from execution_ledger.adapters.cli.main import main

CONFIG = """
[task_types.gate]
adapter = "python"
signals = ["approval"]
settings = { callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("ledger_env")
def test_signal_delivers_its_data_and_history_shows_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(CONFIG)
    code, out, _ = run(capsys, "--config", str(config), "enqueue", "gate", "-a", "x=1")
    assert code == 0 and "waiting" in out
    task_id = out.split()[0]

    code, _, err = run(
        capsys, "--config", str(config), "signal", task_id, "approval", "--data", "{"
    )
    assert code == 2 and "--data is not valid JSON" in err
    code, _, err = run(capsys, "--config", str(config), "signal", task_id, "deploy")
    assert code == 2 and "does not wait for the signal 'deploy'" in err

    code, out, _ = run(
        capsys, "--config", str(config), "signal", task_id, "approval", "--data", '{"by": "me"}'
    )
    assert code == 0 and "ready" in out
    code, out, _ = run(capsys, "--config", str(config), "history", task_id, "--json")
    events = json.loads(out)["events"]
    assert [e["type"] for e in events] == ["TaskEnqueued", "TaskSignalled"]
    assert events[1]["data"]["name"] == "approval"
    assert events[1]["data"]["data"] == {"by": "me"}


@pytest.mark.usefixtures("ledger_env")
def test_replay_writes_the_workflow_steps_and_refuses_what_does_not_apply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(CONFIG)
    code, out, _ = run(capsys, "--config", str(config), "enqueue", "gate", "-a", "x=1")
    task_id = out.split()[0]
    run(capsys, "--config", str(config), "signal", task_id, "approval")
    steps = tmp_path / "steps.jsonl"

    code, out, _ = run(
        capsys, "--config", str(config), "replay", "--kind", "workflow", "--out", str(steps)
    )

    assert code == 0 and "2 workflow steps" in " ".join(out.split())
    rows = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [row["step"] for row in rows] == ["awaiting_signals", "signalled"]
    assert rows[1]["signal"] == "approval"
    for wrong, why in (
        (["--out", str(tmp_path / "steps.csv")], "JSONL only"),
        (["--out", str(steps), "--until", "2026-11-25T15:00:00Z"], "a log position"),
        (["--out", str(steps), "--type", "gate"], "apply to attempts"),
    ):
        code, _, err = run(capsys, "--config", str(config), "replay", "--kind", "workflow", *wrong)
        assert code == 2 and why in err
