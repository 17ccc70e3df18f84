"""Versioned model sets: publish, verify, gate, promote, roll back and prune.

A model set version N is every stage model at version N plus `recommender/N/manifest.json`,
which ties the parts together: the sha256 of every file in each stage's version directory,
the offline metrics, and where the version came from. Publishing writes a new version
beside the serving one and touches no config. Only `promote` and `rollback` change what
serves, on a running tritonserver in explicit model-control mode, without failing a request:

1. widen:  every stage loads {serving, candidate} (version_policy specific); both answer
2. smoke:  one batch through every stage at the candidate version, its answer checked
3. switch: the ensemble is reloaded pinned to the candidate; Triton swaps it in once ready
           and the old ensemble drains; a request through it must answer with the candidate
4. narrow: the stages load the candidate only

Each config is written to disk before its load and passed as the load's override: Triton
reloads an ensemble's composing models from disk when it loads the ensemble, and a
restarted server must come up on what was served. A failure before the switch completes
restores the serving version's configs; it never stopped answering. See docs/versioning.md.

One module per job; each imports the ones it needs directly, never this package:

- `state`:   what serves, which versions exist, the history and journal (versions.json), the lock
- `durable`: writes that survive a power cut (fsync of file and directory)
- `faults`:  fault injection at named steps ($RECSYS_FAULT), for the crash-safety tests
- `compat`:  do a version's parts fit together, and beside the serving version's
- `gate`:    the offline metrics gate
- `publish`: publish a trained set as the next version, describe the versions, prune
- `admin`:   a running tritonserver over gRPC: load, what is loaded, infer at a version
- `smoke`:   a checked batch through the live server at a version
- `promote`: promote and rollback (the four steps above)

The names below are the package's interface: `from serving import versions` and
`versions.promote(...)`, `versions.VersionError`, ... as before the split.
"""

from __future__ import annotations

from serving.manifest import VersionError, read_manifest, verify_files, write_manifest
from serving.versions.admin import LIVE_STATES, TritonAdmin, live_versions
from serving.versions.compat import (
    EMBEDDING_TABLE,
    check_version,
    schema_problems,
    side_by_side_problems,
)
from serving.versions.faults import (
    FAULT_ENV,
    FAULT_EXIT_CODE,
    STEPS,
    FaultSpecError,
    check_fault_environment,
)
from serving.versions.gate import DEFAULT_TOLERANCE, GATED_METRICS, metrics_gate
from serving.versions.promote import promote, rollback, server_serving
from serving.versions.publish import DEFAULT_KEEP, VersionInfo, describe, prune, publish
from serving.versions.smoke import smoke_query
from serving.versions.state import (
    LOCK_FILE,
    STATE_FILE,
    LockBusyError,
    Log,
    history,
    pending,
    repository_lock,
    rollback_target,
    serving_version,
    set_pending,
    version_numbers,
)

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_TOLERANCE",
    "EMBEDDING_TABLE",
    "FAULT_ENV",
    "FAULT_EXIT_CODE",
    "GATED_METRICS",
    "LIVE_STATES",
    "LOCK_FILE",
    "STATE_FILE",
    "STEPS",
    "FaultSpecError",
    "LockBusyError",
    "Log",
    "TritonAdmin",
    "VersionError",
    "VersionInfo",
    "check_fault_environment",
    "check_version",
    "describe",
    "history",
    "live_versions",
    "metrics_gate",
    "pending",
    "promote",
    "prune",
    "publish",
    "read_manifest",
    "repository_lock",
    "rollback",
    "rollback_target",
    "set_pending",
    "schema_problems",
    "server_serving",
    "serving_version",
    "side_by_side_problems",
    "smoke_query",
    "verify_files",
    "version_numbers",
    "write_manifest",
]
