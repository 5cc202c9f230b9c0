"""A Docker engine for the docker executor's tests: the one at DOCKER_HOST, else one started.

``find_engine()`` returns the address of an engine that answers and has the test image
(``.ci/start-docker`` builds it), starting a private engine with that script when none
answers. It raises ``NoEngine`` with the reason when no engine can be had.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

IMAGE = "ledger-busybox:latest"
START_SCRIPT = Path(__file__).resolve().parents[4] / ".ci" / "start-docker"
START_TIMEOUT_SECONDS = 240  # an apt-get install of docker.io included


class NoEngine(Exception):
    """No Docker engine answers here and none could be started."""


def find_engine() -> str:
    """The DOCKER_HOST of a running engine that holds ``IMAGE``."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if _answers(host) and _has_image(host):
        return host
    if not START_SCRIPT.exists():
        raise NoEngine(f"{host} does not answer and {START_SCRIPT} is missing")
    try:
        started = subprocess.run(
            [str(START_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NoEngine(f"{START_SCRIPT.name} took more than {exc.timeout:g}s") from exc
    exports = [
        line.removeprefix("export DOCKER_HOST=")
        for line in started.stdout.splitlines()
        if line.startswith("export DOCKER_HOST=")
    ]
    if started.returncode != 0 or not exports:
        lines = started.stderr.strip().splitlines() or [f"exit code {started.returncode}"]
        raise NoEngine(f"{START_SCRIPT.name}: {lines[-1].removeprefix('start-docker: ')}")
    if not _answers(exports[-1]):
        raise NoEngine(f"{START_SCRIPT.name} printed {exports[-1]}, which does not answer")
    return exports[-1]


def client_of(host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=host, version="auto", timeout=30)


def _answers(host: str) -> bool:
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        return False  # (the SDK would leave a socket unclosed trying)
    try:
        client = client_of(host)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    finally:
        client.close()


def _has_image(host: str) -> bool:
    client = client_of(host)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True
