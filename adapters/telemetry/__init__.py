"""Traces: the W3C trace context at the ways in and on to the attempts, and the
OpenTelemetry spans exported over OTLP when configured (``docs/deployment.md``, "Traces")."""
