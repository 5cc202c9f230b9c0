"""The cyclic garbage collector paused for the length of one large enqueue.

A bulk enqueue of 1,000 tasks allocates tens of thousands of objects that live until the
call returns (requests, tasks, events, rows, stored states) and contain no cycles: reference
counting frees them all at the end. Meanwhile CPython counts them as survivors and runs full
collections that walk every object of the process, the program's own included: in a program
that imports the ledger, 20 calls of 1,000 tasks spent 320–360 ms of 1.4 s in full passes
(``ledger serve`` freezes its start-up heap instead, ``startup_heap.py``; a library must not
freeze its caller's heap). Pausing the collector for the call leaves those passes out; the
objects the call freed are not counted once it is back on.

The collector is process-wide: another thread's cyclic garbage waits for the end of the call
(tens of milliseconds). A collector the program turned off stays off; calls that overlap in
threads turn it back on when the one that turned it off ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Below this many tasks a call allocates too little for a full pass to be likely.
LARGE_CALL = 100


@contextmanager
def collector_paused(tasks: int) -> Iterator[None]:
    """Run the block with the cyclic collector off when ``tasks`` is a large call's count
    and the collector is on; it is turned on again however the block ends."""
    if tasks < LARGE_CALL or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
