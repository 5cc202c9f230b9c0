"""``LogWindow``: readers of one process following the log's head share each read, and get
exactly what a read of the database gives them (no event skipped or doubled, whatever part
the window covers); a reader behind it reads for itself. A list stands in for the table;
the real readers' tests (projections, the late-commit test) run on PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from execution_ledger.adapters.postgres.log_window import LogWindow


@dataclass(frozen=True)
class Row:
    position: int


class Table:
    """Positions with gaps (burnt positions), read up to a horizon; counts the reads and
    the rows they returned (what the window saves: rows sent, turned into dicts, decoded)."""

    def __init__(self, positions: list[int], horizon: int) -> None:
        self.rows = [Row(p) for p in positions]
        self.horizon = horizon
        self.reads: list[tuple[int, int, int | None]] = []
        self.rows_read = 0

    def read(self, after: int, limit: int, until: int | None) -> list[Row]:
        self.reads.append((after, limit, until))
        stop = self.horizon if until is None else min(until, self.horizon)
        found = [r for r in self.rows if after < r.position <= stop][:limit]
        self.rows_read += len(found)
        return found


POSITIONS = [1, 2, 3, 5, 6, 7, 9, 10, 11, 12]


def test_a_reader_inside_the_window_is_served_without_a_read() -> None:
    table, window = Table(POSITIONS, horizon=12), LogWindow[Row]()
    assert window.read(0, 5, None, table.read) == [Row(p) for p in (1, 2, 3, 5, 6)]
    assert window.read(2, 3, None, table.read) == [Row(3), Row(5), Row(6)]
    assert window.read(0, 4, 5, table.read) == [Row(1), Row(2), Row(3), Row(5)]
    assert len(table.reads) == 1


def test_a_reader_past_what_the_window_covers_gets_the_rest_from_the_table() -> None:
    table, window = Table(POSITIONS, horizon=12), LogWindow[Row]()
    window.read(0, 3, None, table.read)  # the window: (0, 3]
    assert window.read(1, 100, None, table.read) == [Row(p) for p in POSITIONS[1:]]
    assert table.reads[-1] == (3, 98, None)  # on from the window's end, for the rest only
    assert window.read(0, 100, 6, table.read) == [Row(p) for p in (1, 2, 3, 5, 6)]
    assert len(table.reads) == 2


def test_events_past_the_horizon_are_read_once_it_moves() -> None:
    table, window = Table(POSITIONS, horizon=6), LogWindow[Row]()
    assert window.read(0, 100, None, table.read) == [Row(p) for p in (1, 2, 3, 5, 6)]
    table.horizon = 12  # the slower writer committed
    assert window.read(6, 100, None, table.read) == [Row(p) for p in (7, 9, 10, 11, 12)]
    assert window.read(3, 100, None, table.read) == [Row(p) for p in (5, 6, 7, 9, 10, 11, 12)]


def test_a_reader_behind_the_window_reads_for_itself_and_leaves_it_alone() -> None:
    table, window = Table(POSITIONS, horizon=12), LogWindow[Row](capacity=4)
    window.read(0, 100, None, table.read)  # keeps the last four: (9, 12]
    assert table.rows_read == 10
    assert window.read(9, 100, None, table.read) == [Row(10), Row(11), Row(12)]
    assert window.read(0, 2, None, table.read) == [Row(1), Row(2)]
    assert table.rows_read == 12 and table.reads[-1] == (0, 2, None)
    # Still the last four: served from it (the table only asked whether more came).
    assert window.read(9, 100, None, table.read) == [Row(10), Row(11), Row(12)]
    assert table.rows_read == 12


def test_readers_arriving_together_at_the_head_share_one_read() -> None:
    table, window = Table(POSITIONS, horizon=12), LogWindow[Row]()
    started = threading.Event()
    slow_read = table.read

    def read_slowly(after: int, limit: int, until: int | None) -> list[Row]:
        started.set()
        threading.Event().wait(0.2)  # the others arrive meanwhile
        return slow_read(after, limit, until)

    results: list[list[Row]] = []
    first = threading.Thread(target=lambda: results.append(window.read(0, 100, None, read_slowly)))
    first.start()
    started.wait(5)
    others = [
        threading.Thread(target=lambda: results.append(window.read(0, 100, None, read_slowly)))
        for _ in range(3)
    ]
    for thread in [*others]:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert results == [[Row(p) for p in POSITIONS]] * 4
    assert table.rows_read == len(POSITIONS)  # each row came from the table once
