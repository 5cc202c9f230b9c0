"""The HTTP API of the ledger (aiohttp, JSON under ``/v1``): ``build_app`` and ``serve_http``."""
