"""Switch the live server to a version (promote) or back (rollback) without failing a request.

The steps (widen, smoke, switch, narrow) are described in serving/versions/__init__.py and
docs/versioning.md. Each switch is journaled in versions.json before its first change and
recorded (journal cleared) in one durable write once the ensemble answers with the target:
a killed promote or rollback is resumed, from the top with every check and the smoke test,
by running the same command again.

What serves is asked of the server (its loaded ensemble), not read from the disk: several
servers (replicas) may share one repository, and after one was switched the disk already
names the target while the others still serve the old version.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from recsys.contract import ENSEMBLE_NAME, STAGE_MODEL_NAMES
from recsys.schema import differences
from recsys.settings import ServingSettings
from serving.manifest import VersionError, read_manifest, refused
from serving.repository import (
    build_ensemble_config,
    stage_configs,
    version_interfaces,
    version_schema,
)
from serving.versions.admin import LIVE_STATES, TritonAdmin
from serving.versions.compat import check_version, side_by_side_problems
from serving.versions.durable import Fault, write_config_durably
from serving.versions.faults import fault_point
from serving.versions.gate import DEFAULT_TOLERANCE, metrics_gate
from serving.versions.publish import recover_unfinished, unfinished_switch
from serving.versions.smoke import smoke_query
from serving.versions.state import (
    SWITCHES,
    Log,
    configured_versions,
    history,
    record,
    repository_lock,
    rollback_target,
    serving_version,
    set_pending,
)

# Errors of a load, a smoke query or a config write: the switch is undone.
SWITCH_ERRORS = (VersionError, InferenceServerException, OSError)


def _load_all(
    admin: TritonAdmin,
    repository: Path,
    configs: dict[str, mc.ModelConfig],
    fault: Fault | None = None,
) -> None:
    """Write each config to disk (durably), then load those models concurrently.

    Triton 2.51 loads different models concurrently: five stages take about 30 s on two
    cores instead of 50 s one after another, and requests kept flowing in both cases.
    """
    for name, config in configs.items():
        write_config_durably(config, repository / name)
    if fault is not None:
        fault_point(*fault)
    with ThreadPoolExecutor(max_workers=len(configs)) as pool:
        futures = {name: pool.submit(admin.load, name, config) for name, config in configs.items()}
    failures = [f"{name}: {f.exception()}" for name, f in futures.items() if f.exception()]
    if failures:
        raise VersionError("loading failed:\n  - " + "\n  - ".join(failures))


def _wait_drained(admin: TritonAdmin, name: str, version: int, timeout_s: float = 60.0) -> bool:
    """Wait until `name` `version` has finished its in-flight requests and unloaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if admin.states().get((name, version)) not in LIVE_STATES:
            return True
        time.sleep(0.2)
    return False


def server_serving(admin: TritonAdmin, repository: Path) -> int:
    """The version the server's ensemble answers with (the disk's when it is not loaded)."""
    ready = sorted(
        v
        for (name, v), state in admin.states().items()
        if name == ENSEMBLE_NAME and state == "READY"
    )
    on_disk = serving_version(repository)
    if len(ready) == 1:
        return ready[0]
    # None: the server has not loaded it; several: an old one still draining after a switch.
    return on_disk if not ready or on_disk in ready else ready[-1]


def _leftovers(admin: TritonAdmin, repository: Path, version: int) -> list[int]:
    """Stage versions besides `version` still loaded on the server, or still named by the
    configs on disk when the disk serves `version` too (an unfinished narrowing)."""
    loaded = {
        v
        for (name, v), state in admin.states().items()
        if name in STAGE_MODEL_NAMES and state in LIVE_STATES
    }
    if serving_version(repository) == version:
        loaded |= configured_versions(repository)
    return sorted(loaded - {version})


def _switch(
    repository: Path,
    admin: TritonAdmin,
    current: int,
    candidate: int,
    serving: ServingSettings,
    action: str,
    log: Log,
) -> None:
    interfaces = version_interfaces(repository, candidate, serving)
    log(f"loading version {candidate} of every stage beside version {current} ...")
    both = stage_configs(interfaces, serving, [current, candidate])
    _load_all(admin, repository, both, (action, "widen_configs_written"))
    fault_point(action, "widened")
    log(f"smoke query through every stage at version {candidate} ...")
    smoke_query(admin, repository, candidate, serving)
    log(f"switching the ensemble to version {candidate} ...")
    ensemble = build_ensemble_config(interfaces, serving, candidate)
    _load_all(admin, repository, {ENSEMBLE_NAME: ensemble}, (action, "switch_config_written"))
    fault_point(action, "switched")
    smoke_query(admin, repository, candidate, serving, through_ensemble=True)


def _narrow(
    repository: Path,
    admin: TritonAdmin,
    olds: list[int],
    version: int,
    serving: ServingSettings,
    action: str,
    log: Log,
) -> None:
    """Unload the stages' `olds` versions once the ensembles pinned to them have drained."""
    for old in olds:
        if not _wait_drained(admin, ENSEMBLE_NAME, old):
            log(f"the version {old} ensemble is still draining; unloading its stages anyway")
    listed = ", ".join(map(str, olds))
    log(f"unloading version {listed} of the stages ...")
    interfaces = version_interfaces(repository, version, serving)
    configs = stage_configs(interfaces, serving, [version])
    try:
        _load_all(admin, repository, configs, (action, "narrow_configs_written"))
    except SWITCH_ERRORS as exc:
        raise VersionError(
            f"version {version} is serving, but unloading version {listed} of its stages failed "
            f"(run `{action}` again to retry): {exc}"
        ) from exc


def _restore(repository: Path, admin: TritonAdmin, current: int, serving: ServingSettings) -> None:
    """Back to `current` alone. The ensemble first, while its stages still have both
    versions; stages first would pull the candidate from under an ensemble pinned to it.
    The ensemble is always written: after a killed switch the disk may pin the candidate."""
    interfaces = version_interfaces(repository, current, serving)
    try:
        ensemble = build_ensemble_config(interfaces, serving, current)
        _load_all(admin, repository, {ENSEMBLE_NAME: ensemble})
        _load_all(admin, repository, stage_configs(interfaces, serving, [current]))
    except SWITCH_ERRORS as exc:
        raise VersionError(
            f"restoring version {current} failed too, check the server (versions_cli list "
            f"--url ...) and run the same command again: {exc}"
        ) from exc


def _check(
    repository: Path,
    current: int,
    version: int,
    serving: ServingSettings,
    tolerance: float | None,
    log: Log,
) -> None:
    log(f"checking version {version}: files against its manifest, parts against each other")
    candidate = check_version(repository, version, serving)
    problems = differences(version_schema(repository, current), version_schema(repository, version))
    if problems:
        raise refused(
            version,
            f"its feature schema differs from version {current}'s (a new request contract: "
            "deploy it as a new repository and switch traffic instead)",
            problems,
        )
    problems = side_by_side_problems(repository, current, version, serving)
    if problems:
        raise refused(
            version,
            f"its tensors differ from version {current}'s, so the two cannot load side by "
            "side under one config (deploy it with a restart instead)",
            problems,
        )
    if tolerance is not None:
        lines, problems = metrics_gate(read_manifest(repository, current), candidate, tolerance)
        for line in lines:
            log(f"  {line}")
        if problems:
            raise refused(version, "the offline metrics gate failed", problems)


def _promote_locked(
    repository: Path,
    version: int,
    admin: TritonAdmin,
    serving: ServingSettings,
    tolerance: float | None,
    action: str,
    log: Log,
    resumed: dict[str, Any] | None,
) -> None:
    if resumed is not None:
        # Killed half-way: the server may have loaded anything up to the candidate's
        # ensemble. Start again from what served before, with every check and smoke test.
        current = int(resumed["previous"])
        log(f"resuming the interrupted {action} of version {version} (from {current}) ...")
    else:
        current = server_serving(admin, repository)
        if version == current:
            leftovers = _leftovers(admin, repository, version)
            if leftovers:
                # Killed after the switch was recorded: only the unloading is left.
                _narrow(repository, admin, leftovers, version, serving, action, log)
                log(f"version {version} is serving; version {leftovers} of the stages unloaded")
            else:
                log(f"version {version} is already serving on {admin.url}: nothing to do")
            return
    journaled = resumed is not None
    try:
        _check(repository, current, version, serving, tolerance, log)
        if not journaled:
            operation = {"action": action, "version": version, "previous": current}
            set_pending(repository, {**operation, "server": admin.url})
            journaled = True
            fault_point(action, "pending_written")
        _switch(repository, admin, current, version, serving, action, log)
    except SWITCH_ERRORS as exc:
        reason = str(exc)
        if journaled:
            # The server may be anywhere between `current` and the candidate's ensemble.
            log(f"failed; restoring version {current}: {exc}")
            _restore(repository, admin, current, serving)  # raises, journal kept, if it fails
            reason = f"version {version} is refused, version {current} keeps serving: {exc}"
        record(
            repository,
            "refused",
            version,
            serving=current,
            attempted=action,
            server=admin.url,
            reason=reason,
        )
        if isinstance(exc, VersionError) and not journaled:
            raise
        raise VersionError(reason) from exc
    # Recorded as soon as the ensemble answers with it: rollback must find its way back
    # even if unloading the old stages below fails.
    record(
        repository,
        action,
        version,
        previous=current,
        tolerance=tolerance,
        server=admin.url,
    )
    fault_point(action, "recorded")
    _narrow(repository, admin, [current], version, serving, action, log)
    log(f"version {version} is serving (was {current})")


def promote(
    repository: Path,
    version: int,
    admin: TritonAdmin,
    serving: ServingSettings,
    tolerance: float | None = DEFAULT_TOLERANCE,
    log: Log = print,
) -> None:
    """Check, gate and switch the live server to `version`. `tolerance=None` skips only the
    metrics gate; the manifest, fit and smoke checks always run. Running it again after it
    was killed finishes it."""
    with repository_lock(repository):
        resumed = recover_unfinished(repository, log)
        if resumed is not None and not _same(resumed, "promote", version, admin):
            raise VersionError(unfinished_switch(resumed))
        _promote_locked(repository, version, admin, serving, tolerance, "promote", log, resumed)


def rollback(
    repository: Path, admin: TritonAdmin, serving: ServingSettings, log: Log = print
) -> int:
    """Back to the version that served before. No metrics gate (it served already); its
    files, fit and a smoke query are still checked. Returns the version now serving.
    Running it again after it was killed finishes it (never rolls back twice)."""
    with repository_lock(repository):
        resumed = recover_unfinished(repository, log)
        if resumed is not None:
            if not _same(resumed, "rollback", int(resumed["version"]), admin):
                raise VersionError(unfinished_switch(resumed))
            target = int(resumed["version"])
        else:
            current = server_serving(admin, repository)
            leftovers = _leftovers(admin, repository, current)
            if leftovers and _last_switch(repository, admin.url) == ("rollback", current):
                # Killed after this rollback was recorded: finish it, do not undo it.
                _narrow(repository, admin, leftovers, current, serving, "rollback", log)
                log(f"version {current} is serving; version {leftovers} of the stages unloaded")
                return current
            target = rollback_target(repository, current, admin.url)
        _promote_locked(repository, target, admin, serving, None, "rollback", log, resumed)
    return target


def _same(operation: dict[str, Any], action: str, version: int, admin: TritonAdmin) -> bool:
    return (
        operation["action"] == action
        and int(operation["version"]) == version
        and operation.get("server") == admin.url
    )


def _last_switch(repository: Path, server: str) -> tuple[str, int] | None:
    """The last promote or rollback recorded for `server`."""
    for entry in reversed(history(repository)):
        if entry["action"] in SWITCHES and entry.get("server") == server:
            return entry["action"], int(entry["version"])
    return None
