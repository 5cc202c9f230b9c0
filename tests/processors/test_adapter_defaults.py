"""``[adapters.NAME]`` defaults reach the worker: a task type's settings start from them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from execution_ledger.domain.submission import TaskRequest
from tests.processors.worker_harness import run_nodes_until, runtime_with_config

CONFIG = textwrap.dedent(
    """
    [adapters.shell]
    max_output_bytes = 3

    [task_types.hello]
    adapter = "shell"
    settings = { argv = ["echo", "hello"] }

    [task_types.hello_whole]
    adapter = "shell"
    settings = { argv = ["echo", "hello"], max_output_bytes = 100 }
    """
)


def test_a_worker_runs_shell_tasks_with_the_files_adapter_defaults(
    ledger_env: None, tmp_path: Path
) -> None:
    runtime = runtime_with_config(tmp_path, CONFIG)
    try:
        capped = runtime.ledger.enqueue(TaskRequest("hello"))
        whole = runtime.ledger.enqueue(TaskRequest("hello_whole"))
        run_nodes_until(
            runtime,
            lambda: all(runtime.store.load(t.id).state.is_terminal for t in (capped, whole)),
        )
        assert runtime.store.load(capped.id).result["stdout"] == "hel"
        assert runtime.store.load(whole.id).result["stdout"] == "hello\n"
    finally:
        runtime.close()
