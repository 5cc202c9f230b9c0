"""A registry change proposed with its evidence: a simulation report checked against the
registry file it claims to be about and against the log it claims to be made of.

``checked_evidence`` is what ``ledger registry propose`` and ``POST /v1/registry/versions``
(with ``report``) run before ``RegistryVersions.apply(..., evidence=...)``:

1. the report is one: the canonical text ``ledger simulate --json`` writes, or the answer of
   ``POST /v1/simulations`` with a digest that matches (``domain/registry_evidence.py``);
2. it was made for this registry file (its ``inputs.registry_sha256`` is the SHA-256 of the
   file's text);
3. it is intact: the simulation, re-run from the report's inputs (the same window of the log,
   pool, seed; the baseline the way in's own simulation takes: the process's registry file
   for the CLI, the registry the server runs for HTTP) gives the same report, byte for
   byte, so a number edited by hand is caught. The re-run reads the log only and costs what
   the simulation did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from execution_ledger.adapters.config_file import LoadedConfig
from execution_ledger.adapters.postgres.event_store import EventStore
from execution_ledger.adapters.simulation import (
    SimulationRequest,
    check_settings,
    simulate,
    text_sha256,
)
from execution_ledger.domain.errors import InvalidQuery
from execution_ledger.domain.registry import Registry
from execution_ledger.domain.registry_evidence import (
    EvidenceRefused,
    answered_report,
    canonical_report,
    check_made_for,
    evidence_of,
)
from execution_ledger.domain.simulation.report import Report


def checked_evidence(
    store: EventStore,
    offered: str | Mapping[str, Any],
    registry_text: str,
    config: LoadedConfig,
    baseline: Registry | None,
) -> dict[str, Any]:
    """The evidence ``offered`` (a report's text, or a ``POST /v1/simulations`` answer) gives for
    ``config`` (the registry file ``registry_text``), or ``EvidenceRefused`` saying why it
    is none."""
    report = canonical_report(offered) if isinstance(offered, str) else answered_report(offered)
    check_made_for(report, text_sha256(registry_text))
    rerun = reproduce(store, report, config.registry, baseline)
    if rerun.digest != report.digest:
        raise EvidenceRefused(
            f"the report does not match a re-run of its simulation (report sha256 "
            f"{report.digest}, re-run {rerun.digest}): it was edited by hand, or the log's "
            "window or this deployment's registry file (the baseline) changed since"
        )
    return evidence_of(report)


def reproduce(
    store: EventStore, report: Report, registry: Registry, baseline: Registry | None
) -> Report:
    """The report a re-run of ``report``'s simulation gives, its inputs named as the
    original's (the window pinned to the positions it covered)."""
    inputs = report.data["inputs"]
    try:
        request = _request_of(inputs, registry)
    except (KeyError, TypeError, ValueError, InvalidQuery) as error:
        raise EvidenceRefused(f"the report's inputs cannot be re-run: {error!r}") from None
    rerun = simulate(store, request, baseline=baseline)
    named = {**rerun.data["inputs"], "until_position": inputs.get("until_position")}
    return Report({**rerun.data, "inputs": named})


def _request_of(inputs: dict[str, Any], registry: Registry) -> SimulationRequest:
    settings = check_settings(
        int(inputs["workers"]), int(inputs["concurrency"]), int(inputs["seed"])
    )
    calibrated = bool(inputs["calibrated"])
    if not calibrated:
        settings = replace(
            settings,
            start_latency=float(inputs["start_latency_ms"]) / 1000,
            hop_latency=float(inputs["hop_latency_ms"]) / 1000,
        )
    return SimulationRequest(
        registry=registry,
        registry_text_sha256=str(inputs["registry_sha256"]),
        registry_source=str(inputs["registry_source"]),
        since=_moment(inputs["since"]),
        until=_moment(inputs["until"]),
        until_position=int(inputs["last_position"]),
        settings=settings,
        calibrate=calibrated,
    )


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
