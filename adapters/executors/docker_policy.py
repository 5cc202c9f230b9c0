"""What a docker task may loosen, and only with the deployment's leave.

The docker executor's sandbox (no network, read-only root filesystem, a non-root user, the
local engine) is loosened only by keys of the configuration file's ``[adapters.docker]``
table, which no task type or ad-hoc task can set (``DockerExecutor.deployment_keys``):

- ``allow_root = true``: ``user`` may be root (``"0"``, ``"root"``, ``"0:0"``, ``"root:…"``);
- ``allow_writable_root = true``: ``read_only = false``;
- ``allow_network = true``: ``network`` other than ``"none"``;
- ``allowed_docker_hosts = ["tcp://10.0.0.5:2376", ...]``: ``docker_host`` addresses other
  than ``unix://`` sockets (the table's own ``docker_host`` counts as allowed).

Each refusal names the setting and the key that would allow it. Nothing here contacts the
engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from execution_ledger.adapters.executors.base import boolean, string
from execution_ledger.domain.errors import ConfigError

DEPLOYMENT_KEYS = frozenset(
    {"allow_root", "allow_writable_root", "allow_network", "allowed_docker_hosts"}
)
DEFAULT_USER = "65534:65534"  # nobody
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
HOST_SCHEMES = ("unix://", "tcp://", "http://", "https://", "ssh://")


def _needs(setting: str, allow: str) -> str:
    return f"{setting}: needs {allow} in the configuration file's [adapters.docker]"


def user(settings: Mapping[str, Any]) -> str:
    """``user``, refused when it is root and ``allow_root`` is not set."""
    value = string(settings, "user", DEFAULT_USER)
    if not USER.fullmatch(value):
        raise ConfigError(f"must be 'user' or 'user:group', got {value!r}", ("user",))
    name = value.split(":", 1)[0]
    is_root = name == "root" or (name.isdigit() and int(name) == 0)
    if is_root and not boolean(settings, "allow_root", False):
        raise ConfigError(
            _needs(f"user {value!r} runs the container's command as root", "allow_root = true"),
            ("user",),
        )
    return value


def read_only(settings: Mapping[str, Any]) -> bool:
    """``read_only``, refused when false and ``allow_writable_root`` is not set."""
    value = boolean(settings, "read_only", True)
    if not value and not boolean(settings, "allow_writable_root", False):
        raise ConfigError(
            _needs(
                "read_only = false gives a writable root filesystem", "allow_writable_root = true"
            ),
            ("read_only",),
        )
    return value


def network(settings: Mapping[str, Any]) -> str:
    """``network``, refused when not ``"none"`` and ``allow_network`` is not set."""
    value = string(settings, "network", "none")
    if value == "none":
        return value
    if not boolean(settings, "allow_network", False):
        raise ConfigError(
            _needs(f"network {value!r} (the default is 'none')", "allow_network = true"),
            ("network",),
        )
    if not NETWORK_NAME.fullmatch(value):
        raise ConfigError(f"must be 'none', 'host' or a network name, got {value!r}", ("network",))
    return value


def docker_host(settings: Mapping[str, Any], deployment_host: Any) -> str | None:
    """``docker_host``: a ``unix://`` socket, the deployment's own, or an allowed address."""
    value = settings.get("docker_host")
    allowed = _allowed_hosts(settings)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(HOST_SCHEMES):
        raise ConfigError(
            f"must be an address starting with {', '.join(HOST_SCHEMES)}, got {value!r}",
            ("docker_host",),
        )
    if value.startswith("unix://") or value == deployment_host or value in allowed:
        return value
    raise ConfigError(
        _needs(
            f"docker_host {value!r} is not a unix:// socket",
            f"allowed_docker_hosts = [{value!r}]",
        ),
        ("docker_host",),
    )


def _allowed_hosts(settings: Mapping[str, Any]) -> tuple[str, ...]:
    value = settings.get("allowed_docker_hosts", [])
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.startswith(HOST_SCHEMES) for item in value
    ):
        raise ConfigError(
            f"must be a list of addresses starting with {', '.join(HOST_SCHEMES)}, got {value!r}",
            ("allowed_docker_hosts",),
        )
    return tuple(value)
