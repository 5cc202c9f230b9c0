"""``ledger registry propose NEW.toml --report REPORT.json``: record a registry change with
the simulation report that justified it as its evidence.

The report (``ledger simulate --registry NEW.toml --json --out REPORT.json``) is checked
(``adapters/registry_proposal.py``: canonical, made for this very file, reproduced by a
re-run), its headline numbers and the diff from the current version are shown, and once
confirmed (``--yes``, or ``y`` at a terminal) the change is recorded as ``apply`` records
one, refusals and ``--force`` alike, with the evidence in the ``RegistryChanged`` event.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execution_ledger.domain.errors import InvalidQuery

if TYPE_CHECKING:
    from execution_ledger.adapters.config_file import LoadedConfig
    from execution_ledger.adapters.registry_versions import RegistryVersions
    from execution_ledger.adapters.runtime import Runtime

HELP = "record a registry file as the next version, with a simulation report as evidence"
EPILOG = """example:
  ledger simulate --registry new.toml --since 24h --json --out report.json
  ledger registry propose new.toml --report report.json
"""


def add_propose_parser(actions: Any) -> None:
    propose = actions.add_parser(
        "propose",
        help=HELP,
        description=HELP + ". The report must be the one `ledger simulate --json` wrote "
        "for this file; it is re-run to check it, then the change is recorded with its "
        "digest, inputs and headline numbers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    propose.add_argument("file", type=Path, help="the TOML configuration file proposed")
    propose.add_argument(
        "--report",
        type=Path,
        required=True,
        help="the report `ledger simulate --registry FILE --json --out REPORT` wrote",
    )
    propose.add_argument("--yes", action="store_true", help="record it without asking")
    propose.add_argument(
        "--force",
        action="store_true",
        help="record it even if it would break queued or running work (recorded as forced)",
    )
    propose.add_argument(
        "--by", default=None, help="who proposes it, as recorded (default: cli:<user name>)"
    )


def cmd_propose(rt: Runtime, options: argparse.Namespace) -> int:
    from execution_ledger.adapters.cli.registry import print_diff
    from execution_ledger.adapters.config_file import load_config
    from execution_ledger.adapters.registry_follower import registry_versions
    from execution_ledger.adapters.registry_proposal import checked_evidence
    from execution_ledger.domain.registry_evidence import headline_lines

    by = options.by or f"cli:{getpass.getuser()}"
    if not by.strip():
        raise InvalidQuery("--by may not be empty")
    registry_text = _read(options.file, "the registry file")
    report_text = _read(options.report, "--report")
    config = load_config(options.file)
    evidence = checked_evidence(
        rt.store, report_text, registry_text, config, baseline=rt.registry
    )
    versions = registry_versions(rt)
    preview = versions.apply(config, by, force=options.force, dry_run=True, evidence=evidence)
    if not preview.diff:
        print(f"no change: the registry is already version {preview.version}")
        return 0
    print("\n".join(headline_lines(evidence)))
    print(f"version {preview.version + 1} would change, from version {preview.version}:")
    print_diff(preview.diff)
    if preview.reasons and not options.force:
        return _refused(preview.reasons)
    for reason in preview.reasons:
        print(f"  refusal: {reason} (forced)")
    if not options.yes and not _confirmed(preview.version + 1):
        print("not recorded")
        return 1
    return _record(versions, config, by, options.force, evidence)


def _record(
    versions: RegistryVersions,
    config: LoadedConfig,
    by: str,
    force: bool,
    evidence: dict[str, Any],
) -> int:
    from execution_ledger.domain.registry_change import RegistryChangeRefused

    try:
        outcome = versions.apply(config, by, force=force, evidence=evidence)
    except RegistryChangeRefused as refused:  # live work changed while we asked
        return _refused(refused.reasons)
    if not outcome.recorded:
        print(f"no change: the registry is already version {outcome.version}")
        return 0
    forced = " (forced past refusals)" if outcome.forced else ""
    print(f"recorded registry version {outcome.version}{forced} with its evidence")
    return 0


def _refused(reasons: list[str]) -> int:
    print("error: refused: the change would break work in flight:", file=sys.stderr)
    for reason in reasons:
        print(f"  - {reason}", file=sys.stderr)
    print("(--force records it anyway); nothing recorded", file=sys.stderr)
    return 2


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise InvalidQuery(f"{what} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidQuery(f"{what} {path}: not text") from None


def _confirmed(version: int) -> bool:
    if not sys.stdin.isatty():
        raise InvalidQuery(f"this would record registry version {version}; give --yes to confirm")
    answer = input(f"record registry version {version} with this evidence? [y/N] ")
    return answer.strip().lower() in ("y", "yes")
