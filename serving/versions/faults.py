"""Fault injection: die (or fail with a full disk) at a named step of a versions command.

`RECSYS_FAULT=<command>:<step>` makes the command exit at once (os._exit, no cleanup, as a
kill -9 or a power cut would) when it reaches that step; `RECSYS_FAULT=<command>:<step>:enospc`
raises OSError(ENOSPC) there instead, as a full disk would. The crash-safety tests
(tests/test_crash_safety.py) run the real CLI with each step and then re-run the command.
The steps are listed in STEPS and in docs/versioning.md.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

FAULT_ENV = "RECSYS_FAULT"
# Distinct from the CLI's 0/1/2, so a test knows the process died at the injected step.
FAULT_EXIT_CODE = 86
MODES = ("exit", "enospc")

# promote and rollback share their steps: rollback is a promote to the previous version.
SWITCH_STEPS: tuple[str, ...] = (
    "pending_written",  # the operation is journaled in versions.json; nothing else changed
    "widen_configs_written",  # stage configs name both versions on disk, nothing loaded
    "widened",  # both versions of every stage loaded; not smoke-tested
    "switch_config_written",  # the ensemble config on disk pins the candidate; not loaded
    "switched",  # the ensemble pinned to the candidate is loaded; not smoke-tested
    "recorded",  # history written and journal cleared; old stage versions still loaded
    "narrow_configs_written",  # stage configs name the candidate only; not loaded yet
)
STEPS: dict[str, tuple[str, ...]] = {
    "publish": (
        "pending_written",  # journaled; no file copied yet
        "copied",  # every stage's files copied, not flushed, no manifest
        "manifest_written",  # the manifest is on disk; no history entry
        "history_write",  # half of versions.json's new content is in its temporary file
    ),
    "promote": SWITCH_STEPS,
    "rollback": SWITCH_STEPS,
    "prune": (
        "pending_written",  # the versions to remove are journaled; nothing removed
        "removing",  # the first doomed version is partly removed
        "removed",  # every doomed version removed; no history entry
    ),
}


class FaultSpecError(ValueError):
    """$RECSYS_FAULT names no known step: a misspelt fault would silently never fire."""


def parse_fault(spec: str) -> tuple[str, str, str]:
    """(command, step, mode) from `command:step[:mode]`; FaultSpecError if unknown."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise FaultSpecError(f"${FAULT_ENV}={spec!r} is not <command>:<step>[:enospc]")
    command, step = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "exit"
    if command not in STEPS:
        raise FaultSpecError(
            f"${FAULT_ENV}={spec!r}: no command {command!r} (one of {sorted(STEPS)})"
        )
    if step not in STEPS[command]:
        raise FaultSpecError(
            f"${FAULT_ENV}={spec!r}: {command} has no step {step!r} (one of {list(STEPS[command])})"
        )
    if mode not in MODES:
        raise FaultSpecError(f"${FAULT_ENV}={spec!r}: mode {mode!r} is not one of {list(MODES)}")
    return command, step, mode


def check_fault_environment() -> None:
    """Refuse a misspelt $RECSYS_FAULT before doing anything."""
    spec = os.environ.get(FAULT_ENV)
    if spec:
        parse_fault(spec)


def fault_point(command: str, step: str, path: Path | None = None) -> None:
    """Die, or raise ENOSPC about `path`, if $RECSYS_FAULT names this step."""
    if step not in STEPS[command]:
        raise FaultSpecError(f"fault point {command}:{step} is not listed in STEPS")
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    wanted_command, wanted_step, mode = parse_fault(spec)
    if (wanted_command, wanted_step) != (command, step):
        return
    if mode == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))
    sys.stderr.write(f"fault injected: {spec}: exiting with {FAULT_EXIT_CODE}\n")
    sys.stderr.flush()
    os._exit(FAULT_EXIT_CODE)
