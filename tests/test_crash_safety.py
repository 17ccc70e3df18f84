"""Versions commands killed at every step, then run again: they converge.

The real CLI (`python -m serving.versions_cli`) runs in a subprocess with $RECSYS_FAULT
naming a step (serving/versions/faults.py): it exits there at once, as after kill -9, or
fails with ENOSPC as on a full disk. Then the same command runs again, and the test checks
what serves (asked of the server), the configs on disk, the history and that rollback
works. One tritonserver serves every promote/rollback case in turn; the replica test adds a
second server on the same repository.

Version 2 is the session's trained set published again: a different version number with
the same files is all a switch needs, and it saves training a second model set.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.recommender_client import RecommenderClient
from recsys.contract import ENSEMBLE_NAME, STAGE_MODEL_NAMES
from recsys.settings import PROJECT_ROOT, Settings
from serving import versions
from serving.launcher import TritonServer
from serving.repository import read_config
from serving.versions import FAULT_ENV, FAULT_EXIT_CODE, STEPS, TritonAdmin
from serving.versions.faults import SWITCH_STEPS
from tests.conftest import TrainedSet, free_port

pytestmark = pytest.mark.server
CLI_TIMEOUT_S = 600.0


def cli(
    repository: Path, *args: str, fault: str | None = None, key: str = ""
) -> subprocess.CompletedProcess[str]:
    """The versions CLI as an operator runs it, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TRITON_ADMIN_KEY": key}
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "serving.versions_cli", "--repository", str(repository), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def killed(done: subprocess.CompletedProcess[str], fault: str) -> None:
    """The command died at the injected step, not earlier or of something else."""
    assert (
        done.returncode == FAULT_EXIT_CODE
    ), f"{fault}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert f"fault injected: {fault}" in done.stderr


def stage_policies(repository: Path) -> set[tuple[int, ...]]:
    return {
        tuple(read_config(repository / name).version_policy.specific.versions)
        for name in STAGE_MODEL_NAMES
    }


def switches(repository: Path) -> list[tuple[Any, ...]]:
    """(action, version, previous, server) of every promote and rollback recorded."""
    return [
        (e["action"], e["version"], e["previous"], e.get("server"))
        for e in versions.history(repository)
        if e["action"] in ("promote", "rollback")
    ]


def answered_by(server: TritonServer, user: int) -> int:
    with RecommenderClient(server.grpc_url, "grpc", retries=0) as client:
        return client.recommend(user, 5).model_version


@pytest.fixture(scope="module")
def user(trained: TrainedSet) -> int:
    return int(trained.data.valid["user_id"].iloc[0])


@pytest.fixture(scope="module")
def repo(trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's repository (version 1 serving) with the same set published as 2."""
    repository = tmp_path_factory.mktemp("crash") / "model_repository"
    shutil.copytree(trained.repository, repository)
    assert versions.publish(trained.artifacts, repository, trained.settings, log=print) == 2
    return repository


def start_server(repository: Path, settings: Settings, log: Path) -> TritonServer:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return TritonServer(repository, settings.server.model_copy(update=ports), log).start()


@pytest.fixture(scope="module")
def servers(
    repo: Path, trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, TritonServer]]:
    """Two replicas on one repository, both started while version 1 serves."""
    root = tmp_path_factory.mktemp("servers")
    first = start_server(repo, trained.settings, root / "a.log")
    try:
        second = start_server(repo, trained.settings, root / "b.log")
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def assert_serves(repo: Path, server: TritonServer, version: int, user: int) -> None:
    """One consistent version: the server answers with it and loads nothing else; the disk
    (what a restarted server loads) agrees; no operation is left half-done."""
    assert answered_by(server, user) == version
    admin = TritonAdmin(server.grpc_url, server.admin_key, server.server.restricted_api_header)
    live = versions.live_versions(admin)
    assert sorted(live) == [version], f"loaded on the server: {live}"
    assert sorted(live[version]) == sorted((*STAGE_MODEL_NAMES, ENSEMBLE_NAME))
    assert versions.serving_version(repo) == version
    assert stage_policies(repo) == {(version,)}
    assert versions.pending(repo) is None


def switch_with_faults(
    repo: Path, server: TritonServer, command: str, kills: tuple[str, ...], user: int
) -> str:
    """Run `command` (promote 2 or rollback) killed at each of `kills` in turn (a re-run
    killed again), then once more to the end; returns what the runs printed."""
    args = ("promote", "2") if command == "promote" else ("rollback",)
    printed = ""
    for step in kills:
        fault = f"{command}:{step}"
        done = cli(repo, *args, "--url", server.grpc_url, fault=fault, key=server.admin_key)
        killed(done, fault)
        printed += done.stdout
        # Killed anywhere, the server keeps answering (with the old or the new version).
        assert answered_by(server, user) in (1, 2)
    return printed + ok(cli(repo, *args, "--url", server.grpc_url, key=server.admin_key))


# (command, steps it is killed at, one re-run after the other): every step of promote and
# of rollback once, in eight switches (a switch loads every stage: ~40 s on two cores). A
# re-run goes on from the journal, so its state at a step is that of a first run's.
CHAIN: list[tuple[str, tuple[str, ...]]] = [
    ("promote", ("switch_config_written", "narrow_configs_written")),
    ("rollback", ("switch_config_written", "narrow_configs_written")),
    ("promote", ("pending_written", "switched")),
    ("rollback", ("pending_written", "switched")),
    ("promote", ("widened", "recorded")),
    ("rollback", ("widened", "recorded")),
    ("promote", ("widen_configs_written",)),
]
# rollback:widen_configs_written is the replica test's last kill.


def test_the_chain_kills_every_step_of_promote_and_rollback() -> None:
    covered = {(command, step) for command, kills in CHAIN for step in kills}
    covered.add(("rollback", "widen_configs_written"))
    assert covered == {(c, s) for c in ("promote", "rollback") for s in SWITCH_STEPS}


@pytest.mark.parametrize(("command", "kills"), CHAIN, ids=[f"{c}-{'-'.join(k)}" for c, k in CHAIN])
def test_a_killed_promote_or_rollback_converges_when_run_again(
    command: str,
    kills: tuple[str, ...],
    repo: Path,
    servers: tuple[TritonServer, TritonServer],
    user: int,
) -> None:
    server, url = servers[0], servers[0].grpc_url
    start, target = (1, 2) if command == "promote" else (2, 1)
    if answered_by(server, user) != start:  # run out of order (-k): get there first
        args = ("promote", "2") if start == 2 else ("rollback",)
        ok(cli(repo, *args, "--url", url, key=server.admin_key))
    assert_serves(repo, server, start, user)
    before = switches(repo)

    printed = switch_with_faults(repo, server, command, kills, user)

    assert_serves(repo, server, target, user)
    # Exactly one entry: the switch, from the version that served before it.
    assert switches(repo) == [*before, (command, target, start, url)]
    if kills[0] not in ("recorded", "narrow_configs_written"):
        # Resumed from the top: checked and smoke-tested again, not just unloaded.
        assert f"smoke query through every stage at version {target}" in printed
    # Rollback works from here (the next case runs it; this is what it will go back to).
    admin = TritonAdmin(url, server.admin_key, server.server.restricted_api_header)
    assert versions.rollback_target(repo, versions.server_serving(admin, repo), url) == start


def test_a_second_replica_is_switched_after_the_first(
    repo: Path, servers: tuple[TritonServer, TritonServer], user: int
) -> None:
    """Two servers on one repository: the first serves 2 (the chain above), the second
    still 1, although the disk says 2. Each is switched, killed on the way, and rolled back
    to where it was, by its own history."""
    first, second = servers
    if answered_by(first, user) != 2:
        ok(cli(repo, "promote", "2", "--url", first.grpc_url, key=first.admin_key))
    assert answered_by(second, user) == 1 and versions.serving_version(repo) == 2
    before = switches(repo)

    printed = switch_with_faults(repo, second, "promote", ("switched",), user)
    assert "smoke query through every stage at version 2" in printed
    assert_serves(repo, second, 2, user)
    assert answered_by(first, user) == 2
    assert switches(repo) == [*before, ("promote", 2, 1, second.grpc_url)]

    ok(cli(repo, "rollback", "--url", second.grpc_url, key=second.admin_key))
    assert_serves(repo, second, 1, user)
    assert answered_by(first, user) == 2, "switching one replica left the other alone"
    switch_with_faults(repo, first, "rollback", ("widen_configs_written",), user)
    assert_serves(repo, first, 1, user)
    assert switches(repo) == [
        *before,
        ("promote", 2, 1, second.grpc_url),
        ("rollback", 1, 2, second.grpc_url),
        ("rollback", 1, 2, first.grpc_url),
    ]


# --- publish and prune: no server needed, a repository of their own ---


@pytest.fixture(scope="module")
def store(trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("store") / "model_repository"
    shutil.copytree(trained.repository, repository)
    return repository


def published(repository: Path) -> list[int]:
    return [e["version"] for e in versions.history(repository) if e["action"] == "publish"]


def next_version(repository: Path) -> int:
    recorded = [e["version"] for e in versions.history(repository) if e["version"] is not None]
    return max([*versions.version_numbers(repository), *recorded]) + 1


def leftovers(repository: Path) -> list[Path]:
    """Temporary files of interrupted writes."""
    return sorted(repository.rglob("*.partial"))


@pytest.mark.parametrize("step", STEPS["publish"])
def test_a_killed_publish_converges_when_run_again(
    step: str, store: Path, trained: TrainedSet
) -> None:
    on_disk, before, version = (
        versions.version_numbers(store),
        published(store),
        next_version(store),
    )
    fault = f"publish:{step}"
    killed(cli(store, "publish", "--artifacts", str(trained.artifacts), fault=fault), fault)
    if step != "pending_written":
        assert version in versions.version_numbers(store), "the kill left a version half-done"
    assert published(store) == before

    out = ok(cli(store, "publish", "--artifacts", str(trained.artifacts)))

    assert f"removing version {version}, left unfinished by an interrupted publish" in out
    assert versions.version_numbers(store) == [*on_disk, version]
    assert published(store) == [*before, version]
    versions.verify_files(store, version)
    assert versions.pending(store) is None
    if step != "history_write":  # a killed write's temporary file is left: harmless
        assert leftovers(store) == []


@pytest.mark.parametrize("step", ["copied", "history_write"])
def test_a_full_disk_during_publish_leaves_no_half_written_version(
    step: str, store: Path, trained: TrainedSet
) -> None:
    on_disk, before, version = (
        versions.version_numbers(store),
        published(store),
        next_version(store),
    )
    history = versions.history(store)
    leftover = leftovers(store)
    done = cli(
        store, "publish", "--artifacts", str(trained.artifacts), fault=f"publish:{step}:enospc"
    )

    assert done.returncode == 1, done.stderr
    assert f"cannot publish {trained.artifacts} as version {version}" in done.stderr
    assert f"the disk holding {store} is full: No space left on device" in done.stderr
    assert f"nothing of version {version} was kept" in done.stderr
    assert versions.version_numbers(store) == on_disk
    assert not any((store / name / str(version)).exists() for name in STAGE_MODEL_NAMES)
    assert versions.history(store) == history and versions.pending(store) is None
    assert leftovers(store) == leftover
    # With space again, the same command publishes that version.
    ok(cli(store, "publish", "--artifacts", str(trained.artifacts)))
    assert published(store) == [*before, version]
    assert os.strerror(errno.ENOSPC) == "No space left on device"


@pytest.mark.parametrize("step", STEPS["prune"])
def test_a_killed_prune_converges_when_run_again(
    step: str, store: Path, trained: TrainedSet
) -> None:
    while len(versions.version_numbers(store)) < 4:
        versions.publish(trained.artifacts, store, trained.settings, log=lambda _: None)
    on_disk = versions.version_numbers(store)
    doomed = on_disk[1:-1]  # version 1 serves, --keep 1 keeps the newest
    fault = f"prune:{step}"
    killed(cli(store, "prune", "--keep", "1", fault=fault), fault)
    ok(cli(store, "prune", "--keep", "1"))
    assert versions.version_numbers(store) == [1, on_disk[-1]]
    prunes = [e for e in versions.history(store) if e["action"] == "prune"]
    assert prunes[-1]["removed"] == doomed, "the history names every version removed"
    assert versions.pending(store) is None
