"""Versioned model sets on a tritonserver of this module's own, under continuous traffic.

The module copies the session's trained repository (version 1), trains a second model set
with another seed, and starts its own server. Tests run in file order: publish v2, refuse
broken candidates, survive a candidate that fails to load, promote v2 and roll back to v1
(through the CLI), prune. Clients ask the ensemble throughout without retries: one failed
request fails the test.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from client.recommender_client import Protocol, RecommenderClient
from pipeline.build import build_artifacts
from recsys.contract import ENSEMBLE_NAME, SCHEMA_FILE, STAGE_MODEL_NAMES
from recsys.settings import Settings
from serving import versions, versions_cli
from serving.launcher import TritonServer
from serving.repository import read_config, write_model_set
from serving.versions import TritonAdmin, VersionError
from tests.conftest import TrainedSet, free_port
from tests.threads import BackgroundThreadError, CheckedThread
from workflows.fitted import fit_workflows


@pytest.fixture(scope="module")
def settings(trained: TrainedSet) -> Settings:
    return trained.settings


@pytest.fixture(scope="module")
def v2_artifacts(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same data and workflows, another training seed: a different, compatible model set."""
    training = settings.training.model_copy(update={"seed": settings.training.seed + 1})
    artifacts = tmp_path_factory.mktemp("v2") / "artifacts"
    build_artifacts(settings.model_copy(update={"training": training}), artifacts)
    return artifacts


@pytest.fixture(scope="module")
def repo(trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("versions") / "model_repository"
    shutil.copytree(trained.repository, repository)
    return repository


@pytest.fixture(scope="module")
def server(
    repo: Path, settings: Settings, v2_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    log = tmp_path_factory.mktemp("versions_server") / "tritonserver.log"
    with TritonServer(repo, settings.server.model_copy(update=ports), log) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: TritonServer, settings: Settings) -> TritonAdmin:
    return TritonAdmin(server.grpc_url, server.admin_key, settings.server.restricted_api_header)


@pytest.fixture(scope="module")
def users(trained: TrainedSet) -> list[int]:
    return trained.data.valid["user_id"].drop_duplicates().head(3).tolist()


class Traffic:
    """One gRPC and one HTTP client asking the ensemble continuously, no retries, and
    checking the ensemble stays ready; every answer's model_version is kept in order."""

    # Up to ~50 requests/s per client: continuous, without starving the model loads under
    # test of the machine's two cores (back to back they competed with them).
    pause_s = 0.02

    def __init__(self, server: TritonServer, user: int) -> None:
        self.server, self.user = server, user
        self.versions: dict[str, list[int]] = {"grpc": [], "http": []}
        self.failures: list[str] = []
        self._stop = threading.Event()
        urls: dict[Protocol, str] = {"grpc": server.grpc_url, "http": server.http_url}
        # Checked: a client thread that dies (say, the client cannot be built) fails the
        # test instead of leaving it with less traffic than it claims.
        self._threads = [
            CheckedThread(self._run, protocol, url, name=f"traffic-{protocol}")
            for protocol, url in urls.items()
        ]

    def _run(self, protocol: Protocol, url: str) -> None:
        with RecommenderClient(url, protocol, retries=0) as client:
            count = 0
            while not self._stop.is_set():
                try:
                    self.versions[protocol].append(client.recommend(self.user, 5).model_version)
                except Exception as exc:  # any failure at all is what this test looks for
                    self.failures.append(f"{protocol}: {exc}")
                count += 1
                if count % 20 == 0 and not client.is_ready():
                    self.failures.append(f"{protocol}: the ensemble reported not ready")
                time.sleep(self.pause_s)

    def wait_for_answers(self, more: int = 5, timeout_s: float = 60.0) -> None:
        """Let each client get `more` answers from now on (the state after a switch)."""
        targets = {p: len(v) + more for p, v in self.versions.items()}
        deadline = time.monotonic() + timeout_s
        while any(len(self.versions[p]) < n for p, n in targets.items()):
            for thread in self._threads:
                thread.check()  # a dead client is the cause, not a stall
            assert time.monotonic() < deadline, f"traffic stalled: {self.failures[-3:]}"
            time.sleep(0.1)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        self.wait_for_answers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            try:
                thread.join(timeout=30)
            except BackgroundThreadError:
                if exc_type is None:
                    raise
                # The test is failing already: keep its own error, which says more.

    def runs(self, protocol: str) -> list[int]:
        """The versions answered, with repeats collapsed: [1, 2] means 1s, then only 2s."""
        seen = self.versions[protocol]
        return [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]


def stage_policies(repository: Path) -> set[tuple[int, ...]]:
    return {
        tuple(read_config(repository / name).version_policy.specific.versions)
        for name in STAGE_MODEL_NAMES
    }


def write_unchecked_version(repo: Path, artifacts: Path, settings: Settings) -> int:
    """A version's files written without publish's checks (the caller then writes a
    manifest that matches them): what another tool or a hand edit could leave behind."""
    version = max(versions.version_numbers(repo)) + 1
    write_model_set(artifacts, repo, settings.serving, version)
    return version


def test_publish_writes_the_next_version_beside_the_serving_one(
    repo: Path, settings: Settings, v2_artifacts: Path, admin: TritonAdmin
) -> None:
    configs = {name: (repo / name / "config.pbtxt").read_bytes() for name in STAGE_MODEL_NAMES}
    version = versions.publish(v2_artifacts, repo, settings, log=lambda _: None)
    assert version == 2
    assert configs == {n: (repo / n / "config.pbtxt").read_bytes() for n in STAGE_MODEL_NAMES}
    assert versions.serving_version(repo) == 1 and stage_policies(repo) == {(1,)}
    manifest = versions.read_manifest(repo, 2)
    metrics = json.loads((v2_artifacts / "models" / "metrics.json").read_text())
    assert manifest["metrics"] == metrics
    assert manifest["provenance"]["config_sha256"] and manifest["provenance"]["data_dir"]
    assert set(manifest["files"]) == set(STAGE_MODEL_NAMES)
    assert "model.pt" in manifest["files"]["ranking"]
    statuses = {info.version: info.status for info in versions.describe(repo)}
    assert statuses == {1: "serving", 2: "published"}
    assert sorted(versions.live_versions(admin)) == [1], "publishing must not load anything"


def test_broken_candidates_are_refused_before_the_server_sees_them(
    repo: Path,
    settings: Settings,
    trained: TrainedSet,
    v2_artifacts: Path,
    server: TritonServer,
    admin: TritonAdmin,
    users: list[int],
    tmp_path: Path,
) -> None:
    def quiet(_: str) -> None:
        pass

    with Traffic(server, users[0]) as traffic:
        # A file changed after publishing.
        corrupt = versions.publish(v2_artifacts, repo, settings, log=quiet)
        with (repo / "ranking" / str(corrupt) / "model.pt").open("ab") as handle:
            handle.write(b"\0")
        with pytest.raises(VersionError, match=rf"ranking/{corrupt}/model.pt has sha256"):
            versions.promote(repo, corrupt, admin, settings.serving, log=quiet)

        # Workflows refit with other hash buckets beside models trained on the old ones.
        mismatched = tmp_path / "mismatched"
        shutil.copytree(v2_artifacts, mismatched, ignore=shutil.ignore_patterns("data"))
        shutil.rmtree(mismatched / "workflows")
        zipcode = trained.schema.users.features["zipcode"].model_copy(update={"buckets": 1024})
        users = trained.schema.users.model_copy(
            update={"features": {**trained.schema.users.features, "zipcode": zipcode}}
        )
        other = trained.schema.model_copy(update={"users": users})
        fit_workflows(trained.data, other, tmp_path / "stats").save(mismatched / "workflows")
        before = versions.version_numbers(repo)
        with pytest.raises(VersionError, match="trained on a different workflow"):
            versions.publish(mismatched, repo, settings, log=quiet)
        assert versions.version_numbers(repo) == before, "a refused publish leaves nothing"
        # The same mismatch written without publish's checks is refused at promotion.
        unchecked = write_unchecked_version(repo, mismatched, settings)
        versions.write_manifest(repo, unchecked, mismatched, settings)
        with pytest.raises(VersionError, match="do not fit together"):
            versions.promote(repo, unchecked, admin, settings.serving, log=quiet)

        # A model set built on another feature schema is another request contract.
        other_schema = tmp_path / "other_schema"
        shutil.copytree(v2_artifacts, other_schema, ignore=shutil.ignore_patterns("data"))
        schema_file = other_schema / SCHEMA_FILE
        changed = json.loads(schema_file.read_text())
        changed["users"]["features"]["country"]["max_length"] = 12
        del changed["users"]["features"]["device"]
        schema_file.write_text(json.dumps(changed))
        renamed = versions.publish(other_schema, repo, settings, log=quiet)
        with pytest.raises(VersionError, match="feature schema differs") as refusal:
            versions.promote(repo, renamed, admin, settings.serving, log=quiet)
        assert "feature 'country' differs in max_length" in str(refusal.value)
        assert "feature 'device' is gone" in str(refusal.value)

        # Offline metrics clearly worse than the serving version's.
        worse = tmp_path / "worse"
        shutil.copytree(v2_artifacts, worse, ignore=shutil.ignore_patterns("data"))
        metrics_file = worse / "models" / "metrics.json"
        metrics = json.loads(metrics_file.read_text())
        metrics["ranking_auc"] -= 0.05
        metrics_file.write_text(json.dumps(metrics))
        gated = versions.publish(worse, repo, settings, log=quiet)
        with pytest.raises(
            VersionError, match=r"ranking_auc [\d.]+ is worse .*\(tolerance 0\.01\)"
        ):
            versions.promote(repo, gated, admin, settings.serving, log=quiet)

    assert traffic.failures == []
    assert traffic.runs("grpc") == [1] and traffic.runs("http") == [1]
    assert sorted(versions.live_versions(admin)) == [1]
    assert versions.serving_version(repo) == 1 and stage_policies(repo) == {(1,)}
    refused = [e["version"] for e in versions.history(repo) if e["action"] == "refused"]
    assert refused == [corrupt, unchecked, renamed, gated]


def test_a_candidate_that_fails_to_load_is_unloaded_and_v1_keeps_serving(
    repo: Path,
    settings: Settings,
    v2_artifacts: Path,
    server: TritonServer,
    admin: TritonAdmin,
    users: list[int],
) -> None:
    broken = write_unchecked_version(repo, v2_artifacts, settings)
    model_py = repo / "reorder" / str(broken) / "model.py"
    # A model that passes every offline check but cannot start in the server: it fails
    # early in its import (after any __future__ import, which must come first).
    head, future, rest = model_py.read_text().partition("from __future__ import annotations\n")
    model_py.write_text(head + future + "raise RuntimeError('bad build')\n" + rest)
    shutil.rmtree(model_py.parent / "__pycache__", ignore_errors=True)
    versions.write_manifest(repo, broken, v2_artifacts, settings)

    with Traffic(server, users[0]) as traffic:
        with pytest.raises(VersionError, match=r"(?s)keeps serving.*reorder.*bad build"):
            versions.promote(repo, broken, admin, settings.serving, None, log=lambda _: None)
        traffic.wait_for_answers()

    assert traffic.failures == []
    assert traffic.runs("grpc") == [1] and traffic.runs("http") == [1]
    live = versions.live_versions(admin)
    assert sorted(live) == [1] and len(live[1]) == len(STAGE_MODEL_NAMES) + 1
    assert versions.serving_version(repo) == 1 and stage_policies(repo) == {(1,)}


def run_cli(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI's entry point, as an operator runs it (in this process: a subprocess would
    add seconds of imports per call)."""
    code = versions_cli.main(["--repository", str(repo), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_promote_to_v2_and_roll_back_to_v1_under_load_without_a_failed_request(
    repo: Path,
    server: TritonServer,
    admin: TritonAdmin,
    users: list[int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRITON_ADMIN_KEY", server.admin_key)
    with RecommenderClient(server.grpc_url) as client:
        before = [client.recommend(u, 5).item_ids for u in users]
    with Traffic(server, users[0]) as traffic:
        # Seed-to-seed noise moves the metrics by up to ~0.01: v2 is not a worse model.
        code, out, err = run_cli(
            repo, capsys, "promote", "2", "--url", server.grpc_url, "--tolerance", "0.03"
        )
        assert code == 0, err
        assert "version 2 is serving (was 1)" in out
        traffic.wait_for_answers()
        assert traffic.runs("grpc") == [1, 2] and traffic.runs("http") == [1, 2]
        assert versions.serving_version(repo) == 2 and stage_policies(repo) == {(2,)}
        assert sorted(versions.live_versions(admin)) == [2]
        with RecommenderClient(server.http_url, "http") as client:
            after = [client.recommend(u, 5) for u in users]
        assert {r.model_version for r in after} == {2}
        assert [r.item_ids for r in after] != before, "v2 is a different model set"

        code, out, err = run_cli(repo, capsys, "rollback", "--url", server.grpc_url)
        assert code == 0, err
        assert "version 1 is serving (was 2)" in out
        traffic.wait_for_answers()

    assert traffic.failures == []
    assert traffic.runs("grpc") == [1, 2, 1] and traffic.runs("http") == [1, 2, 1]
    assert versions.serving_version(repo) == 1 and stage_policies(repo) == {(1,)}
    assert sorted(versions.live_versions(admin)) == [1]
    actions = [(e["action"], e["version"]) for e in versions.history(repo)][-2:]
    assert actions == [("promote", 2), ("rollback", 1)]
    code, out, err = run_cli(repo, capsys, "list", "--url", server.grpc_url)
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows["1"] == "serving" and rows["2"] == "previous"


def test_prune_keeps_the_newest_the_serving_and_the_previous_version(
    repo: Path, settings: Settings, server: TritonServer, users: list[int]
) -> None:
    on_disk = versions.version_numbers(repo)
    newest = max(on_disk)
    removed = versions.prune(repo, keep=1, log=lambda _: None)
    assert removed == [v for v in on_disk if v not in (1, 2, newest)]
    assert versions.version_numbers(repo) == [1, 2, newest]
    models = (*STAGE_MODEL_NAMES, ENSEMBLE_NAME)
    for version in removed:
        assert not any((repo / name / str(version)).exists() for name in models)
    with RecommenderClient(server.grpc_url) as client:
        assert client.recommend(users[0], 5).model_version == 1


def test_cli_explains_what_is_wrong(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as help_exit:
        versions_cli.main(["--help"])
    assert help_exit.value.code == 0
    monkeypatch.delenv("TRITON_ADMIN_KEY", raising=False)
    assert versions_cli.main(["--repository", str(repo), "promote", "2"]) == 1
    assert "no admin key" in capsys.readouterr().err
    assert versions_cli.main(["--repository", str(repo), "verify", "99"]) == 1
    assert "version 99 has no manifest" in capsys.readouterr().err
    assert versions_cli.main(["--repository", str(repo), "verify", "1"]) == 0
    assert "parts fit together" in capsys.readouterr().out


def test_metrics_gate_knows_which_way_is_better() -> None:
    serving = {"metrics": {"recall_k": 50, "retrieval_recall_at_k": 0.40, "ranking_auc": 0.74,
                           "ranking_logloss": 0.60}}  # fmt: skip
    better = {"metrics": {**serving["metrics"], "ranking_logloss": 0.55, "ranking_auc": 0.75}}
    assert versions.metrics_gate(serving, better, 0.0)[1] == []
    noisy = {"metrics": {**serving["metrics"], "ranking_logloss": 0.605}}
    assert versions.metrics_gate(serving, noisy, 0.01)[1] == []
    (problem,) = versions.metrics_gate(serving, noisy, 0.001)[1]
    assert problem.startswith("ranking_logloss 0.6050 is worse")
    other_k = {"metrics": {**serving["metrics"], "recall_k": 20}}
    assert "not comparable" in versions.metrics_gate(serving, other_k, 1.0)[1][0]


def test_a_version_with_other_tensor_shapes_cannot_load_beside_the_serving_one(
    trained: TrainedSet, settings: Settings, tmp_path: Path
) -> None:
    repository = tmp_path / "model_repository"
    shutil.copytree(trained.repository, repository)
    write_model_set(trained.artifacts, repository, settings.serving, 2)
    spec_file = repository / "user_features" / "2" / "user_workflow" / "feature_spec.json"
    spec = json.loads(spec_file.read_text())
    width = len(spec["continuous"])
    spec["continuous"].append("age_squared")
    spec_file.write_text(json.dumps(spec))
    problems = versions.side_by_side_problems(repository, 1, 2, settings.serving)
    # The user features' producer and both their consumers change shape.
    assert [p.split(":")[0] for p in problems] == ["user_features", "retrieval", "ranking"]
    assert all(
        f"user_continuous[{width}]" in p and f"user_continuous[{width + 1}]" in p for p in problems
    )


def test_a_model_set_built_for_five_stages_is_refused_naming_the_stage(
    trained: TrainedSet, tmp_path: Path
) -> None:
    """Model sets published before item features moved inside ranking list an
    `item_features` stage this code does not serve: refused, not half-loaded."""
    from serving.manifest import _fingerprint, hash_tree, manifest_path, write_json

    repository = tmp_path / "model_repository"
    shutil.copytree(trained.repository, repository)
    old_stage = repository / "item_features" / "1"
    old_stage.mkdir(parents=True)
    shutil.copy2(repository / "reorder" / "1" / "catalog.npz", old_stage / "catalog.npz")
    manifest = json.loads(manifest_path(repository, 1).read_text())
    manifest["files"]["item_features"] = hash_tree(old_stage)
    manifest["fingerprint"] = _fingerprint(manifest["files"])
    write_json(manifest_path(repository, 1), manifest)
    with pytest.raises(VersionError, match=r"built with stages \['item_features'\]"):
        versions.verify_files(repository, 1)
