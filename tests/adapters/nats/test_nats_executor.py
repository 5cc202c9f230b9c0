"""The ``nats`` executor on a real nats-server: request-reply to a handler, publish to
JetStream with the ack as result, and the failures a task's retry policy sees."""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import uuid4

import pytest

from execution_ledger.adapters.executors.nats import NatsExecutor
from execution_ledger.adapters.nats.ingress import registered
from execution_ledger.adapters.nats.server import free_port
from execution_ledger.domain.errors import ConfigError
from execution_ledger.domain.execution import Execution, Failure, Success
from execution_ledger.domain.timeouts import Timeouts
from tests.adapters.nats.conftest import connected, delete_stream


def execution(
    settings: dict[str, Any],
    args: dict[str, Any] | None = None,
    start_to_close: float = 5.0,
    task_id: Any = None,
) -> Execution:
    return Execution(
        task_id=task_id or uuid4(),
        attempt=1,
        type_name="test",
        args=args or {},
        settings=settings,
        timeouts=Timeouts(start_to_close=start_to_close),
    )


@pytest.mark.asyncio
async def test_request_mode_succeeds_with_the_parsed_reply(nats_url: str, names: str) -> None:
    async with connected(nats_url) as handler:

        async def answer(msg: Any) -> None:
            args = json.loads(msg.data)
            if msg.subject.endswith(".text"):
                await msg.respond(b"plain words")
            else:
                await msg.respond(json.dumps({"seen": args, "subject": msg.subject}).encode())

        await handler.subscribe(f"{names}.svc.*", cb=answer)
        await registered(handler)
        settings = {"subject": f"{names}.svc.{{args.kind}}", "url": nats_url}
        as_json = await NatsExecutor().run(execution(settings, {"kind": "json", "n": 1}))
        as_text = await NatsExecutor().run(execution(settings, {"kind": "text"}))

    assert as_json == Success(
        {"seen": {"kind": "json", "n": 1}, "subject": f"{names}.svc.json"},
        details={"reply_bytes": pytest.approx(60, abs=40)},
    )
    assert isinstance(as_text, Success) and as_text.result == "plain words"


@pytest.mark.asyncio
async def test_no_handler_is_a_retryable_no_responders_failure(nats_url: str, names: str) -> None:
    result = await NatsExecutor().run(execution({"subject": f"{names}.nobody", "url": nats_url}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("NoResponders", True)


@pytest.mark.asyncio
async def test_a_handler_that_does_not_answer_in_time_is_a_retryable_timeout(
    nats_url: str, names: str
) -> None:
    async with connected(nats_url) as handler:
        silent = await handler.subscribe(f"{names}.silent")
        await registered(handler)
        result = await NatsExecutor().run(
            execution(
                {"subject": f"{names}.silent", "url": nats_url, "timeout": 0.3},
                start_to_close=600,
            )
        )
        request = await silent.next_msg(timeout=10)  # it was asked, and never answered

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("Timeout", True)
    waited = re.fullmatch(rf"no reply on {names}\.silent within ([0-9.]+) s", result.message)
    assert waited and float(waited[1]) <= 0.3  # its own timeout (less the connect), not 600 s
    assert json.loads(request.data) == {}


@pytest.mark.asyncio
async def test_a_micro_service_error_header_is_a_service_error(nats_url: str, names: str) -> None:
    async with connected(nats_url) as handler:

        async def refuse(msg: Any) -> None:
            await handler.publish(
                msg.reply,
                b"",
                headers={"Nats-Service-Error": "bad input", "Nats-Service-Error-Code": "400"},
            )

        await handler.subscribe(f"{names}.micro", cb=refuse)
        await registered(handler)
        result = await NatsExecutor().run(execution({"subject": f"{names}.micro", "url": nats_url}))

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ServiceError", False)


@pytest.mark.asyncio
async def test_jetstream_mode_succeeds_on_the_ack_and_a_repeated_attempt_is_not_stored_twice(
    nats_url: str, names: str
) -> None:
    stream = f"{names.upper()}_JOBS"
    settings = {
        "subject": f"{names}.jobs.{{args.kind}}",
        "mode": "jetstream",
        "url": nats_url,
        "stream": stream,
    }
    task_id = uuid4()
    try:
        async with connected(nats_url) as nc:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[f"{names}.jobs.>"], duplicate_window=60)
            first = await NatsExecutor().run(execution(settings, {"kind": "a"}, task_id=task_id))
            repeated = await NatsExecutor().run(execution(settings, {"kind": "a"}, task_id=task_id))
            other = await NatsExecutor().run(execution(settings, {"kind": "b"}))
            stored = await js.get_msg(stream, 1)
            info = await js.stream_info(stream)
    finally:
        await delete_stream(nats_url, stream)

    assert first == Success({"stream": stream, "seq": 1, "duplicate": False})
    assert repeated == Success({"stream": stream, "seq": 1, "duplicate": True})
    assert other == Success({"stream": stream, "seq": 2, "duplicate": False})
    assert json.loads(stored.data) == {"kind": "a"}
    assert stored.headers["Nats-Msg-Id"] == str(task_id)
    assert info.state.messages == 2


@pytest.mark.asyncio
async def test_jetstream_mode_without_a_stream_for_the_subject_is_no_responders(
    nats_url: str, names: str
) -> None:
    result = await NatsExecutor().run(
        execution({"subject": f"{names}.nostream", "mode": "jetstream", "url": nats_url})
    )

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("NoResponders", True)


@pytest.mark.asyncio
async def test_an_argument_cannot_add_subject_tokens_or_wildcards(nats_url: str) -> None:
    executor = NatsExecutor()
    settings = {"subject": "jobs.{args.kind}", "url": nats_url}

    for kind in ("a.b", "*", ">", "a b", ""):
        result = await executor.run(execution(settings, {"kind": kind}))
        assert isinstance(result, Failure)
        assert (result.error_class, result.retryable) == ("BadArguments", False)


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_retryable_connect_error() -> None:
    result = await NatsExecutor().run(
        execution({"subject": "x", "url": f"nats://127.0.0.1:{free_port()}", "timeout": 1})
    )

    assert isinstance(result, Failure)
    assert (result.error_class, result.retryable) == ("ConnectError", True)


@pytest.mark.asyncio
async def test_without_a_url_the_ledger_nats_url_variable_is_used(
    nats_url: str, names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_NATS_URL", raising=False)
    missing = await NatsExecutor().run(execution({"subject": f"{names}.x"}))
    monkeypatch.setenv("LEDGER_NATS_URL", nats_url)
    found = await NatsExecutor().run(execution({"subject": f"{names}.x"}))

    assert isinstance(missing, Failure) and missing.error_class == "NoServer"
    assert isinstance(found, Failure) and found.error_class == "NoResponders"


def test_settings_are_checked_without_connecting() -> None:
    executor = NatsExecutor()
    executor.check_settings({"subject": "a.{args.b}", "url": "nats://127.0.0.1:1"})

    for bad, key in [
        ({}, "subject"),
        ({"subject": "a.*"}, "subject"),
        ({"subject": "a.{kind}"}, "subject"),
        ({"subject": "a", "mode": "fire"}, "mode"),
        ({"subject": "a", "payload": "body"}, "payload"),
        ({"subject": "a", "timeout": 0}, "timeout"),
        ({"subject": "a", "stream": "S"}, "stream"),
        ({"subject": "a", "bogus": 1}, "bogus"),
    ]:
        with pytest.raises(ConfigError) as refused:
            executor.check_settings(bad)
        assert refused.value.where == (key,)
