"""The HTTP client against the real API: the HTTP tests' live servers (a fresh schema each,
with a worker node or principals where a test needs them)."""

from tests.adapters.http.conftest import secured_runtime, secured_server, server, worker_server

__all__ = ["secured_runtime", "secured_server", "server", "worker_server"]
