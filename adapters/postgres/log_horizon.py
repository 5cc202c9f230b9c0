"""The log's horizon: how far a reader may read without ever passing a position that a
slower transaction will fill later — with no table lock on the writers.

Positions (``notification_id``) come from a sequence when a row is inserted, so they follow
insert order, not commit order: a transaction holding position 100 may still be open when
one holding 101 commits. The eventsourcing library serialises every writer with ``LOCK
TABLE … IN EXCLUSIVE MODE`` to make the two orders equal. The ledger instead lets writers
append concurrently and tells readers where it is safe to stop:

- **A writer**, before its first insert in a transaction, calls ``ledger_log_enter()``:
  it reads from the sequence the next position L it could give (every position this
  writer will be given is ≥ L) and
  takes a *shared* transaction-level advisory lock whose key encodes L. Writers never wait
  for each other (shared locks do not conflict); the lock goes when the transaction ends.
- **A reader** calls ``ledger_log_horizon()`` in one statement and reads rows in a later
  one: the function reads the sequence's last given value S, *then* the smallest L among
  the writers' locks held now (``pg_locks``), and returns ``min(S, L - 1)``.

Why no reader can skip a late-committing row: take a row at position p ≤ horizon. Since
p ≤ S, the sequence gave p before the reader read S, so its writer had taken its lock even
earlier. When the reader looked at the locks, either that lock was still held — then the
horizon is below its L ≤ p, a contradiction — or it had been released, which PostgreSQL
does only after the transaction's end is visible: the row is committed (visible to the
reader's next statement) or rolled back for good. Rows above the horizon are read by a
later call. The cost: one shared lock per writing transaction, one ``pg_locks`` scan per
read, and readers wait behind the oldest writer still open (an ``enqueue_in`` inside a
long caller transaction holds them back until it commits).

Keys: the two-int advisory form, ``(tag << 16 | L >> 32, L & 0xffffffff)`` with a 15-bit
tag per schema (positions up to 2^48). No other ledger lock uses the two-int form; a tag
shared by two schemas of one database only makes their readers wait for each other.
"""

from __future__ import annotations

import zlib

from psycopg import sql

EVENTS_TABLE = "ledger_events"

ENTER_FUNCTION = "ledger_log_enter"
HORIZON_FUNCTION = "ledger_log_horizon"
APPEND_FUNCTION = "ledger_log_append"


def schema_tag(schema: str) -> int:
    """The schema's 15-bit part of every horizon lock key (stable across processes)."""
    return zlib.crc32(schema.encode("utf-8")) & 0x7FFF


def create_statements(schema: str) -> list[sql.Composed]:
    """The two functions (``CREATE OR REPLACE``: safe to run at every start)."""
    sequence = sql.Identifier(schema, f"{EVENTS_TABLE}_notification_id_seq")
    tag = sql.Literal(schema_tag(schema))
    enter = sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {function}() RETURNS void
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE low bigint;
        BEGIN
            SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END INTO low FROM {sequence};
            PERFORM pg_advisory_xact_lock_shared(
                (({tag}::bigint << 16) | (low >> 32))::int, ((low << 32) >> 32)::int);
        END $$
        """
    ).format(function=sql.Identifier(schema, ENTER_FUNCTION), sequence=sequence, tag=tag)
    horizon = sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {function}() RETURNS bigint
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE given bigint; writing bigint;
        BEGIN
            SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                INTO given FROM {sequence};
            SELECT min(((classid::bigint & 65535) << 32) | objid::bigint) - 1 INTO writing
                FROM pg_locks
                WHERE locktype = 'advisory' AND objsubid = 2 AND granted
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND (classid::bigint >> 16) = {tag};
            RETURN least(given, coalesce(writing, given));
        END $$
        """
    ).format(function=sql.Identifier(schema, HORIZON_FUNCTION), sequence=sequence, tag=tag)
    return [enter, horizon, _append_function(schema)]


def _append_function(schema: str) -> sql.Composed:
    """``ledger_log_append(states, rows)``: a writer's whole append in one statement (its
    announcement to the readers, the log's NOTIFY, the insert), so that a save costs the
    client one statement where it cost three. ``rows`` is a ``jsonb`` array of (id,
    version, topic, start, length) per event, in log order; ``states`` all the events'
    states end to end. Returns the positions given, in the rows' order."""
    return sql.SQL(
        """
        CREATE OR REPLACE FUNCTION {function}(states bytea, rows jsonb) RETURNS SETOF bigint
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM {enter}();
            PERFORM pg_notify({channel}, '');
            RETURN QUERY
                INSERT INTO {events} (originator_id, originator_version, topic, state)
                SELECT (r ->> 0)::uuid, (r ->> 1)::bigint, r ->> 2,
                       substring(states FROM (r ->> 3)::integer FOR (r ->> 4)::integer)
                FROM jsonb_array_elements(rows) WITH ORDINALITY AS e(r, n) ORDER BY n
                RETURNING notification_id;
        END $$
        """
    ).format(
        function=sql.Identifier(schema, APPEND_FUNCTION),
        enter=sql.Identifier(schema, ENTER_FUNCTION),
        channel=sql.Literal(EVENTS_TABLE),
        events=sql.Identifier(schema, EVENTS_TABLE),
    )


def enter_statement(schema: str) -> str:
    """What a writer runs before its first insert of a transaction."""
    return sql.SQL("SELECT {}()").format(sql.Identifier(schema, ENTER_FUNCTION)).as_string(None)


def append_statement(schema: str) -> str:
    """A writer's append (``ledger_log_append``): the states as binary ``bytea``, the rows
    as ``jsonb`` text."""
    return (
        sql.SQL("SELECT {}(%b::bytea, %s::jsonb) AS notification_id")
        .format(sql.Identifier(schema, APPEND_FUNCTION))
        .as_string(None)
    )


def horizon_statement(schema: str) -> str:
    """What a reader runs (in its own statement, before the read) to bound its read."""
    return (
        sql.SQL("SELECT {}() AS horizon")
        .format(sql.Identifier(schema, HORIZON_FUNCTION))
        .as_string(None)
    )


# The session setting a reader leaves its horizon in, for its next statement to bound its read
# with: both travel in one pipeline (one round trip), each with its own snapshot, in order.
HORIZON_SETTING = "ledger.horizon"


def noted_horizon_statement(schema: str) -> str:
    """The horizon, computed in its own statement and kept in ``HORIZON_SETTING``."""
    return (
        sql.SQL("SELECT set_config({}, {}()::text, false)")
        .format(sql.Literal(HORIZON_SETTING), sql.Identifier(schema, HORIZON_FUNCTION))
        .as_string(None)
    )


def below_noted_horizon() -> sql.Composable:
    """A bound for the statement after ``noted_horizon_statement``: ``<= {this}``."""
    return sql.SQL("current_setting({})::bigint").format(sql.Literal(HORIZON_SETTING))

