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
returns nothing, so in the runner's pipeline it costs no round trip. ``apply_batch`` does
a whole batch in one call of a server function (``audit_chain_append``, made by
``create``): it reads the batch's events with the chain row at or below each in one query,
chains them in position order by the same rules and inserts the new rows at once; the
same rows as applying the events one by one, for half the database time per event and a
tenth of the projection's.

A stored row the runner cannot decode (a topic that does not resolve, a state that does not
parse) reaches ``apply`` as an ``UndecodableEvent``: it is chained by its stored bytes like
any other, and its position is also kept in ``audit_undecodable`` for ``ledger audit
verify`` to list.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql

from execution_ledger.projections.base import Cursor, Event

TABLE = "audit_chain"
UNDECODABLE_TABLE = "audit_undecodable"
# Where the archived history ends (``adapters/retention/``): one row, the last archived
# position and the chain hash there. Events at or below it are not chained again (a rebuild
# after archival), and the first event after it chains from its hash. Not among ``tables``:
# a rebuild keeps it.
ARCHIVE_HEAD_TABLE = "audit_archive_head"
APPEND_FUNCTION = "audit_chain_append"  # (positions bigint[]): ``apply_batch`` in one call
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

_CREATE_UNDECODABLE = """
CREATE TABLE IF NOT EXISTS {undecodable} (
    position bigint PRIMARY KEY,
    topic text,
    error text NOT NULL
)
"""

_CREATE_ARCHIVE_HEAD = """
CREATE TABLE IF NOT EXISTS {head} (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    position bigint NOT NULL,
    chain_hash bytea NOT NULL,
    archived_at timestamptz NOT NULL
)
"""

_RECORD_UNDECODABLE = """
INSERT INTO {undecodable} (position, topic, error) VALUES (%s, %s, %s)
ON CONFLICT (position) DO NOTHING
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

# One event, at the position ``{at}``: chained unless it is archived or already chained.
_APPEND = """
INSERT INTO {chain} (position, originator_id, originator_version, topic, event_hash, chain_hash)
SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,
       sha256(c.canonical),
       sha256(coalesce((SELECT p.chain_hash FROM {chain} p
                        WHERE p.position < e.notification_id
                        ORDER BY p.position DESC LIMIT 1),
                       (SELECT h.chain_hash FROM {head} h WHERE h.position < e.notification_id),
                       {genesis}) || c.canonical)
FROM {events} e, LATERAL (SELECT {canonical} AS canonical) c
WHERE e.notification_id = {at}
  AND NOT EXISTS (SELECT 1 FROM {head} h WHERE h.position >= e.notification_id)
ON CONFLICT (position) DO NOTHING
"""

# ``_APPEND`` for each of ``positions``, in ascending order, as one call: the same rows.
# The events and, for each, the last chain row at or below it are read in one query (the
# table as it was before the call); the previous hash is the later of that row and the last
# row this call chained (``chained_at``), else the archive head's hash when the head is below
# the event, else GENESIS; an event at or below the head is not chained, nor one already in
# the chain (whose hash the next event then chains from). The new rows go in one insert.
# Where the chain holds no row between the batch's first and last positions (the usual
# case: a batch's rows commit with the projection's position), the last row at or below
# each event is the one row below the first: it is read once, not looked up per event
# (a fifth to a third of the call's time at 500 events).
_CREATE_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}(positions bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    events refcursor;
    ev record;
    first_position bigint;
    last_position bigint;
    lowest_below bigint;
    lowest_below_hash bytea;
    head_position bigint;
    head_hash bytea;
    chained_at bigint;
    chained_hash bytea;
    previous bytea;
    new_positions bigint[] := '{{}}';
    new_ids uuid[] := '{{}}';
    new_versions bigint[] := '{{}}';
    new_topics text[] := '{{}}';
    event_hashes bytea[] := '{{}}';
    chain_hashes bytea[] := '{{}}';
BEGIN
    SELECT h.position, h.chain_hash INTO head_position, head_hash FROM {head} h;
    SELECT min(p), max(p) INTO first_position, last_position FROM unnest(positions) p;
    IF EXISTS (SELECT 1 FROM {chain} c
               WHERE c.position BETWEEN first_position AND last_position) THEN
        OPEN events FOR
            SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,
                   {canonical} AS canonical, below.position AS below_position,
                   below.chain_hash AS below_hash
            FROM {events} e
            LEFT JOIN LATERAL (SELECT p.position, p.chain_hash FROM {chain} p
                               WHERE p.position <= e.notification_id
                               ORDER BY p.position DESC LIMIT 1) below ON true
            WHERE e.notification_id = ANY(positions)
            ORDER BY e.notification_id;
    ELSE
        SELECT p.position, p.chain_hash INTO lowest_below, lowest_below_hash FROM {chain} p
            WHERE p.position < first_position ORDER BY p.position DESC LIMIT 1;
        OPEN events FOR
            SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,
                   {canonical} AS canonical, lowest_below AS below_position,
                   lowest_below_hash AS below_hash
            FROM {events} e
            WHERE e.notification_id = ANY(positions)
            ORDER BY e.notification_id;
    END IF;
    LOOP
        FETCH events INTO ev;
        EXIT WHEN NOT FOUND;
        CONTINUE WHEN ev.notification_id <= head_position;
        IF ev.below_position = ev.notification_id THEN  -- chained already
            CONTINUE;
        END IF;
        IF chained_at IS NOT NULL AND chained_at > coalesce(ev.below_position, 0) THEN
            previous := chained_hash;
        ELSIF ev.below_position IS NOT NULL THEN
            previous := ev.below_hash;
        ELSIF head_position < ev.notification_id THEN
            previous := head_hash;
        ELSE
            previous := {genesis};
        END IF;
        chained_at := ev.notification_id;
        chained_hash := sha256(previous || ev.canonical);
        new_positions := array_append(new_positions, ev.notification_id);
        new_ids := array_append(new_ids, ev.originator_id);
        new_versions := array_append(new_versions, ev.originator_version);
        new_topics := array_append(new_topics, ev.topic);
        event_hashes := array_append(event_hashes, sha256(ev.canonical));
        chain_hashes := array_append(chain_hashes, chained_hash);
    END LOOP;
    CLOSE events;
    INSERT INTO {chain} (position, originator_id, originator_version, topic, event_hash,
                         chain_hash)
    SELECT * FROM unnest(new_positions, new_ids, new_versions, new_topics, event_hashes,
                         chain_hashes)
    ON CONFLICT (position) DO NOTHING;
END $$
"""


@dataclass(frozen=True)
class UndecodableEvent:
    """What a projection runner hands on, at its position, for a stored row whose event
    cannot be decoded. It is no task event, so the task view, readiness graph and dataset
    pass over it; the audit chain chains the stored row and records its position."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str | None
    error: str  # why it does not decode: "<exception class>: <message>"


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
    tables = (TABLE, UNDECODABLE_TABLE)
    takes_undecodable = True  # the runner hands it rows it cannot decode (see the module)

    def __init__(self, schema: str, events_table: str = "ledger_events") -> None:
        # ``events_table``: the library's table of the "Ledger" application
        # (``adapters.postgres.event_store.EVENTS_TABLE``), named here to keep this
        # module free of adapters.
        self.table = sql.Identifier(schema, TABLE)
        undecodable = sql.Identifier(schema, UNDECODABLE_TABLE)
        self._create = sql.SQL(_CREATE).format(chain=self.table)
        self._create_undecodable = sql.SQL(_CREATE_UNDECODABLE).format(undecodable=undecodable)
        head = sql.Identifier(schema, ARCHIVE_HEAD_TABLE)
        self._create_head = sql.SQL(_CREATE_ARCHIVE_HEAD).format(head=head)
        self._record_undecodable = (
            sql.SQL(_RECORD_UNDECODABLE).format(undecodable=undecodable).as_string(None)
        )
        append = {
            "chain": self.table,
            "events": sql.Identifier(schema, events_table),
            "canonical": sql.SQL(_CANONICAL),
            "genesis": sql.SQL(_GENESIS_SQL),
            "head": head,
        }
        self._append = sql.SQL(_APPEND).format(at=sql.SQL("%s"), **append).as_string(None)
        function = sql.Identifier(schema, APPEND_FUNCTION)
        self._create_append_function = sql.SQL(_CREATE_APPEND_FUNCTION).format(
            function=function, **append
        )
        self._append_all = sql.SQL("SELECT {}(%s::bigint[])").format(function).as_string(None)

    def create(self, cursor: Cursor) -> None:
        cursor.execute(self._create)
        cursor.execute(self._create_undecodable)
        cursor.execute(self._create_head)
        cursor.execute(self._create_append_function)

    def apply(self, cursor: Cursor, event: Event, position: int) -> list[Any]:
        # Every event is chained, whatever its aggregate. Applying one twice changes nothing.
        cursor.execute(self._append, (position,))
        if isinstance(event, UndecodableEvent):
            self._note_undecodable(cursor, event, position)
        return []

    def apply_batch(self, cursor: Cursor, events: Iterable[tuple[Event, int]]) -> list[Any]:
        """``apply`` for each ``(event, position)`` pair, the chaining in one statement."""
        batch = list(events)
        if not batch:
            return []
        positions = "{" + ",".join(str(position) for _, position in batch) + "}"
        cursor.execute(self._append_all, (positions,))
        for event, position in batch:
            if isinstance(event, UndecodableEvent):
                self._note_undecodable(cursor, event, position)
        return []

    def _note_undecodable(self, cursor: Cursor, event: UndecodableEvent, position: int) -> None:
        cursor.execute(self._record_undecodable, (position, event.topic, event.error))
