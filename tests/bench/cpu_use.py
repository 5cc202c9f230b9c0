"""CPU time a benchmark's processes spent over one measured stretch, per unit of work: a
steadier measure than a rate on a shared machine, where the ceiling itself moves by a third
between runs a minute apart.

``CpuMeter(node_pids)`` reads, at its start and at ``stop()``, the CPU time (user + system)
of each node process, of their descendants (the projection child, task subprocesses) and of
every PostgreSQL process on the machine (other databases' work included: run nothing else
meanwhile). A backend that exits in between takes its time with it, so PostgreSQL's figure
is a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuUse:
    """Seconds of CPU over the stretch."""

    nodes: float
    children: float
    postgres: float

    def per(self, units: int) -> CpuUse:
        return CpuUse(self.nodes / units, self.children / units, self.postgres / units)


def _seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # gone meanwhile
        return 0.0
    return float(times.user + times.system)


def _postgres() -> dict[int, float]:
    return {
        process.pid: _seconds(process)
        for process in psutil.process_iter(["name"])
        if (process.info["name"] or "").startswith("postgres")
    }


class CpuMeter:
    def __init__(self, node_pids: Iterable[int]) -> None:
        self.nodes = [psutil.Process(pid) for pid in node_pids]
        self._start = self._read()

    def _read(self) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
        nodes = {node.pid: _seconds(node) for node in self.nodes}
        children: dict[int, float] = {}
        for node in self.nodes:
            try:
                descendants = node.children(recursive=True)
            except psutil.Error:
                descendants = []
            children.update((child.pid, _seconds(child)) for child in descendants)
        return nodes, children, _postgres()

    def stop(self) -> CpuUse:
        """The CPU spent since the meter started (a process that started meanwhile counts
        from zero)."""
        end = self._read()
        spent = [
            sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
            for before, after in zip(self._start, end, strict=True)
        ]
        return CpuUse(*spent)
