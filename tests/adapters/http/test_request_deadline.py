"""The request deadline (``adapters/http/deadline.py``) bounds the wait for a database
connection before a request's write, not the request itself: a ``?wait`` enqueue and an
event stream go on past it. And ``[http] request_deadline`` in the configuration file."""

from __future__ import annotations

import textwrap

import pytest

from execution_ledger.adapters.config_file import ConfigFileError, parse_config
from execution_ledger.adapters.http.limits import HttpLimits
from execution_ledger.adapters.runtime import Runtime
from execution_ledger.domain.submission import TaskRequest
from tests.adapters.http.live_server import LiveServer

DEADLINE = 0.5  # seconds: shorter than what each test waits for
SOURCE = "ledger.toml"


def test_a_waiting_enqueue_answers_with_its_result_after_the_deadline(runtime: Runtime) -> None:
    limits = HttpLimits(request_deadline_seconds=DEADLINE)
    with LiveServer(runtime, limits=limits, worker=True) as live, live.client() as client:
        response = client.post(
            "/v1/tasks", params={"wait": 20}, json={"type": "sleep", "args": {"seconds": 1.5}}
        )
    assert response.status_code == 200
    assert response.json()["state"] == "succeeded"


def test_an_event_stream_goes_on_past_the_deadline(runtime: Runtime) -> None:
    limits = HttpLimits(request_deadline_seconds=DEADLINE, stream_keepalive_seconds=0.2)
    with (
        LiveServer(runtime, limits=limits) as live,
        live.client() as client,
        client.stream("GET", "/v1/events/stream") as stream,
    ):
        assert stream.status_code == 200
        keepalives = 0
        lines = stream.iter_lines()
        for line in lines:  # at least 4 keep-alives: more than the deadline has passed
            keepalives += line == ": keepalive"
            if keepalives == 4:
                break
        task = runtime.ledger.enqueue(TaskRequest("echo", {}))
        data = next(line for line in lines if line.startswith("data:"))
    assert str(task.id) in data


def test_the_request_deadline_is_read_from_the_http_table() -> None:
    text = textwrap.dedent(
        """
        [http]
        request_deadline = "2500ms"
        """
    )
    assert parse_config(text, SOURCE).http_limits == {"request_deadline_seconds": 2.5}


@pytest.mark.parametrize(
    ("value", "reason"),
    [('"soon"', "cannot read duration 'soon'"), ("0", "must be positive"), ("-1", "must be positive")],
)
def test_a_bad_request_deadline_reports_its_line(value: str, reason: str) -> None:
    with pytest.raises(ConfigFileError) as refused:
        parse_config(f'[ledger]\nschema = "x"\n\n[http]\nrequest_deadline = {value}\n', SOURCE)
    assert refused.value.line == 5
    assert reason in str(refused.value)

