"""Publish a trained model set as the next version, describe the versions, prune old ones.

None of these loads anything on a server or changes a config: only promote and rollback
change what serves.
"""

from __future__ import annotations

import shutil
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.contract import METRICS_FILE, MODEL_LOAD_ORDER
from recsys.settings import Settings
from serving.manifest import VersionError, read_manifest, refused, write_manifest
from serving.repository import write_model_set
from serving.versions.compat import schema_problems
from serving.versions.state import (
    Log,
    configured_versions,
    history,
    record,
    repository_lock,
    rollback_target,
    serving_version,
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
        previous = [e["version"] for e in history(repository) if e["version"] is not None]
        version = max([0, *version_numbers(repository), *previous]) + 1
        log(f"publishing {artifacts_dir} as version {version} ...")
        try:
            written = write_model_set(artifacts_dir, repository, settings.serving, version)
        except FileNotFoundError as exc:
            _remove_version(repository, version)
            raise VersionError(f"cannot publish {artifacts_dir}: {exc}") from exc
        try:
            problems = schema_problems(repository, version, settings.serving)
            if problems:
                raise refused(version, "its parts do not fit together", problems)
            # Written last: a version without a manifest is an unfinished publish.
            manifest = write_manifest(repository, version, artifacts_dir, settings, data_dir)
        except BaseException:
            _remove_version(repository, version)
            raise
        record(repository, "publish", version, fingerprint=manifest["fingerprint"])
        log(f"version {version} published ({len(written)} model directories)")
    return version


def _remove_version(repository: Path, version: int) -> None:
    for name in MODEL_LOAD_ORDER:
        shutil.rmtree(repository / name / str(version), ignore_errors=True)


def prune(repository: Path, keep: int = DEFAULT_KEEP, log: Log = print) -> list[int]:
    """Delete all but the `keep` newest versions, never the serving, previous or loaded ones."""
    if keep < 1:
        raise VersionError(f"--keep must be at least 1, got {keep}")
    with repository_lock(repository):
        protected = {serving_version(repository), *configured_versions(repository)}
        with suppress(VersionError):  # nothing to roll back to: nothing extra to keep
            protected.add(rollback_target(repository))
        versions = version_numbers(repository)
        doomed = [v for v in versions if v not in {*versions[-keep:], *protected}]
        for version in doomed:
            _remove_version(repository, version)
        if doomed:
            record(repository, "prune", None, removed=doomed)
        log(f"removed versions {doomed}" if doomed else "nothing to prune")
    return doomed


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
