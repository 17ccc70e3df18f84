"""Repository state: what serves, which versions exist, the history, and the lock.

The ensemble config on disk says what serves; `versions.json` records every publish,
promote, rollback, refusal and prune; `.versions.lock` lets one versions command run at a
time per repository.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.contract import ENSEMBLE_NAME, MODEL_LOAD_ORDER
from serving.manifest import VersionError, write_json
from serving.repository import read_config

STATE_FILE = "versions.json"
LOCK_FILE = ".versions.lock"

# How publish, prune, promote and rollback report progress.
Log = Callable[[str], None]


def serving_version(repository: Path) -> int:
    """The version the ensemble config on disk pins every step to."""
    try:
        config = read_config(repository / ENSEMBLE_NAME)
    except FileNotFoundError as exc:
        raise VersionError(
            f"{repository} holds no ensemble config: build one first (make repository)"
        ) from exc
    pinned = {step.model_version for step in config.ensemble_scheduling.step}
    if len(pinned) != 1 or min(pinned) < 1:
        raise VersionError(f"the ensemble's steps are pinned to {sorted(pinned)}, not one version")
    return pinned.pop()


def version_numbers(repository: Path) -> list[int]:
    """Every version with a directory under any model, complete or not."""
    numbers: set[int] = set()
    for name in MODEL_LOAD_ORDER:
        model_dir = repository / name
        if model_dir.is_dir():
            numbers |= {int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    return sorted(numbers)


def history(repository: Path) -> list[dict[str, Any]]:
    path = repository / STATE_FILE
    if not path.exists():
        return []
    try:
        entries: list[dict[str, Any]] = json.loads(path.read_text())["history"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VersionError(f"{path} is not a versions history: {exc}") from exc
    return entries


def record(repository: Path, action: str, version: int | None, **details: Any) -> None:
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": action,
        "version": version,
        **details,
    }
    write_json(repository / STATE_FILE, {"history": [*history(repository), entry]})


def rollback_target(repository: Path) -> int:
    """The version that served before the serving one was promoted (or rolled back to)."""
    current = serving_version(repository)
    for entry in reversed(history(repository)):
        if entry["action"] in ("promote", "rollback") and entry["version"] == current:
            return int(entry["previous"])
    raise VersionError(
        f"no record of what served before version {current}: promote a version by number"
    )


@contextmanager
def repository_lock(repository: Path) -> Iterator[None]:
    """One publish/promote/rollback/prune at a time per repository."""
    path = repository / LOCK_FILE
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise VersionError(f"another versions command is running on {repository}") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configured_versions(repository: Path) -> set[int]:
    """Versions any config on disk loads (more than one while a promotion is under way)."""
    versions: set[int] = set()
    for name in MODEL_LOAD_ORDER:
        if (repository / name / "config.pbtxt").exists():
            versions |= set(read_config(repository / name).version_policy.specific.versions)
    return versions
