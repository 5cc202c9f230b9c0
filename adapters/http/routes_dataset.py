"""``GET /v1/dataset``: the learning dataset replayed from the log and streamed as JSONL, CSV
or Parquet: the same bytes as ``ledger replay`` for the same bound and filters.

Query: ``format`` (jsonl, the default; csv; parquet), ``until`` and ``since`` (a log position
or an ISO 8601 time with a zone, as for ``ledger replay``), ``type`` (one task type).
``kind=workflow`` streams the workflow steps instead (``workflow_replay.py``: JSONL only,
``until`` a log position).
Everything is checked before the first byte is sent, so bad input is a JSON 400; a failure
while streaming ends the response without its final chunk (the client sees it truncated).
An export counts as a long call (``HttpLimits.max_waiting``, 429 past it): each replays the
whole log and holds up to three pooled connections while it reads.
"""

from __future__ import annotations

import logging

from aiohttp import web

from execution_ledger.adapters.dataset.formats import MEDIA_TYPES, format_for, require_parquet
from execution_ledger.adapters.dataset.replay import LogBound, RowFilter, parse_bound
from execution_ledger.adapters.http.bodies import query_text
from execution_ledger.adapters.http.context import context_of
from execution_ledger.domain.errors import InvalidQuery

log = logging.getLogger(__name__)


async def export_dataset(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    kind = query_text(request, "kind") or "attempts"
    if kind not in ("attempts", "workflow"):
        raise InvalidQuery(f"kind must be attempts or workflow, not {kind!r}")
    if kind == "workflow":
        return await _stream_steps(request)
    fmt = format_for(None, query_text(request, "format") or "jsonl")
    if fmt == "parquet":
        require_parquet()
    until_text = query_text(request, "until")
    since_text = query_text(request, "since")
    until = parse_bound(until_text, "until") if until_text else None
    since = parse_bound(since_text, "since") if since_text else None
    row_filter = RowFilter(query_text(request, "type") or None, since)
    with ctx.waiting.hold():  # a long call, like a wait or an event stream (429 past the limit)
        return await _stream(request, fmt, until, row_filter)


async def _stream(
    request: web.Request, fmt: str, until: LogBound | None, row_filter: RowFilter
) -> web.StreamResponse:
    ctx = context_of(request)
    replay = await ctx.run(ctx.runtime.dataset_replay, until, row_filter)
    headers = {
        "Content-Type": MEDIA_TYPES[fmt],
        "Content-Disposition": f'attachment; filename="dataset.{fmt}"',
        "Cache-Control": "no-store",
    }
    if replay.deadline is None:
        headers["X-Ledger-Until-Position"] = str(replay.end)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    chunks = replay.chunks(fmt)
    try:
        while True:
            chunk = await ctx.run(next, chunks, None)
            if chunk is None:
                break
            await response.write(chunk)
    except (ConnectionError, RuntimeError):
        return response  # the client went away
    except Exception:
        log.exception("dataset export failed after %d rows", replay.rows)
        response.force_close()
        return response
    finally:
        await ctx.run(chunks.close)
    await response.write_eof()
    return response


async def _stream_steps(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    if (query_text(request, "format") or "jsonl") != "jsonl":
        raise InvalidQuery("the workflow steps are JSONL only")
    until_text = query_text(request, "until")
    until = parse_bound(until_text, "until") if until_text else None
    if until is not None and until.position is None:
        raise InvalidQuery("until must be a log position for the workflow steps")
    with ctx.waiting.hold():
        end = until.position if until is not None else await ctx.run(ctx.reads.head_position)
        lines = ctx.runtime.workflow_steps(end)
        response = web.StreamResponse(
            headers={
                "Content-Type": MEDIA_TYPES["jsonl"],
                "Content-Disposition": 'attachment; filename="workflow-steps.jsonl"',
                "Cache-Control": "no-store",
                "X-Ledger-Until-Position": str(end),
            }
        )
        await response.prepare(request)
        while (line := await ctx.run(next, lines, None)) is not None:
            await response.write(line)
        await response.write_eof()
        return response


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/dataset", export_dataset, name="dataset.export")]
