"""Publish, list, verify, promote, roll back and prune model set versions.

    python -m serving.versions_cli publish --artifacts artifacts [--data-dir DIR]
    python -m serving.versions_cli list [--url GRPC_HOST:PORT] [--json]
    python -m serving.versions_cli verify 2
    python -m serving.versions_cli promote 2 [--tolerance 0.01 | --skip-metrics-gate]
    python -m serving.versions_cli rollback
    python -m serving.versions_cli prune [--keep 3]

promote and rollback switch a running tritonserver (explicit model control) through its
model-repository API: the admin key comes from $TRITON_ADMIN_KEY or --admin-key-file
(`make serve` prints it). Exit code 0 on success, 1 when a version is refused or an
operation fails (the message says why), 2 on a usage error. A command that was killed
(or hit a full disk) is finished or undone by running the same command again.
$RECSYS_FAULT=<command>:<step>[:enospc] injects a crash at a step (tests; see
docs/versioning.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from tritonclient.utils import InferenceServerException

from recsys.settings import PROJECT_ROOT, Settings, SettingsError, load_settings
from serving import versions
from serving.versions import TritonAdmin, VersionError

DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
SHOWN_METRICS = (
    ("served_recall_at_k", "recall"),
    ("served_ndcg_at_k", "ndcg"),
    ("ranking_auc", "auc"),
    ("ranking_logloss", "logloss"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.versions_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--config", type=Path, default=None, help="settings YAML")
    commands = parser.add_subparsers(dest="command", required=True)

    publish = commands.add_parser("publish", help="write trained artefacts as the next version")
    publish.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    publish.add_argument("--data-dir", type=Path, default=None, help="recorded as provenance")

    listing = commands.add_parser("list", help="versions with metrics and provenance")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_server_options(listing, required=False)

    verify = commands.add_parser("verify", help="check a version's files and fit (offline)")
    verify.add_argument("version", type=int)

    promote = commands.add_parser("promote", help="gate and switch the live server to a version")
    promote.add_argument("version", type=int)
    gate = promote.add_mutually_exclusive_group()
    gate.add_argument(
        "--tolerance",
        type=float,
        default=versions.DEFAULT_TOLERANCE,
        help="how much worse (absolute) each offline metric may be than the serving "
        "version's (default %(default)s)",
    )
    gate.add_argument(
        "--skip-metrics-gate",
        action="store_true",
        help="skip the metrics comparison only (recorded in versions.json); files, fit and "
        "smoke checks still run",
    )
    _add_server_options(promote, required=True)

    rollback = commands.add_parser("rollback", help="switch back to the previous version")
    _add_server_options(rollback, required=True)

    prune = commands.add_parser("prune", help="delete old versions from disk")
    prune.add_argument("--keep", type=int, default=versions.DEFAULT_KEEP)
    return parser


def _add_server_options(command: argparse.ArgumentParser, required: bool) -> None:
    where = "" if required else " (with it, list shows what the server has loaded)"
    command.add_argument(
        "--url",
        default=None,
        help=f"tritonserver gRPC host:port; default from the settings{where}",
    )
    command.add_argument(
        "--admin-key-file",
        type=Path,
        default=None,
        help="file holding the model-repository API key (default: $TRITON_ADMIN_KEY)",
    )


def _admin(args: argparse.Namespace, settings: Settings) -> TritonAdmin:
    server = settings.server
    url = args.url or f"{server.bind_address}:{server.grpc_port}"
    if args.admin_key_file is not None:
        key = args.admin_key_file.read_text().strip()
    else:
        key = os.environ.get("TRITON_ADMIN_KEY", "")
    if not key:
        raise VersionError(
            "no admin key: set $TRITON_ADMIN_KEY or pass --admin-key-file (the server "
            "restricts load/unload to callers with its key; `make serve` prints it)"
        )
    return TritonAdmin(url, key, server.restricted_api_header)


def _print_list(args: argparse.Namespace, settings: Settings) -> None:
    infos = versions.describe(args.repository)
    live: dict[int, list[str]] | None = None
    if args.url is not None or args.admin_key_file is not None:
        live = versions.live_versions(_admin(args, settings))
    if args.json:
        payload = {"versions": [asdict(info) for info in infos], "history": []}
        payload["history"] = versions.history(args.repository)
        payload["pending"] = versions.pending(args.repository)
        if live is not None:
            payload["loaded"] = {str(v): names for v, names in live.items()}
        print(json.dumps(payload, indent=2))
        return
    header = f"{'version':>7}  {'status':<10}  {'created (UTC)':<25}  {'commit':<8}  "
    header += "  ".join(f"{short:>7}" for _, short in SHOWN_METRICS)
    print(header + ("  loaded on server" if live is not None else ""))
    for info in infos:
        metrics = "  ".join(
            f"{info.metrics[name]:>7.4f}" if name in info.metrics else f"{'-':>7}"
            for name, _ in SHOWN_METRICS
        )
        line = (
            f"{info.version:>7}  {info.status:<10}  {info.created_at or '-':<25}  "
            f"{(info.git_commit or '-')[:8]:<8}  {metrics}"
        )
        if live is not None:
            line += f"  {', '.join(live.get(info.version, [])) or '-'}"
        print(line)


def run(args: argparse.Namespace) -> int:
    versions.check_fault_environment()
    settings = load_settings(args.config)
    repository: Path = args.repository
    if not repository.is_dir():
        raise VersionError(f"{repository} is not a directory: run `make repository` first")
    if args.command == "publish":
        version = versions.publish(args.artifacts, repository, settings, args.data_dir)
        print(f"next: python -m serving.versions_cli promote {version}")
    elif args.command == "list":
        _print_list(args, settings)
    elif args.command == "verify":
        versions.check_version(repository, args.version, settings.serving)
        print(f"version {args.version}: files match the manifest and the parts fit together")
    elif args.command == "promote":
        tolerance = None if args.skip_metrics_gate else args.tolerance
        admin = _admin(args, settings)
        versions.promote(repository, args.version, admin, settings.serving, tolerance)
    elif args.command == "rollback":
        versions.rollback(repository, _admin(args, settings), settings.serving)
    elif args.command == "prune":
        versions.prune(repository, args.keep)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (
        VersionError,
        SettingsError,
        InferenceServerException,
        OSError,
        versions.FaultSpecError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
