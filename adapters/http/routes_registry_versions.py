"""Registry version routes: the recorded versions (what changed, when, by whom), one
version's document and diff, and applying a new registry (admin only).

``POST /v1/registry/versions`` takes the TOML text of a configuration file
(``{"toml": "...", "force": false, "dry_run": false}``): the same registry as the latest
records nothing (200, ``recorded: false``), a new one is recorded (201), one that would
break live work is refused with its reasons (409 ``registry_change_refused``) unless forced.
With ``"report"`` (the text ``ledger simulate --json`` wrote, or the answer of ``POST
/v1/simulations``, for this very TOML text) the change carries the report as its evidence,
once checked (``adapters/registry_proposal.py``; 422 ``evidence_refused`` otherwise,
nothing recorded).
Running nodes take a recorded version within a few seconds (``adapters/registry_follower.py``).
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from execution_ledger.adapters.config_file import parse_config
from execution_ledger.adapters.http import bodies, policy
from execution_ledger.adapters.http.auth import requester_of
from execution_ledger.adapters.http.context import ServerContext, context_of
from execution_ledger.adapters.http.openapi_registry_paths import APPLY_REQUEST
from execution_ledger.adapters.http.views import json_response
from execution_ledger.adapters.registry_follower import registry_versions
from execution_ledger.adapters.registry_proposal import checked_evidence
from execution_ledger.adapters.registry_versions import outcome_json, version_json
from execution_ledger.domain.errors import Forbidden, InvalidQuery
from execution_ledger.domain.submission import Requester


async def list_versions(request: web.Request) -> web.Response:
    ctx = context_of(request)
    history = await ctx.run(registry_versions(ctx.runtime).history)
    return json_response(
        {
            "versions": [version_json(v) for v in reversed(history)],
            "latest": history[-1].version if history else 0,
            "running_here": ctx.registry.version,
        }
    )


async def get_version(request: web.Request) -> web.Response:
    ctx = context_of(request)
    text = request.match_info["number"]
    if not text.isdigit() or int(text) < 1:
        raise InvalidQuery(f"a registry version is a whole number from 1, not {text!r}")
    version = await ctx.run(registry_versions(ctx.runtime).version, int(text))
    return json_response(version_json(version, whole=True))


async def apply_version(request: web.Request) -> web.Response:
    ctx = context_of(request)
    requester = requester_of(request)
    _check_admin(ctx, requester)
    body = bodies.validated(await bodies.read_json(request), APPLY_REQUEST, "the body")
    config = await ctx.run(parse_config, body["toml"], "request body")  # imports callables
    config = dataclasses.replace(config, source="POST /v1/registry/versions")
    evidence = None
    if "report" in body:  # re-runs the report's simulation: off the loop
        evidence = await ctx.run(
            checked_evidence,
            ctx.runtime.store,
            body["report"],
            body["toml"],
            config,
            ctx.registry,  # the baseline, as POST /v1/simulations takes it
        )
    outcome = await ctx.run(
        registry_versions(ctx.runtime).apply,
        config,
        requester.principal,
        force=body.get("force", False),
        dry_run=body.get("dry_run", False),
        evidence=evidence,
    )
    return json_response(outcome_json(outcome), status=201 if outcome.recorded else 200)


def _check_admin(ctx: ServerContext, requester: Requester) -> None:
    role = policy.role_of(ctx.registry, requester)
    if role.name != "admin":
        raise Forbidden(f"role {role.name!r} may not apply a registry (admin only)")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/registry/versions", list_versions, name="registry.versions"),
        web.get("/v1/registry/versions/{number}", get_version, name="registry.version"),
        web.post("/v1/registry/versions", apply_version, name="registry.apply"),
    ]
