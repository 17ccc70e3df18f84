"""Repository state: what serves, which versions exist, the history, the journal, the lock.

The ensemble config on disk says what a (re)started server serves; `versions.json` records
every publish, promote, rollback, refusal and prune, and journals the operation under way
(`pending`) so that a command killed half-way is finished or undone by the next one (see
docs/versioning.md, "Interrupted commands"); `.versions.lock` lets one versions command (or
the launcher's stub watchdog) at a time change the repository.
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
from serving.manifest import VersionError
from serving.repository import read_config
from serving.versions.durable import Fault, write_durably

STATE_FILE = "versions.json"
LOCK_FILE = ".versions.lock"

# How publish, prune, promote and rollback report progress.
Log = Callable[[str], None]
# Journaled operations that change what a server loads: only the same command may go on.
SWITCHES = ("promote", "rollback")


class LockBusyError(VersionError):
    """Another versions command (or the stub watchdog) holds the repository lock."""


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


def _state(repository: Path) -> dict[str, Any]:
    path = repository / STATE_FILE
    if not path.exists():
        return {"history": []}
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        if not isinstance(state["history"], list):
            raise TypeError("'history' is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VersionError(f"{path} is not a versions history: {exc}") from exc
    return state


def _write_state(repository: Path, state: dict[str, Any], fault: Fault | None = None) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    write_durably(repository / STATE_FILE, text, fault)


def history(repository: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = _state(repository)["history"]
    return entries


def pending(repository: Path) -> dict[str, Any] | None:
    """The journaled operation a killed command left unfinished, if any."""
    entry: dict[str, Any] | None = _state(repository).get("pending")
    return entry


def set_pending(repository: Path, operation: dict[str, Any] | None) -> None:
    """Journal `operation` before changing anything it would leave half-done (None clears)."""
    state = _state(repository)
    if operation is None:
        state.pop("pending", None)
    else:
        state["pending"] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **operation}
    _write_state(repository, state)


def record(
    repository: Path,
    action: str,
    version: int | None,
    fault: Fault | None = None,
    **details: Any,
) -> None:
    """Append a history entry and clear the journal in one durable write: a command that
    dies before it has finished never leaves history claiming it did, nor the reverse."""
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": action,
        "version": version,
        **details,
    }
    state = _state(repository)
    state.pop("pending", None)
    state["history"] = [*state["history"], entry]
    _write_state(repository, state, fault)


def rollback_target(repository: Path, current: int | None = None, server: str | None = None) -> int:
    """The version that served before `current` (default: what the disk serves) was promoted
    or rolled back to; `server`'s own entries first (replicas sharing the repository each
    have theirs)."""
    if current is None:
        current = serving_version(repository)
    switches = [
        e for e in history(repository) if e["action"] in SWITCHES and e["version"] == current
    ]
    own = [e for e in switches if server is not None and e.get("server") == server]
    for entry in reversed(own or switches):
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
            raise LockBusyError(
                f"another versions command (or the launcher's stub watchdog) holds {path}"
            ) from exc
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
