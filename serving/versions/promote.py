"""Switch the live server to a version (promote) or back (rollback) without failing a request.

The steps (widen, smoke, switch, narrow) are described in serving/versions/__init__.py and
docs/versioning.md.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from recsys.contract import ENSEMBLE_NAME
from recsys.schema import differences
from recsys.settings import ServingSettings
from serving.manifest import VersionError, read_manifest, refused
from serving.repository import (
    build_ensemble_config,
    stage_configs,
    version_interfaces,
    version_schema,
    write_config,
)
from serving.versions.admin import LIVE_STATES, TritonAdmin
from serving.versions.compat import check_version, side_by_side_problems
from serving.versions.gate import DEFAULT_TOLERANCE, metrics_gate
from serving.versions.smoke import smoke_query
from serving.versions.state import (
    Log,
    configured_versions,
    record,
    repository_lock,
    rollback_target,
    serving_version,
)


def _load_all(admin: TritonAdmin, repository: Path, configs: dict[str, mc.ModelConfig]) -> None:
    """Write each config to disk, then load those models concurrently.

    Triton 2.51 loads different models concurrently: five stages take about 30 s on two
    cores instead of 50 s one after another, and requests kept flowing in both cases.
    """
    for name, config in configs.items():
        write_config(config, repository / name)
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


def _switch(
    repository: Path,
    admin: TritonAdmin,
    current: int,
    candidate: int,
    serving: ServingSettings,
    log: Log,
) -> None:
    interfaces = version_interfaces(repository, candidate, serving)
    switched = False
    try:
        log(f"loading version {candidate} of every stage beside version {current} ...")
        _load_all(admin, repository, stage_configs(interfaces, serving, [current, candidate]))
        log(f"smoke query through every stage at version {candidate} ...")
        smoke_query(admin, repository, candidate, serving)
        log(f"switching the ensemble to version {candidate} ...")
        switched = True
        ensemble = build_ensemble_config(interfaces, serving, candidate)
        _load_all(admin, repository, {ENSEMBLE_NAME: ensemble})
        smoke_query(admin, repository, candidate, serving, through_ensemble=True)
    except (VersionError, InferenceServerException, OSError) as exc:
        log(f"failed; restoring version {current}: {exc}")
        _restore(repository, admin, current, serving, ensemble_too=switched)
        raise VersionError(
            f"version {candidate} is refused, version {current} keeps serving: {exc}"
        ) from exc


def _narrow(
    repository: Path,
    admin: TritonAdmin,
    olds: list[int],
    version: int,
    serving: ServingSettings,
    log: Log,
) -> None:
    """Unload the stages' `olds` versions once the ensembles pinned to them have drained."""
    for old in olds:
        if not _wait_drained(admin, ENSEMBLE_NAME, old):
            log(f"the version {old} ensemble is still draining; unloading its stages anyway")
    listed = ", ".join(map(str, olds))
    log(f"unloading version {listed} of the stages ...")
    interfaces = version_interfaces(repository, version, serving)
    try:
        _load_all(admin, repository, stage_configs(interfaces, serving, [version]))
    except (VersionError, InferenceServerException, OSError) as exc:
        raise VersionError(
            f"version {version} is serving, but unloading version {listed} of its stages failed "
            f"(run `promote {version}` again to retry): {exc}"
        ) from exc


def _restore(
    repository: Path, admin: TritonAdmin, current: int, serving: ServingSettings, ensemble_too: bool
) -> None:
    """Back to `current` alone. The ensemble first, while its stages still have both
    versions; stages first would pull the candidate from under an ensemble pinned to it."""
    interfaces = version_interfaces(repository, current, serving)
    try:
        if ensemble_too:
            ensemble = build_ensemble_config(interfaces, serving, current)
            _load_all(admin, repository, {ENSEMBLE_NAME: ensemble})
        _load_all(admin, repository, stage_configs(interfaces, serving, [current]))
    except (VersionError, InferenceServerException, OSError) as exc:
        raise VersionError(
            f"restoring version {current} failed too, check the server (versions_cli list "
            f"--url ...): {exc}"
        ) from exc


def _promote_locked(
    repository: Path,
    version: int,
    admin: TritonAdmin,
    serving: ServingSettings,
    tolerance: float | None,
    action: str,
    log: Log,
) -> None:
    current = serving_version(repository)
    if version == current:
        leftovers = configured_versions(repository) - {version}
        if not leftovers:
            raise VersionError(f"version {version} is already serving")
        # An interrupted promotion or rollback: the switch happened, the unloading did not.
        _narrow(repository, admin, sorted(leftovers), version, serving, log)
        log(f"version {version} is serving; version {sorted(leftovers)} of the stages unloaded")
        return
    try:
        log(f"checking version {version}: files against its manifest, parts against each other")
        candidate = check_version(repository, version, serving)
        problems = differences(
            version_schema(repository, current), version_schema(repository, version)
        )
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
        _switch(repository, admin, current, version, serving, log)
    except VersionError as exc:
        record(repository, "refused", version, serving=current, attempted=action, reason=str(exc))
        raise
    # Recorded as soon as the ensemble answers with it: rollback must find its way back
    # even if unloading the old stages below fails.
    record(repository, action, version, previous=current, tolerance=tolerance)
    _narrow(repository, admin, [current], version, serving, log)
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
    metrics gate; the manifest, fit and smoke checks always run."""
    with repository_lock(repository):
        _promote_locked(repository, version, admin, serving, tolerance, "promote", log)


def rollback(
    repository: Path, admin: TritonAdmin, serving: ServingSettings, log: Log = print
) -> int:
    """Back to the version that served before. No metrics gate (it served already); its
    files, fit and a smoke query are still checked. Returns the version now serving."""
    with repository_lock(repository):
        target = rollback_target(repository)
        _promote_locked(repository, target, admin, serving, None, "rollback", log)
    return target
