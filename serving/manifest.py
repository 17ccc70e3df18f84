"""Model set manifests: the sha256 of every file of a version, its metrics and provenance.

`recommender/N/manifest.json` ties a model set version's parts together; it is written
last when a version is published, so a version without one is an unfinished publish.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.contract import ENSEMBLE_NAME, METRICS_FILE, STAGE_MODEL_NAMES
from recsys.durable_files import write_durably
from recsys.settings import PROJECT_ROOT, Settings

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# Bytecode caches are derived from model.py (checked-hash: they run only if they match it)
# and the Python backend may write them: not content.
IGNORED_PARTS = frozenset({"__pycache__"})


class VersionError(RuntimeError):
    """A version refused or an operation that cannot go ahead; the message says why."""


def refused(version: int, why: str, problems: list[str]) -> VersionError:
    return VersionError(f"version {version} is refused: {why}:\n  - " + "\n  - ".join(problems))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, keyed by relative path."""
    hashes = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not IGNORED_PARTS & set(relative.parts):
            hashes[relative.as_posix()] = sha256_file(path)
    return hashes


def _fingerprint(files: dict[str, dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_json(path: Path, payload: object) -> None:
    # Durable, not only atomic: promote and prune trust a version's manifest after a crash.
    write_durably(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def provenance(
    artifacts_dir: Path, settings: Settings | None, data_dir: Path | None
) -> dict[str, Any]:
    """Where a version came from: code, configuration, data and artefacts."""
    config_hash = None
    if settings is not None:
        # The sections that shape the trained models; ports and serving knobs do not.
        shaping = settings.model_dump(mode="json", include={"data", "workflows", "training"})
        config_hash = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
    if data_dir is None and (artifacts_dir / "data").is_dir():
        data_dir = artifacts_dir / "data"
    status = _git("status", "--porcelain")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "config_sha256": config_hash,
        "artifacts_dir": str(artifacts_dir.resolve()),
        "data_dir": None if data_dir is None else str(data_dir.resolve()),
    }


def manifest_path(repository: Path, version: int) -> Path:
    return repository / ENSEMBLE_NAME / str(version) / MANIFEST_FILE


def write_manifest(
    repository: Path,
    version: int,
    artifacts_dir: Path,
    settings: Settings | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Hash version `version` as it is on disk now and record its metrics and provenance."""
    metrics_file = artifacts_dir / "models" / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    files = {name: hash_tree(repository / name / str(version)) for name in STAGE_MODEL_NAMES}
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": _fingerprint(files),
        "metrics": metrics,
        "provenance": provenance(artifacts_dir, settings, data_dir),
        "files": files,
    }
    write_json(manifest_path(repository, version), manifest)
    return manifest


def read_manifest(repository: Path, version: int) -> dict[str, Any]:
    path = manifest_path(repository, version)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise VersionError(
            f"version {version} has no manifest ({path}): not published, or publishing "
            "did not finish"
        ) from exc
    except json.JSONDecodeError as exc:
        raise VersionError(f"version {version}'s manifest {path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != version:
        raise VersionError(
            f"{path} is not a format-{MANIFEST_FORMAT} manifest of version {version}"
        )
    return manifest


def verify_files(repository: Path, version: int) -> dict[str, Any]:
    """The manifest, if every file of every stage is exactly what it lists; else refused."""
    manifest = read_manifest(repository, version)
    listed: dict[str, dict[str, str]] = manifest.get("files", {})
    problems = []
    if _fingerprint(listed) != manifest.get("fingerprint"):
        problems.append("the manifest's file list does not match its fingerprint (edited?)")
    if others := sorted(listed.keys() - set(STAGE_MODEL_NAMES)):
        # Model sets built before item features moved inside ranking (five stages).
        problems.append(
            f"it was built with stages {others} that this code does not serve (it serves "
            f"{list(STAGE_MODEL_NAMES)}): build and publish it again"
        )
    for name in STAGE_MODEL_NAMES:
        version_dir = repository / name / str(version)
        expected = listed.get(name)
        if expected is None:
            problems.append(f"the manifest lists no files for {name!r}")
            continue
        if not version_dir.is_dir():
            problems.append(f"{name}/{version}/ is missing")
            continue
        actual = hash_tree(version_dir)
        problems += [f"{name}/{version}/{p} is missing" for p in sorted(expected.keys() - actual)]
        problems += [
            f"{name}/{version}/{p} is not in the manifest" for p in sorted(actual.keys() - expected)
        ]
        problems += [
            f"{name}/{version}/{p} has sha256 {actual[p][:12]}…, the manifest says "
            f"{expected[p][:12]}…"
            for p in sorted(expected.keys() & actual.keys())
            if expected[p] != actual[p]
        ]
    if problems:
        raise refused(version, "its files do not match its manifest", problems)
    return manifest
