"""Task ids as a user types them: a full id, or a unique prefix of at least 4 hex digits
(``ledger show 0b9c``). Dashes are ignored, so a copied ``0b9c1d2e-41`` works too."""

from __future__ import annotations

import argparse
import string
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:  # the parser imports this module: nothing heavy at import time
    from execution_ledger.adapters.ledger_reads import LedgerReads

MIN_PREFIX = 4
SHOWN_MATCHES = 5


def task_ref(text: str) -> str:
    """argparse ``type``: a task id or an id prefix, lower-cased without dashes."""
    digits = text.strip().replace("-", "").lower()
    if len(digits) > 32 or not set(digits) <= set(string.hexdigits.lower()):
        raise argparse.ArgumentTypeError(f"not a task id or id prefix: {text!r}")
    if len(digits) < MIN_PREFIX:
        raise argparse.ArgumentTypeError(
            f"a task id prefix needs at least {MIN_PREFIX} hex digits: {text!r}"
        )
    return digits


def resolve_task_id(reads: LedgerReads, ref: str) -> UUID:
    """The one task whose id starts with ``ref`` (from ``task_ref``); ``TaskNotFound`` when
    none does, ``InvalidQuery`` naming some of them when several do."""
    from execution_ledger.domain.errors import InvalidQuery, TaskNotFound

    if len(ref) == 32:
        return UUID(ref)
    low, high = UUID(ref.ljust(32, "0")), UUID(ref.ljust(32, "f"))
    matches = reads.task_ids_between(low, high, limit=SHOWN_MATCHES + 1)
    if not matches:
        raise TaskNotFound(f"no task id starts with {ref!r}")
    if len(matches) > 1:
        shown = ", ".join(str(m) for m in matches[:SHOWN_MATCHES])
        more = ", ..." if len(matches) > SHOWN_MATCHES else ""
        raise InvalidQuery(
            f"task id prefix {ref!r} matches several tasks ({shown}{more}); give more digits"
        )
    return matches[0]
