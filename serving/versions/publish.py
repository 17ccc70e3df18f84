"""Publish a trained model set as the next version, describe the versions, prune old ones.

None of these loads anything on a server or changes a config: only promote and rollback
change what serves. Both journal what they are about to do (state.set_pending), so a
command killed half-way is undone (publish) or finished (prune) by the next one.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.contract import ENSEMBLE_NAME, METRICS_FILE, STAGE_MODEL_NAMES
from recsys.settings import Settings
from serving.manifest import (
    VersionError,
    manifest_path,
    read_manifest,
    refused,
    write_manifest,
)
from serving.repository import write_model_set
from serving.versions.compat import schema_problems
from serving.versions.durable import fsync_directory, fsync_tree
from serving.versions.faults import fault_point
from serving.versions.state import (
    SWITCHES,
    Log,
    configured_versions,
    history,
    pending,
    record,
    repository_lock,
    rollback_target,
    serving_version,
    set_pending,
    version_numbers,
)

DEFAULT_KEEP = 3


def publish(
    artifacts_dir: Path,
    repository: Path,
    settings: Settings,
    data_dir: Path | None = None,
    log: Log = print,
) -> int:
    """Write a trained model set as the next version, beside what serves; return its number."""
    if not (artifacts_dir / "models" / METRICS_FILE).exists():
        raise VersionError(
            f"{artifacts_dir / 'models' / METRICS_FILE} is missing: the promotion gate "
            "compares offline metrics, so a version without them is not published"
        )
    with repository_lock(repository):
        serving_version(repository)  # a repository that serves something, or refuse
        if (switch := recover_unfinished(repository, log)) is not None:
            raise VersionError(unfinished_switch(switch))
        previous = [e["version"] for e in history(repository) if e["version"] is not None]
        version = max([0, *version_numbers(repository), *previous]) + 1
        log(f"publishing {artifacts_dir} as version {version} ...")
        set_pending(repository, {"action": "publish", "version": version})
        fault_point("publish", "pending_written")
        try:
            written = write_model_set(artifacts_dir, repository, settings.serving, version)
            fault_point("publish", "copied", repository / "ranking" / str(version))
            problems = schema_problems(repository, version, settings.serving)
            if problems:
                raise refused(version, "its parts do not fit together", problems)
            # The manifest says "complete": every file it hashes must be on disk before it.
            for directory in written:
                fsync_tree(directory)
            manifest = write_manifest(repository, version, artifacts_dir, settings, data_dir)
            # serving.manifest writes it by rename without fsync: flush the file and the
            # rename here, before history says the version exists.
            fsync_tree(manifest_path(repository, version).parent)
            fault_point("publish", "manifest_written")
            record(
                repository,
                "publish",
                version,
                fault=("publish", "history_write"),
                fingerprint=manifest["fingerprint"],
            )
        except OSError as exc:
            _abandon(repository, version)
            raise VersionError(_write_failure(artifacts_dir, repository, version, exc)) from exc
        except BaseException:
            _abandon(repository, version)
            raise
        log(f"version {version} published ({len(written)} model directories)")
    return version


def _write_failure(artifacts_dir: Path, repository: Path, version: int, exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        why = f"the disk holding {repository} is full: No space left on device{where}"
    elif isinstance(exc, FileNotFoundError) and not exc.filename:
        why = str(exc)  # write_model_set's "artefact ... is missing"
    else:
        why = f"{exc.strerror or exc}{where}"
    return (
        f"cannot publish {artifacts_dir} as version {version}: {why}; nothing of version "
        f"{version} was kept"
    )


def _abandon(repository: Path, version: int) -> None:
    """Undo an unfinished publish: its files, then its journal entry."""
    _remove_version(repository, version)
    # On a full disk this write may fail too; the journal entry then stays and the next
    # versions command removes the (already removed) version again.
    with suppress(OSError):
        set_pending(repository, None)


def _remove_version(repository: Path, version: int) -> None:
    # The ensemble's directory (with the manifest) first: a version removed half-way is
    # then "incomplete", never a complete-looking version with files missing.
    for name in (ENSEMBLE_NAME, *STAGE_MODEL_NAMES):
        directory = repository / name / str(version)
        if directory.exists():
            shutil.rmtree(directory)
            fsync_directory(directory.parent)


def recover_unfinished(repository: Path, log: Log) -> dict[str, Any] | None:
    """Undo a killed publish, finish a killed prune; return a killed promote or rollback
    (only the same command may go on with it) or None."""
    operation = pending(repository)
    if operation is None:
        return None
    if operation["action"] == "publish":
        version = int(operation["version"])
        log(f"removing version {version}, left unfinished by an interrupted publish")
        _abandon(repository, version)
        return None
    if operation["action"] == "prune":
        log("finishing an interrupted prune")
        _remove_versions(repository, [int(v) for v in operation["removing"]], log)
        return None
    if operation["action"] in SWITCHES:
        return operation
    raise VersionError(f"{repository}/versions.json journals an unknown operation: {operation}")


def _remove_versions(repository: Path, doomed: list[int], log: Log) -> None:
    set_pending(repository, {"action": "prune", "removing": doomed})
    fault_point("prune", "pending_written")
    for version in doomed:
        _remove_version(repository, version)
        fault_point("prune", "removing")
    fault_point("prune", "removed")
    record(repository, "prune", None, removed=doomed)
    log(f"removed versions {doomed}")


def prune(repository: Path, keep: int = DEFAULT_KEEP, log: Log = print) -> list[int]:
    """Delete all but the `keep` newest versions, never the serving, previous or loaded ones."""
    if keep < 1:
        raise VersionError(f"--keep must be at least 1, got {keep}")
    with repository_lock(repository):
        unfinished = pending(repository)
        carried: list[int] = []
        if unfinished is not None and unfinished["action"] == "prune":
            carried = [int(v) for v in unfinished["removing"]]
        elif (switch := recover_unfinished(repository, log)) is not None:
            raise VersionError(unfinished_switch(switch))
        protected = {serving_version(repository), *configured_versions(repository)}
        with suppress(VersionError):  # nothing to roll back to: nothing extra to keep
            protected.add(rollback_target(repository))
        versions = version_numbers(repository)
        fresh = [v for v in versions if v not in {*versions[-keep:], *protected}]
        # A killed prune's versions are removed even if, half-removed, they now look newest.
        doomed = sorted({*carried, *fresh} - protected)
        if doomed:
            _remove_versions(repository, doomed, log)
        else:
            log("nothing to prune")
    return doomed


def unfinished_switch(operation: dict[str, Any]) -> str:
    """Why a command refuses to run beside a killed promote or rollback, and what to run."""
    return (
        f"an interrupted `{operation['action']} {operation['version']}` (on "
        f"{operation.get('server')}, version {operation['previous']} served before it) is "
        f"unfinished: run `{operation['action']}"
        f"{'' if operation['action'] == 'rollback' else ' ' + str(operation['version'])}` "
        "again first"
    )


@dataclass(frozen=True)
class VersionInfo:
    version: int
    status: str  # serving | previous | published | incomplete
    created_at: str | None = None
    git_commit: str | None = None
    fingerprint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def describe(repository: Path) -> list[VersionInfo]:
    current = serving_version(repository)
    try:
        previous: int | None = rollback_target(repository)
    except VersionError:
        previous = None
    infos = []
    for version in version_numbers(repository):
        try:
            manifest = read_manifest(repository, version)
        except VersionError:
            infos.append(VersionInfo(version, "incomplete"))
            continue
        status = {current: "serving", previous: "previous"}.get(version, "published")
        origin = manifest.get("provenance", {})
        infos.append(
            VersionInfo(
                version,
                status,
                manifest.get("created_at"),
                origin.get("git_commit"),
                manifest.get("fingerprint"),
                manifest.get("metrics", {}),
                origin,
            )
        )
    return infos
