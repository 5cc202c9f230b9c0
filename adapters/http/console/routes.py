"""Serving the console: ``GET /`` (the page) and ``GET /console/{file}`` (its modules, CSS
and vendored files), from the package's ``static/`` folder, with headers that keep a
browser strict: a Content-Security-Policy allowing only this origin's scripts, styles and
API (no inline script, no framing), ``nosniff``, ``X-Frame-Options: DENY``, no referrer.

The files are public (no token): the console asks for one and sends it with each API call.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from execution_ledger.adapters.http.errors import HttpError

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# The page is fetched on every visit (it names the modules); modules are revalidated hourly.
PAGE_CACHE = "no-cache"
FILE_CACHE = "public, max-age=3600"


def _files() -> dict[str, Path]:
    """Every servable file by its path under ``static/`` (read once: nothing else is served)."""
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in STATIC.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


FILES = _files()


def _file_response(path: Path, cache: str) -> web.Response:
    media = MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    headers["Content-Type"] = media or "application/octet-stream"
    return web.Response(body=path.read_bytes(), headers=headers)


async def page(request: web.Request) -> web.Response:
    return _file_response(FILES["index.html"], PAGE_CACHE)


async def static_file(request: web.Request) -> web.Response:
    path = FILES.get(request.match_info["file"])
    if path is None:
        raise HttpError(404, "not_found", "no such console file")
    return _file_response(path, FILE_CACHE)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", page, name="console.page"),
        web.get("/console/{file:.+}", static_file, name="console.file"),
    ]
