"""The evidence a registry change may carry: the simulation report that justified it.

``ledger registry propose`` and ``POST /v1/registry/versions`` with a ``report`` record a
registry change together with ``evidence_of(report)``: the report's SHA-256 (of its
canonical JSON, ``domain/simulation/report.py``), the inputs it was made of (the registry
file's SHA-256, the window, the simulated pool, the seed) and a few headline numbers. The
event is chained like every other (``ledger audit verify``), so the audit trail ties the
policy change to the report; anyone can re-run the simulation from the inputs and compare
digests. The checks that need no log are here: the report is a report, as ``ledger
simulate --json`` wrote it (``canonical_report``) or as ``POST /v1/simulations`` answered
it (``answered_report``), and it was made for the registry file proposed
(``check_made_for``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from execution_ledger.domain.errors import LedgerError
from execution_ledger.domain.simulation.report import Report

KIND = "simulation"


class EvidenceRefused(LedgerError):
    """A report offered as evidence is not one (not canonical, edited, made for another
    registry file, or not reproduced by a re-run); nothing is recorded."""

    code = "evidence_refused"


def canonical_report(text: str) -> Report:
    """The report ``text`` holds, as ``ledger simulate --json`` wrote it (one trailing
    newline allowed). Text that is not the canonical JSON of its own content was edited
    after the fact, and is refused."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise EvidenceRefused(f"the report is not JSON: {error}") from None
    report = _report(data)
    if text.removesuffix("\n") != report.as_json():
        raise EvidenceRefused(
            "the report is not in the canonical form `ledger simulate --json` writes "
            "(edited by hand?): its digest cannot be trusted"
        )
    return report


def answered_report(answer: Mapping[str, Any]) -> Report:
    """The report a ``POST /v1/simulations`` answer holds: the report's fields and its
    ``digest``, which must be the digest of the rest."""
    data = dict(answer)
    digest = data.pop("digest", None)
    report = _report(data)
    if digest != report.digest:
        raise EvidenceRefused(
            f"the report's digest {digest} is not the digest of its content "
            f"({report.digest}): edited after the fact?"
        )
    return report


def _report(data: Any) -> Report:
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict):
        raise EvidenceRefused("the report is not a simulation report (no 'inputs')")
    return Report(data)


def check_made_for(report: Report, registry_sha256: str) -> None:
    """Refuse a report that was made for another registry file than the one proposed."""
    named = report.data["inputs"].get("registry_sha256")
    if named != registry_sha256:
        raise EvidenceRefused(
            f"the report was made for another registry file: its registry_sha256 is "
            f"{named}, the proposed file's is {registry_sha256}"
        )


def evidence_of(report: Report) -> dict[str, Any]:
    """What ``RegistryChanged.evidence`` records of ``report``."""
    return {
        "kind": KIND,
        "report_sha256": report.digest,
        "inputs": dict(report.data["inputs"]),
        "summary": headline(report.data),
    }


def headline(data: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers an admin weighs: tasks, outcomes and p99 waits per queue, simulated
    beside recorded."""
    outcomes = data.get("outcomes", {})
    waits = data.get("waits_by_queue", {})
    return {
        "tasks": data.get("tasks"),
        "outcomes": {
            "simulated": outcomes.get("simulated", {}),
            "recorded": outcomes.get("recorded", {}),
        },
        "p99_wait_ms_by_queue": {
            queue: {
                "simulated": both.get("simulated", {}).get("p99_ms"),
                "recorded": both.get("recorded", {}).get("p99_ms"),
            }
            for queue, both in sorted(waits.items())
        },
    }


def headline_lines(evidence: Mapping[str, Any]) -> list[str]:
    """The evidence for a terminal."""
    summary = evidence.get("summary", {})
    inputs = evidence.get("inputs", {})
    window = f"{inputs.get('since') or 'the start'} .. {inputs.get('until') or 'the head'}"
    lines = [
        f"evidence: simulation report sha256 {evidence.get('report_sha256')}",
        f"  window {window} (positions {inputs.get('first_position')}.."
        f"{inputs.get('last_position')}), {inputs.get('workers')} worker(s) x "
        f"{inputs.get('concurrency')}, seed {inputs.get('seed')}",
        f"  tasks {summary.get('tasks')}",
    ]
    for side in ("simulated", "recorded"):
        counts = summary.get("outcomes", {}).get(side, {})
        shown = "  ".join(f"{k} {v}" for k, v in counts.items()) or "-"
        lines.append(f"  outcomes {side:<9} {shown}")
    for queue, p99 in summary.get("p99_wait_ms_by_queue", {}).items():
        lines.append(
            f"  p99 wait {queue}: simulated {_ms(p99.get('simulated'))}, "
            f"recorded {_ms(p99.get('recorded'))}"
        )
    return lines


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g} ms"
