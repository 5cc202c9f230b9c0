"""The replay's page statement: one page of task events read by PostgreSQL from the stored
JSON (``json_to_record``) and returned as one text, a line per event with tab-separated
fields in the replay's text form (``adapters/dataset/log_reader.py`` splits and folds it).
``page_query`` composes it once per replay; ``page_text`` runs it in a transaction whose
times are UTC. A page the server cannot parse raises one of ``UNPARSED_PAGE`` (the reader
then reads it through the library).
"""

from __future__ import annotations

import psycopg
from eventsourcing import persistence
from psycopg import sql

from execution_ledger.adapters.postgres.read_replica import LogConnections

TASK_TOPIC = "domain.task:Task."
FOLDED = (
    "TaskEnqueued",
    "TaskUnblocked",
    "TaskStarted",
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "TaskRetryScheduled",
    "TaskCancelled",
    "TaskDebounced",
)
(
    ENQUEUED,
    UNBLOCKED,
    STARTED,
    SUCCEEDED,
    FAILED,
    TIMED_OUT,
    RETRY_SCHEDULED,
    CANCELLED,
    DEBOUNCED,
) = (TASK_TOPIC + name for name in FOLDED)


_ISO_FORMAT = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""
# A stored time in the library's form, already UTC with microseconds (the ISO text is 32
# characters ending in +00:00), e.g. {"_type_":"datetime_iso","_data_":"2026-...+00:00"}.
_STORED_UTC = r"""'{"\_type\_":"datetime\_iso","\_data\_":"' || repeat('_', 26) || '+00:00"}'"""


def _time(column: str) -> str:
    """A stored time (a ``text`` column: the JSON object as stored) as ``iso_time`` text:
    cut out of the stored text when it already is UTC with microseconds, else formatted
    by the server (the session is in UTC)."""
    value = f'x."{column}"'
    return (
        f"CASE WHEN {value} LIKE {_STORED_UTC} THEN substr({value}, 36, 32) "
        f"ELSE to_char(({value}::json ->> '_data_')::timestamptz, {_ISO_FORMAT}) END"
    )


_FIELDS = {c: _time(c) for c in ("timestamp", "run_at", "retry_at")}

# One page of task events as one text: a line per event, tab-separated: position, topic,
# task id, time, then the fields of its kind in the order ``PageFolder`` reads them. Text
# values are ``json`` columns: a JSON string literal as ``escape_json`` writes it (the
# escapes of Python's ``json`` with ``ensure_ascii=False``), never a tab or a newline. An
# empty field is a null (``concat`` writes nulls as nothing). ``details`` values come as
# their JSON text; ``PageFolder`` keeps the whole numbers, as ``event_facts`` does.
_PAGE_QUERY = """
SELECT string_agg(concat(
    e.notification_id, E'\\t', e.topic, E'\\t', e.originator_id, E'\\t', {timestamp},
    CASE e.topic
    WHEN {enqueued} THEN concat(E'\\t',
        x.type_name, E'\\t', x.adapter, E'\\t', x.queue, E'\\t', x.lane, E'\\t',
        x.principal, E'\\t', x.role, E'\\t', x.initial_state, E'\\t', {run_at}, E'\\t',
        coalesce(octet_length(x.args::text), 0), E'\\t',
        CASE WHEN x.depends_on <> '[]' THEN (
            SELECT string_agg((d ->> '_data_')::uuid::text, ' ')
            FROM json_array_elements(x.depends_on::json) d
        ) END)
    WHEN {started} THEN concat(E'\\t', coalesce(x.attempt, 0), E'\\t', x.worker)
    WHEN {succeeded} THEN concat(E'\\t',
        coalesce(octet_length(x.result::text), 4), E'\\t',
        x.details -> 'exit_code', E'\\t', x.details -> 'http_status')
    WHEN {failed} THEN concat(E'\\t',
        x.error_class, E'\\t', x.details -> 'exit_code', E'\\t', x.details -> 'http_status')
    WHEN {timed_out} THEN concat(E'\\t', x.kind)
    WHEN {retry_scheduled} THEN concat(E'\\t', {retry_at})
    WHEN {debounced} THEN concat(E'\\t', {run_at})
    END), E'\\n' ORDER BY e.notification_id)
FROM (
    SELECT notification_id, originator_id, topic, state FROM {events}
    WHERE notification_id > %s AND notification_id <= %s AND {topics}
) e,
LATERAL json_to_record(convert_from(e.state, 'UTF8')::json) AS x(
    "timestamp" text, type_name json, adapter json, queue json, lane json, principal json,
    role json, initial_state json, run_at text, depends_on text, args json, attempt integer,
    worker json, error_class json, kind json, retry_at text, result json, details json
)
"""


def page_query(events: sql.Composable, every_task_event: bool) -> str:
    """The page query on the ``events`` table: the events the fold reads, or (for a time
    bound, which looks at every task event's time) every task event."""
    topics = (
        sql.SQL("topic LIKE {}").format(sql.Literal(TASK_TOPIC + "%%"))
        if every_task_event
        else sql.SQL("topic = ANY({})").format(sql.Literal([TASK_TOPIC + n for n in FOLDED]))
    )
    return (
        sql.SQL(_PAGE_QUERY)
        .format(
            events=events,
            topics=topics,
            enqueued=sql.Literal(ENQUEUED),
            started=sql.Literal(STARTED),
            succeeded=sql.Literal(SUCCEEDED),
            failed=sql.Literal(FAILED),
            timed_out=sql.Literal(TIMED_OUT),
            retry_scheduled=sql.Literal(RETRY_SCHEDULED),
            debounced=sql.Literal(DEBOUNCED),
            **{name: sql.SQL(expression) for name, expression in _FIELDS.items()},
        )
        .as_string(None)
    )


# A page the server cannot parse (the library writes NaN for a float NaN, which is not JSON).
UNPARSED_PAGE = (psycopg.DataError, persistence.DataError)


def page_text(connections: LogConnections, query: str, after: int, until: int) -> str:
    """The task events with ``after < position <= until`` as one text (empty: none)."""
    with (
        connections() as conn,
        conn.transaction(),
        conn.cursor(row_factory=psycopg.rows.tuple_row) as cursor,
    ):
        cursor.execute("SET LOCAL TimeZone TO 'UTC'")  # times the server formats are in UTC
        cursor.execute(query, (after, until), prepare=True)
        row = cursor.fetchone()
    return (row and row[0]) or ""
