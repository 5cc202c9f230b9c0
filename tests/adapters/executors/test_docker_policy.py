"""Loosening the docker sandbox (root, a writable root filesystem, a network, an engine that
is not a local socket) needs the deployment's leave in ``[adapters.docker]``; no task type
or ad-hoc task can give it. Refusals need no engine: they come from the settings check,
before anything is contacted. Allowed settings run on a real engine when one can be had."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution_ledger.adapters.config_file import ConfigFileError, load_config
from execution_ledger.adapters.executors.docker import DockerExecutor
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.errors import ConfigError, InvalidSubmission
from execution_ledger.domain.execution import Failure, Success
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.executors.docker_support import IMAGE, NoEngine, find_engine
from tests.conftest import write_config

METADATA_ENGINE = "tcp://169.254.169.254:2375"


@pytest.mark.parametrize(
    ("settings", "where", "allow"),
    [
        ({"user": "0"}, "user", "allow_root = true"),
        ({"user": "root"}, "user", "allow_root = true"),
        ({"user": "0:0"}, "user", "allow_root = true"),
        ({"user": "root:staff"}, "user", "allow_root = true"),
        ({"user": "000:65534"}, "user", "allow_root = true"),
        ({"read_only": False}, "read_only", "allow_writable_root = true"),
        ({"network": "host"}, "network", "allow_network = true"),
        ({"network": "bridge"}, "network", "allow_network = true"),
        ({"docker_host": METADATA_ENGINE}, "docker_host", "allowed_docker_hosts = ["),
        ({"docker_host": "ssh://admin@10.0.0.5"}, "docker_host", "allowed_docker_hosts = ["),
        ({"docker_host": "https://10.0.0.5:2376"}, "docker_host", "allowed_docker_hosts = ["),
    ],
)
def test_loosening_the_sandbox_without_the_deployments_allow_is_refused(
    settings: dict[str, Any], where: str, allow: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        DockerExecutor().check_settings({"image": IMAGE, **settings})

    assert refused.value.where == (where,)
    assert allow in refused.value.reason and "[adapters.docker]" in refused.value.reason


@pytest.mark.parametrize(
    "allow",
    [
        {"allow_root": True},
        {"allow_writable_root": True},
        {"allow_network": True},
        {"allowed_docker_hosts": [METADATA_ENGINE]},
    ],
)
def test_a_task_cannot_give_itself_an_allow(allow: dict[str, Any]) -> None:
    key = next(iter(allow))

    with pytest.raises(ConfigError) as refused:
        DockerExecutor().check_settings({"image": IMAGE, **allow})

    assert refused.value.where == (key,)
    assert "[adapters.docker]" in refused.value.reason


@pytest.mark.asyncio
async def test_a_run_naming_the_metadata_address_as_engine_is_refused_as_bad_settings(
    execution,
) -> None:
    run = execution({"image": IMAGE, "command": ["true"], "docker_host": METADATA_ENGINE})

    result = await DockerExecutor().run(run)

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("BadSettings", False)
    assert result.message.startswith(f"docker_host: docker_host {METADATA_ENGINE!r} is not")


@pytest.mark.parametrize(
    ("defaults", "settings"),
    [
        ({"allow_root": True}, {"user": "root:root"}),
        ({"allow_writable_root": True}, {"read_only": False}),
        ({"allow_network": True}, {"network": "bridge"}),
        ({"allowed_docker_hosts": ["tcp://10.0.0.5:2376"]}, {"docker_host": "tcp://10.0.0.5:2376"}),
        ({"docker_host": "tcp://10.0.0.5:2376"}, {}),
        ({}, {"docker_host": "unix:///run/user/1000/docker.sock"}),
    ],
)
def test_what_the_deployment_allows_is_accepted_without_an_engine(
    defaults: dict[str, Any], settings: dict[str, Any]
) -> None:
    DockerExecutor(defaults).check_settings({"image": IMAGE, **settings})


def test_a_bad_network_name_is_still_refused_when_networks_are_allowed() -> None:
    with pytest.raises(ConfigError) as refused:
        DockerExecutor({"allow_network": True}).check_settings(
            {"image": IMAGE, "network": "container:other"}
        )

    assert refused.value.where == ("network",)


FILE = """\
[adapters.docker]
{defaults}

[task_types.job]
adapter = "docker"
settings = {{ image = "ledger-busybox:latest", {settings} }}
"""


@pytest.mark.parametrize(
    ("defaults", "settings", "line", "reason"),
    [
        ("", 'user = "root"', 6, "allow_root = true"),
        ("", "allow_root = true", 6, "[adapters.docker]"),
        ("", f'docker_host = "{METADATA_ENGINE}"', 6, "allowed_docker_hosts"),
        ('user = "0"', "cpus = 1", 2, "allow_root = true"),
        ("allowed_docker_hosts = 5", "cpus = 1", 2, "must be a list of addresses"),
    ],
)
def test_the_file_is_refused_at_the_line_of_the_loosened_setting(
    tmp_path: Path, defaults: str, settings: str, line: int, reason: str
) -> None:
    config = write_config(tmp_path, FILE.format(defaults=defaults, settings=settings))

    with pytest.raises(ConfigFileError) as refused:
        load_config(config)

    assert refused.value.line == line
    assert reason in refused.value.reason


def test_the_file_loads_when_its_adapters_docker_table_allows(tmp_path: Path) -> None:
    defaults = "allow_root = true\nallow_network = true\nallowed_docker_hosts = ['tcp://10.0.0.5:2376']"
    settings = 'user = "0", network = "host", docker_host = "tcp://10.0.0.5:2376"'
    config = write_config(tmp_path, FILE.format(defaults=defaults, settings=settings))

    loaded = load_config(config)

    assert loaded.adapter_defaults["docker"]["allow_root"] is True


def test_an_ad_hoc_docker_task_naming_the_metadata_engine_is_refused_and_nothing_stored(
    runtime: Runtime,
) -> None:
    before = runtime.store.head_position()
    request = TaskRequest(
        "one-off",
        adapter="docker",
        adapter_settings={"image": IMAGE, "command": ["true"], "docker_host": METADATA_ENGINE},
    )

    with pytest.raises(InvalidSubmission, match=r"adapter_settings\.docker_host: docker_host"):
        runtime.ledger.enqueue(request)

    assert runtime.store.head_position() == before


def test_an_ad_hoc_docker_task_cannot_allow_itself_root(runtime: Runtime) -> None:
    before = runtime.store.head_position()
    request = TaskRequest(
        "one-off",
        adapter="docker",
        adapter_settings={"image": IMAGE, "user": "0", "allow_root": True},
    )

    with pytest.raises(InvalidSubmission, match=r"adapter_settings\.allow_root: can only be set"):
        runtime.ledger.enqueue(request)

    assert runtime.store.head_position() == before


@pytest.fixture(scope="module")
def engine_host() -> Iterator[str]:
    try:
        yield find_engine()
    except NoEngine as exc:
        pytest.skip(f"no Docker engine: {exc}")


async def run_allowed(
    engine_host: str, execution, allow: dict[str, Any], settings: dict[str, Any]
) -> Success:
    executor = DockerExecutor({"image": IMAGE, "docker_host": engine_host, **allow})
    result = await executor.run(execution(settings))
    assert isinstance(result, Success), result
    return result


@pytest.mark.asyncio
async def test_with_allow_root_the_command_runs_as_root(engine_host: str, execution) -> None:
    result = await run_allowed(
        engine_host, execution, {"allow_root": True}, {"command": ["id", "-u"], "user": "0:0"}
    )

    assert result.result["stdout"] == "0\n"


@pytest.mark.asyncio
async def test_with_allow_writable_root_the_root_filesystem_takes_writes(
    engine_host: str, execution
) -> None:
    settings = {
        "command": ["sh", "-c", "echo kept > /written && cat /written"],
        "read_only": False,
        "user": "0",
    }
    allow = {"allow_writable_root": True, "allow_root": True}

    result = await run_allowed(engine_host, execution, allow, settings)

    assert result.result["stdout"] == "kept\n"


@pytest.mark.asyncio
async def test_with_allow_network_the_container_joins_the_network_asked_for(
    engine_host: str, execution
) -> None:
    settings = {"command": ["hostname"], "network": "host"}

    result = await run_allowed(engine_host, execution, {"allow_network": True}, settings)

    assert result.result["stdout"] == f"{socket.gethostname()}\n"
