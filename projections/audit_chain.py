"""Audit chain: a hash chain over the stored bytes of every event in the log, in log order.

Row ``n`` holds ``chain_hash(n) = sha256(chain_hash(previous row) || canonical(n))``, where
``canonical(n)`` encodes the event *as stored* (position, originator id and version, topic
and the raw ``state`` bytes), not the decoded event, so a change of any byte is detected.
The first row chains from ``GENESIS`` (32 zero bytes). ``adapters.postgres.audit``
recomputes the chain from the log and compares (``ledger audit verify``).

The runner hands ``apply`` a decoded event, so the stored row is read by the database
itself: one ``INSERT … SELECT`` per event finds the row by ``notification_id`` (a unique
index), computes both hashes with ``sha256()`` and takes the previous chain hash from the
last row before it. Nothing is kept in memory, so a restart, a rolled-back batch or another
process running the projection can never leave a stale previous hash; and the statement
returns nothing, so in the runner's pipeline it costs no round trip.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any
from uuid import UUID

from psycopg import sql

from projections.base import Cursor, Event

TABLE = "audit_chain"
GENESIS = bytes(32)
_GENESIS_SQL = f"decode('{GENESIS.hex()}', 'hex')"

_CREATE = """
CREATE TABLE IF NOT EXISTS {chain} (
    position bigint PRIMARY KEY,
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    event_hash bytea NOT NULL,
    chain_hash bytea NOT NULL
)
"""

# canonical(n) in SQL; ``canonical_bytes`` below is the same encoding in Python.
_CANONICAL = """
int8send(e.notification_id)
|| uuid_send(e.originator_id)
|| int8send(e.originator_version)
|| coalesce(int4send(octet_length(convert_to(e.topic, 'UTF8'))) || convert_to(e.topic, 'UTF8'),
            int4send(-1))
|| coalesce(int4send(octet_length(e.state)) || e.state, int4send(-1))
"""

_APPEND = """
INSERT INTO {chain} (position, originator_id, originator_version, topic, event_hash, chain_hash)
SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,
       sha256(c.canonical),
       sha256(coalesce((SELECT p.chain_hash FROM {chain} p
                        WHERE p.position < e.notification_id
                        ORDER BY p.position DESC LIMIT 1),
                       {genesis}) || c.canonical)
FROM {events} e, LATERAL (SELECT {canonical} AS canonical) c
WHERE e.notification_id = %s
ON CONFLICT (position) DO NOTHING
"""


def canonical_bytes(
    position: int,
    originator_id: UUID,
    originator_version: int,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """The bytes chained for one stored event: big-endian integers, the UUID's 16 bytes,
    then topic (UTF-8) and state, each preceded by its length (-1 for NULL)."""
    parts = [
        struct.pack(">q", position),
        originator_id.bytes,
        struct.pack(">q", originator_version),
    ]
    for field in (None if topic is None else topic.encode("utf-8"), state):
        if field is None:
            parts.append(struct.pack(">i", -1))
        else:
            parts += [struct.pack(">i", len(field)), field]
    return b"".join(parts)


def event_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()


def next_chain_hash(previous: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(previous + canonical).digest()


class AuditChain:
    name = "audit_chain"
    tables = (TABLE,)

    def __init__(self, schema: str, events_table: str = "ledger_events") -> None:
        # ``events_table``: the library's table of the "Ledger" application
        # (``adapters.postgres.event_store.EVENTS_TABLE``), named here to keep this
        # module free of adapters.
        self.table = sql.Identifier(schema, TABLE)
        self._create = sql.SQL(_CREATE).format(chain=self.table)
        self._append = (
            sql.SQL(_APPEND)
            .format(
                chain=self.table,
                events=sql.Identifier(schema, events_table),
                canonical=sql.SQL(_CANONICAL),
                genesis=sql.SQL(_GENESIS_SQL),
            )
            .as_string(None)
        )

    def create(self, cursor: Cursor) -> None:
        cursor.execute(self._create)

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        # Every event is chained, whatever its aggregate. Applying one twice changes nothing.
        cursor.execute(self._append, (position,))
        return []
