"""Where traces go: the ``[telemetry]`` table is checked at load (a bad key names its file
line), and the standard OpenTelemetry variables turn export on, redirect or turn it off."""

from __future__ import annotations

import json
import tomllib

import pytest

from execution_ledger.adapters.config_file import DEFAULT_REGISTRY, ConfigFileError, parse_config
from execution_ledger.adapters.telemetry.context import start_telemetry
from execution_ledger.adapters.telemetry.settings import TelemetrySettings, telemetry_settings
from execution_ledger.domain.registry_document import registry_document


def loaded(table: str):  # type: ignore[no-untyped-def]
    return parse_config(DEFAULT_REGISTRY.read_text() + "\n[telemetry]\n" + table, "ledger.toml")


def test_the_table_names_the_endpoint_service_headers_and_sample_ratio() -> None:
    config = loaded(
        'endpoint = "https://otel.example.com:4318/"\nservice_name = "ledger-eu"\n'
        'sample_ratio = 0.25\nheaders = { "x-api-key" = "k" }\n'
    )
    assert telemetry_settings(config.telemetry, {}) == TelemetrySettings(
        traces_url="https://otel.example.com:4318/v1/traces",
        service_name="ledger-eu",
        headers={"x-api-key": "k"},
        sample_ratio=0.25,
    )


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('endpont = "http://x"', "unknown key 'endpont'"),
        ('endpoint = "collector:4318"', "expected an http:// or https:// URL"),
        ("endpoint = 4318", "expected an http:// or https:// URL"),
        ("sample_ratio = 2", "expected a number from 0 to 1"),
        ('enabled = "yes"', "expected true or false"),
        ('headers = { "x-key" = 1 }', "expected a table of header names"),
        ('service_name = ""', "expected a name of 1 to 200 characters"),
        ('protocol = "http"', "expected http/protobuf or grpc"),
        ('protocol = "http/json"', "JSON bodies is not supported"),
    ],
)
def test_a_bad_telemetry_key_is_refused_with_its_line(table: str, reason: str) -> None:
    with pytest.raises(ConfigFileError) as refused:
        loaded(table)
    assert reason in refused.value.reason
    assert refused.value.line == len(DEFAULT_REGISTRY.read_text().splitlines()) + 3


def test_no_endpoint_anywhere_means_off() -> None:
    assert telemetry_settings({}, {}) is None
    assert telemetry_settings({"service_name": "x"}, {}) is None
    assert not start_telemetry(loaded('service_name = "x"\n'), environ={})


def test_the_environment_turns_export_on_and_wins_over_the_file() -> None:
    table = {"endpoint": "http://file:4318", "service_name": "from-file"}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_SERVICE_NAME": "from-env"}
    on = telemetry_settings(table, env)
    assert on is not None and (on.traces_url, on.service_name) == (
        "http://env:4318/v1/traces",
        "from-env",
    )
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:4318/custom/traces"}
    on = telemetry_settings({}, traces_only)
    assert on is not None and on.traces_url == "http://env:4318/custom/traces"


def test_disabled_in_the_file_or_by_otel_sdk_disabled_is_off_whatever_else_is_set() -> None:
    table = {"endpoint": "http://file:4318"}
    assert telemetry_settings(table | {"enabled": False}, {}) is None
    assert telemetry_settings(table, {"OTEL_SDK_DISABLED": "true"}) is None
    assert (
        telemetry_settings(
            {}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:1", "OTEL_SDK_DISABLED": "TRUE"}
        )
        is None
    )


def test_a_bad_endpoint_in_the_environment_is_a_clear_error() -> None:
    from execution_ledger.domain.errors import ConfigError

    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        telemetry_settings({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


def test_grpc_is_chosen_by_the_standard_variables_or_the_table_and_keeps_the_address() -> None:
    table = {"endpoint": "http://collector:4317/"}
    on = telemetry_settings(table, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert on is not None and (on.protocol, on.traces_url) == ("grpc", "http://collector:4317/")
    # The traces' own variable wins over the general one, the environment over the file.
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    on = telemetry_settings(table | {"protocol": "grpc"}, env)
    assert on is not None and (on.protocol, on.traces_url) == (
        "http/protobuf",
        "http://collector:4317/v1/traces",
    )
    on = telemetry_settings(
        loaded('endpoint = "https://c:4317"\nprotocol = "grpc"\n').telemetry, {}
    )
    assert on is not None and (on.protocol, on.traces_url) == ("grpc", "https://c:4317")
    assert telemetry_settings(table, {}) == TelemetrySettings("http://collector:4317/v1/traces")


@pytest.mark.parametrize("value", ["http/json", "GRPC", "thrift"])
def test_a_protocol_the_exporter_does_not_speak_is_a_clear_error(value: str) -> None:
    from execution_ledger.domain.errors import ConfigError

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": value}
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf"):
        telemetry_settings({}, env)


def test_the_telemetry_table_is_the_nodes_own_never_recorded_with_the_registry() -> None:
    text = DEFAULT_REGISTRY.read_text() + '\n[telemetry]\nheaders = { "x-api-key" = "secret" }\n'
    document = registry_document(tomllib.loads(text))
    assert "telemetry" not in document and "task_types" in document
    assert "secret" not in json.dumps(document)
