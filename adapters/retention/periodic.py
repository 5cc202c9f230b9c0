"""A worker node's archival: ``ledger archive`` every ``[retention] archive_every``, when
set (``docs/retention.md``). One archival at a time per schema (the archiver's advisory
lock), so every node may run this; a node whose role may not delete events (the service
role) says so once in the log and stops trying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from execution_ledger.adapters.ledger import utc_now
from execution_ledger.adapters.retention.archiver import Archiver
from execution_ledger.adapters.retention.segments import (
    ArchiveBusy,
    ArchiveError,
    configured_archive,
)
from execution_ledger.adapters.runtime import Runtime

log = logging.getLogger(__name__)
Blocking = Callable[..., Awaitable[Any]]


async def archive_periodically(runtime: Runtime, stop: asyncio.Event, blocking: Blocking) -> None:
    """Archive every ``archive_every`` until ``stop`` (nothing when it is not set)."""
    settings = runtime.settings
    policy = settings.config.retention
    archive = configured_archive(policy, settings.schema)
    if policy is None or archive is None or policy.archive_every is None:
        return
    archiver = Archiver(runtime.database_url, settings.schema, policy, archive, utc_now)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), policy.archive_every)
        if stop.is_set():
            return
        try:
            report = await blocking(archiver.run)
        except psycopg.errors.InsufficientPrivilege as error:
            log.warning(
                "archive: this node's database role may not archive (%s); run ledger "
                "archive as the schema's owner instead",
                error.diag.message_primary,
            )
            return
        except ArchiveBusy:
            log.debug("archive: another node is archiving; next round")
            continue
        except ArchiveError as error:
            log.warning("archive: %s", error)
            continue
        except Exception:
            log.exception("archive round failed; it is tried again next round")
            continue
        if report.written or report.tasks_removed or report.denials_removed:
            log.info(
                "archive: up to position %d, %d segments written, %d tasks removed",
                report.through,
                len(report.written),
                report.tasks_removed,
            )
