"""A template inside code an interpreter runs (``sh -c "echo {args[x]}"``) is refused at load,
with the file's line and the safe form; the safe form passes the same value as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from execution_ledger.adapters.cli.main import main
from execution_ledger.adapters.config_file import ConfigFileError, load_config
from execution_ledger.adapters.executors.docker import DockerExecutor
from execution_ledger.adapters.executors.shell import ShellExecutor
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import ConfigError, InvalidSubmission
from execution_ledger.domain.execution import Success
from execution_ledger.domain.submission import TaskRequest
from tests.conftest import write_config

ATTACK = "a; id > proof"
SAFE_FORM = '["/bin/sh", "-c", "echo \\"$1\\"", "_", "{args[x]}"]'

REGISTRY = """\
[task_types.greet]
adapter = "python"
settings = {{ callable = "execution_ledger.adapters.executors.builtin_tasks:echo" }}

[task_types.T]
adapter = "shell"
settings = {{ argv = {argv} }}
"""


def test_a_template_inside_sh_c_is_refused_at_load_with_file_line_and_the_safe_form(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, REGISTRY.format(argv='["/bin/sh", "-c", "echo {args[x]}"]'))

    with pytest.raises(ConfigFileError) as refused:
        load_config(config)

    assert refused.value.line == 7
    assert str(refused.value).startswith(f"{config}:7: ")
    assert refused.value.where == ("task_types", "T", "settings", "argv", "2")
    assert SAFE_FORM in str(refused.value)


def test_the_cli_refuses_the_file_before_enqueueing_anything(
    ledger_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, REGISTRY.format(argv='["/bin/sh", "-c", "echo {args[x]}"]'))

    code = main(["--config", str(config), "enqueue", "T", "-a", f"x={ATTACK}"])

    assert code == 2
    assert f"{config}:7: a template in the code or options of /bin/sh" in capsys.readouterr().err
    assert not (tmp_path / "proof").exists()


@pytest.mark.asyncio
async def test_the_safe_form_passes_the_attack_as_data_and_creates_no_file(
    tmp_path: Path, execution
) -> None:
    config = write_config(tmp_path, REGISTRY.format(argv=SAFE_FORM))
    settings = dict(load_config(config).registry.task_types["T"].settings)

    result = await ShellExecutor().run(
        execution({**settings, "cwd": str(tmp_path)}, {"x": ATTACK})
    )

    assert isinstance(result, Success)
    assert result.result["stdout"] == f"{ATTACK}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ledger.toml"]


@pytest.mark.parametrize(
    ("argv", "index"),
    [
        (["sh", "-c", "echo {args[x]}"], 2),
        (["/bin/bash", "-c", "echo {args[x]}"], 2),
        (["dash", "-ec", "echo {args[x]}"], 2),
        (["zsh", "-lc", "echo {args[x]}"], 2),
        (["ksh", "-o", "pipefail", "-c", "echo {args[x]}"], 4),
        (["/usr/bin/env", "bash", "-c", "echo {args[x]}"], 3),
        (["env", "-i", "LANG=C", "sh", "-c", "echo {args[x]}"], 5),
        (["busybox", "sh", "-c", "echo {args[x]}"], 3),
        (["timeout", "5", "bash", "-c", "echo {args[x]}"], 4),
        (["sh", "-c", "--", "echo {args[x]}"], 3),
        (["sh", "{args[script]}"], 1),
        (["python3", "-c", "print({args[x]})"], 2),
        (["python3.11", "-c", "print('{args[x]}')"], 2),
        (["python", "-cprint({args[x]})"], 1),
        (["python3", "{args[x]}"], 1),
        (["perl", "-e", "print {args[x]}"], 2),
        (["perl", "-E", "say {args[x]}"], 2),
        (["perl", "-ne", "print", "{args[x]}"], 3),  # <> opens "cmd|" as a pipe
        (["ruby", "-e", "puts {args[x]}"], 2),
        (["node", "-e", "console.log({args[x]})"], 2),
        (["nodejs", "--eval", "console.log({args[x]})"], 2),
        (["node", "--eval=console.log({args[x]})"], 1),
        (["lua", "-e", "print({args[x]})"], 2),
        (["lua5.4", "-e", "print(arg[1])", "{args[x]}"], 3),  # lua runs that as a script
        (["php", "-r", "echo {args[x]};"], 2),
        (["awk", "BEGIN {{ print {args[x]} }}"], 1),
        (["gawk", "-v", "x={args[x]}", "BEGIN {{ print x }}"], 2),
        (["sed", "s/a/{args[x]}/"], 1),
        (["env", "{args[command]}", "-c", "id"], 1),
        (["env", "-S", "sh -c 'echo $1' _", "{args[x]}"], 1),
    ],
)
def test_templates_in_an_interpreters_code_or_options_are_refused(
    argv: list[str], index: int
) -> None:
    with pytest.raises(ConfigError) as refused:
        ShellExecutor().check_settings({"argv": argv})

    assert refused.value.where == ("argv", str(index))


@pytest.mark.parametrize(
    "argv",
    [
        ["/bin/sh", "-c", 'echo "$1"', "_", "{args[x]}"],
        ["/usr/bin/env", "bash", "-eo", "pipefail", "-c", 'echo "$1"', "_", "{args[x]}"],
        ["bash", "/opt/jobs/run.sh", "{args[x]}"],
        ["python3", "-c", "import sys; print(sys.argv[1])", "{args[x]}"],
        ["python3", "-u", "/opt/jobs/run.py", "--name", "{args[x]}"],
        ["python3", "-m", "json.tool", "{args[path]}"],
        ["perl", "-e", "print $ARGV[0]", "{args[x]}"],
        ["ruby", "-e", "puts ARGV[0]", "{args[x]}"],
        ["node", "-e", "console.log(process.argv[1])", "{args[x]}"],
        ["php", "-r", "echo $argv[1];", "{args[x]}"],
        ["awk", "BEGIN {{ print ARGV[1] }}", "{args[x]}"],
        ["sed", "-n", "1p", "{args[path]}"],
        ["/bin/echo", "{args[x]}"],
        ["wc", "-c", "{args[path]}"],
    ],
)
def test_templates_after_the_code_are_data_and_accepted(argv: list[str]) -> None:
    ShellExecutor().check_settings({"argv": argv})


def test_a_docker_command_with_a_template_inside_sh_c_is_refused_without_an_engine() -> None:
    with pytest.raises(ConfigError) as refused:
        DockerExecutor().check_settings({"image": "x", "command": ["sh", "-c", "echo {args.x}"]})

    assert refused.value.where == ("command", "2")


def test_an_ad_hoc_shell_task_with_a_template_inside_sh_c_is_refused_and_nothing_stored(
    runtime: Runtime,
) -> None:
    before = runtime.store.head_position()
    request = TaskRequest(
        "one-off",
        {"x": ATTACK},
        adapter="shell",
        adapter_settings={"argv": ["/bin/sh", "-c", "echo {args[x]}"]},
    )

    with pytest.raises(InvalidSubmission, match=r"adapter_settings\.argv\.2: a template in the code"):
        runtime.ledger.enqueue(request)

    assert runtime.store.head_position() == before
