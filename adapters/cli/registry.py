"""``ledger registry history|show N|diff A B|apply FILE|propose FILE``: the registry versions
recorded in the log, what each changed, and recording a new one (as the local admin: the CLI
reaches the database itself), with a simulation report as its evidence for ``propose``
(``adapters/cli/registry_propose.py``). Running nodes take a recorded version within a few
seconds."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execution_ledger.adapters.cli.registry_propose import add_propose_parser
from execution_ledger.domain.errors import InvalidQuery

if TYPE_CHECKING:  # the runtime and the renderer load only when the command runs
    from execution_ledger.adapters.registry_versions import ApplyOutcome, RegistryVersion
    from execution_ledger.adapters.runtime import Runtime

DESCRIPTION = """\
The registry (task types, queues, lanes, roles, schedules, ...) a deployment runs on is
recorded in the log as numbered versions (RegistryChanged). A node records its own file at
its first start, or when the file is new; `apply` records a file from here. Nodes follow
the latest version without a restart. A change that would break queued or running work (a
type or queue removed that still has live tasks, a schema their args no longer satisfy) is
refused with the reasons unless --force. `propose` records a file with the report of
`ledger simulate --json` made for it as evidence, once checked and confirmed.
"""


def add_registry_parser(commands: Any) -> argparse.ArgumentParser:
    registry: argparse.ArgumentParser = commands.add_parser(
        "registry",
        help="registry versions: history, show, diff, apply or propose a new file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = registry.add_subparsers(dest="action", required=True, metavar="ACTION")
    history = actions.add_parser("history", help="every recorded version, newest first")
    history.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="one version: who, when, its document and diff")
    show.add_argument("version", type=_version_number, help="version number (see history)")
    show.add_argument("--json", action="store_true", help="print JSON")
    diff = actions.add_parser("diff", help="what changed from version A to version B")
    diff.add_argument("a", type=_version_number, help="the version to compare from")
    diff.add_argument("b", type=_version_number, help="the version to compare to")
    diff.add_argument("--json", action="store_true", help="print JSON")
    apply = actions.add_parser(
        "apply", help="record a configuration file's registry as the next version"
    )
    apply.add_argument("file", type=Path, help="the TOML configuration file")
    apply.add_argument(
        "--force",
        action="store_true",
        help="record it even if it would break queued or running work (recorded as forced)",
    )
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would change and be refused; record nothing",
    )
    apply.add_argument(
        "--by", default=None, help="who applies it, as recorded (default: cli:<your user name>)"
    )
    apply.add_argument("--json", action="store_true", help="print JSON")
    add_propose_parser(actions)
    return registry


def _version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version is a whole number from 1, not {text!r}")
    return int(text)


def cmd_registry(rt: Runtime, options: argparse.Namespace) -> int:
    from execution_ledger.adapters.registry_follower import registry_versions

    versions = registry_versions(rt)
    if options.action == "history":
        _history(versions.history(), options.json)
    elif options.action == "show":
        _show(versions.version(options.version), options.json)
    elif options.action == "diff":
        _diff(versions.version(options.a), versions.version(options.b), options.json)
    elif options.action == "propose":
        from execution_ledger.adapters.cli.registry_propose import cmd_propose

        return cmd_propose(rt, options)
    else:
        return _apply(rt, options)
    return 0


def _history(history: list[RegistryVersion], as_json: bool) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.registry_versions import version_json

    if as_json:
        print(render.to_json([version_json(v) for v in reversed(history)]))
        return
    if not history:
        print("no registry version recorded yet (a node records its file at its first start)")
        return
    for version in reversed(history):
        summary = version_json(version)["summary"]
        counts = f"+{summary['added']} -{summary['removed']} ~{summary['changed']}"
        forced = "  FORCED" if version.forced else ""
        evidence = "  EVIDENCE" if version.evidence else ""
        print(
            f"{version.version:>4}  {version.at:%Y-%m-%d %H:%M:%S}  {version.by}  "
            f"{counts}  {version.source}{forced}{evidence}"
        )


def _show(version: RegistryVersion, as_json: bool) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.registry_versions import version_json

    shown = version_json(version, whole=True)
    if as_json:
        print(render.to_json(shown))
        return
    print(f"version {version.version}  {version.digest}")
    print(f"recorded {version.at:%Y-%m-%d %H:%M:%S %Z} by {version.by} from {version.source}")
    if version.forced:
        print("forced past refusals")
    if version.evidence:
        from execution_ledger.domain.registry_evidence import headline_lines

        print("\n".join(headline_lines(version.evidence)))
    print("changes from the version before:")
    print_diff(version.diff)
    print("document:")
    print(render.to_json(version.document))


def _diff(a: RegistryVersion, b: RegistryVersion, as_json: bool) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.domain.registry_diff import diff_documents

    diff = diff_documents(a.document, b.document)
    if as_json:
        print(render.to_json({"from": a.version, "to": b.version, "diff": diff}))
        return
    print(f"from version {a.version} to version {b.version}:")
    print_diff(diff)


def print_diff(diff: list[dict[str, Any]]) -> None:
    from execution_ledger.adapters.cli import render
    from execution_ledger.domain.registry_diff import path_text

    if not diff:
        print("  (no change)")
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for change in diff:
        line = f"  {marks[change['op']]} {path_text(change['path'])}"
        if change["op"] == "changed":
            line += (
                f": {render.compact_json(change['old'])} -> {render.compact_json(change['new'])}"
            )
        elif change["op"] == "added":
            line += f" = {render.compact_json(change['new'])}"
        print(line)


def _apply(rt: Runtime, options: argparse.Namespace) -> int:
    from execution_ledger.adapters.cli import render
    from execution_ledger.adapters.config_file import load_config
    from execution_ledger.adapters.registry_follower import registry_versions
    from execution_ledger.adapters.registry_versions import outcome_json
    from execution_ledger.domain.registry_change import RegistryChangeRefused

    config = load_config(options.file)
    by = options.by or f"cli:{getpass.getuser()}"
    if not by.strip():
        raise InvalidQuery("--by may not be empty")
    try:
        outcome = registry_versions(rt).apply(
            config, by, force=options.force, dry_run=options.dry_run
        )
    except RegistryChangeRefused as refused:
        print("error: refused: the change would break work in flight:", file=sys.stderr)
        for reason in refused.reasons:
            print(f"  - {reason}", file=sys.stderr)
        print("(--force records it anyway; --dry-run shows the diff)", file=sys.stderr)
        return 2
    if options.json:
        print(render.to_json(outcome_json(outcome)))
    else:
        _print_outcome(outcome)
    return 0


def _print_outcome(outcome: ApplyOutcome) -> None:
    if outcome.dry_run:
        if not outcome.diff:
            print(f"no change: the registry is version {outcome.version}")
            return
        verdict = "would be refused" if outcome.reasons else "would be recorded"
        forced = " (forced)" if outcome.reasons and outcome.forced else ""
        print(f"dry run: version {outcome.version + 1} {verdict}{forced}")
    elif not outcome.recorded:
        print(f"no change: the registry is already version {outcome.version}")
        return
    else:
        forced = " (forced past refusals)" if outcome.forced else ""
        print(f"recorded registry version {outcome.version}{forced}")
    for reason in outcome.reasons:
        print(f"  refusal: {reason}")
    print_diff(outcome.diff)
