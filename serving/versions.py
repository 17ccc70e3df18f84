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
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from recsys.contract import (
    CATALOG_FILE,
    ENSEMBLE_NAME,
    ITEM_INDEX_FILE,
    METRICS_FILE,
    MODEL_LOAD_ORDER,
    QUERY_TOWER_FILE,
    RANKING_MODEL_FILE,
    REQUEST_USER_ID,
    STAGE_MODEL_NAMES,
    USER_TABLE_FILE,
    USER_WORKFLOW_DIR,
    FeatureSpec,
)
from recsys.schema import differences
from recsys.settings import ServingSettings, Settings
from serving.manifest import (
    VersionError,
    read_manifest,
    refused,
    sha256_file,
    verify_files,
    write_json,
    write_manifest,
)
from serving.repository import (
    StageInterface,
    build_ensemble_config,
    config_json,
    ensemble_interface,
    read_config,
    stage_configs,
    version_interfaces,
    version_schema,
    version_specs,
    write_config,
    write_model_set,
)

__all__ = ["VersionError", "read_manifest", "verify_files", "write_manifest"]

STATE_FILE = "versions.json"
LOCK_FILE = ".versions.lock"
DEFAULT_TOLERANCE = 0.01
DEFAULT_KEEP = 3
# Offline metrics the gate compares: +1 higher is better, -1 lower is better.
GATED_METRICS: dict[str, int] = {
    "retrieval_recall_at_k": 1,
    "ranking_auc": 1,
    "ranking_logloss": -1,
}
EMBEDDING_TABLE = re.compile(r"embeddings\.tables\.(\d+)\.weight$")
# States in Triton's repository index of a version that can still run requests.
LIVE_STATES = frozenset({"READY", "LOADING", "UNLOADING"})

Log = Callable[[str], None]


# ---------------------------------------------------------------- do the parts fit


def _table_rows(module: Any) -> list[int]:
    rows = {}
    for name, parameter in module.named_parameters():
        if match := EMBEDDING_TABLE.search(name):
            rows[int(match.group(1))] = int(parameter.shape[0])
    return [rows[index] for index in sorted(rows)]


def _probe(spec: FeatureSpec, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Features at the largest index each column may take: out-of-range fails loudly."""
    import torch  # heavy, and needed only by the checks: `list` and --help stay fast

    largest = [
        c - 1 for c, w in zip(spec.cardinalities, spec.widths, strict=True) for _ in range(w)
    ]
    categorical = torch.tensor(largest, dtype=torch.int64)
    categorical = categorical.expand(*shape, len(largest)).contiguous()
    continuous = torch.zeros(*shape, len(spec.continuous), dtype=torch.float32)
    return categorical, continuous


def _tables_match(what: str, module: Any, cardinalities: list[int]) -> list[str]:
    rows = _table_rows(module)
    if rows == cardinalities:
        return []
    return [
        f"{what} has embedding tables of {rows} rows but the version's workflows produce "
        f"cardinalities {cardinalities}: it was trained on a different workflow"
    ]


def _user_problems(version_dir: Path, user_spec: FeatureSpec, expected: list[str]) -> list[str]:
    import nvtabular as nvt  # heavy, and needed only by the checks

    from workflows.fitted import spec_from_workflow

    problems = []
    try:
        workflow = nvt.Workflow.load(str(version_dir / USER_WORKFLOW_DIR))
        produced = spec_from_workflow(workflow)
        if produced != user_spec:
            problems.append(
                f"the user workflow's output schema {produced.describe()} differs from the "
                f"feature spec shipped with it {user_spec.describe()}"
            )
    except Exception as exc:  # a corrupt file can raise nearly anything: report, go on
        problems.append(f"the user workflow does not load: {exc}")
    try:
        users = pd.read_parquet(version_dir / USER_TABLE_FILE)
        missing = set(expected) - set(users.columns)
        if missing:
            problems.append(f"{USER_TABLE_FILE} lacks columns {sorted(missing)}")
    except Exception as exc:
        problems.append(f"{USER_TABLE_FILE} does not load: {exc}")
    return problems


def _query_tower_problems(
    version_dir: Path, user_spec: FeatureSpec
) -> tuple[int | None, list[str]]:
    """(the query vectors' dimension, problems)."""
    import torch

    try:
        tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE), map_location="cpu")
        problems = _tables_match("the query tower", tower, list(user_spec.cardinalities))
        with torch.inference_mode():
            return int(tower(*_probe(user_spec, (2,))).shape[-1]), problems
    except Exception as exc:
        return None, [f"the query tower does not take the user workflow's output: {exc}"]


def _catalog_problems(
    repository: Path, version: int, item_spec: FeatureSpec
) -> tuple[int | None, list[str]]:
    """(the catalog's item count, problems); item_features and reorder carry one catalog."""
    first, second = (
        repository / name / str(version) / CATALOG_FILE for name in ("item_features", "reorder")
    )
    try:
        same = sha256_file(first) == sha256_file(second)
        with np.load(first) as catalog:
            categorical, continuous = catalog["categorical"], catalog["continuous"]
            rows = len(catalog["item_ids"])
    except Exception as exc:
        return None, [f"the catalog does not load: {exc}"]
    problems = [] if same else ["item_features and reorder carry different catalogs"]
    widths = (categorical.shape[1:], continuous.shape[1:])
    if widths != ((item_spec.categorical_width,), (len(item_spec.continuous),)):
        problems.append(
            f"the catalog's feature widths {widths} do not match the item spec "
            f"{item_spec.describe()}"
        )
    elif rows and (categorical.max(axis=0) >= np.repeat(item_spec.cardinalities,
                                                         item_spec.widths)).any():  # fmt: skip
        problems.append("the catalog holds item feature indices beyond the item spec")
    return rows, problems


def _index_problems(
    version_dir: Path, items: int | None, query_dim: int | None, candidates: int
) -> list[str]:
    import faiss

    try:
        index = faiss.read_index(str(version_dir / ITEM_INDEX_FILE))
    except Exception as exc:
        return [f"the item index does not load: {exc}"]
    problems = []
    if items is not None and index.ntotal != items:
        problems.append(f"the index holds {index.ntotal} items, the catalog {items}")
    if query_dim is not None and index.d != query_dim:
        problems.append(f"the index has dimension {index.d}, the query tower {query_dim}")
    if index.ntotal < candidates:
        problems.append(f"{index.ntotal} items cannot fill {candidates} candidates")
    return problems


def _ranking_problems(
    version_dir: Path, user_spec: FeatureSpec, item_spec: FeatureSpec
) -> list[str]:
    import torch

    try:
        ranker = torch.jit.load(str(version_dir / RANKING_MODEL_FILE), map_location="cpu")
        cardinalities = [*user_spec.cardinalities, *item_spec.cardinalities]
        problems = _tables_match("the DLRM", ranker, cardinalities)
        with torch.inference_mode():
            scores = ranker(*_probe(user_spec, (2,)), *_probe(item_spec, (2, 3)))
    except Exception as exc:
        return [f"the DLRM does not take the workflows' output: {exc}"]
    if tuple(scores.shape) != (2, 3):
        problems.append(f"the DLRM answers shape {tuple(scores.shape)} for 2 users x 3 items")
    return problems


def schema_problems(repository: Path, version: int, serving: ServingSettings) -> list[str]:
    """Everything that does not fit together in version `version`; empty if all fits.

    The workflows' output (FeatureSpec) must be what the query tower, the index, the
    catalog and the DLRM were built for: same columns, same cardinalities. Every part is
    loaded with the library that serves it.
    """
    try:
        user_spec, item_spec = version_specs(repository, version)
        schema = version_schema(repository, version)
    except (OSError, ValueError, KeyError) as exc:
        return [f"the feature schema or specs cannot be read: {exc}"]

    def version_dir(name: str) -> Path:
        return repository / name / str(version)

    expected_columns = [schema.users.id, *schema.users.features]
    problems = _user_problems(version_dir("user_features"), user_spec, expected_columns)
    query_dim, found = _query_tower_problems(version_dir("retrieval"), user_spec)
    problems += found
    items, found = _catalog_problems(repository, version, item_spec)
    problems += found
    problems += _index_problems(version_dir("retrieval"), items, query_dim, serving.num_candidates)
    problems += _ranking_problems(version_dir("ranking"), user_spec, item_spec)
    return problems


def check_version(repository: Path, version: int, serving: ServingSettings) -> dict[str, Any]:
    """Files exactly as published and parts that fit together; returns the manifest."""
    manifest = verify_files(repository, version)
    problems = schema_problems(repository, version, serving)
    if problems:
        raise refused(version, "its parts do not fit together", problems)
    return manifest


def side_by_side_problems(
    repository: Path, serving_version: int, candidate: int, serving: ServingSettings
) -> list[str]:
    """Both versions load under one config per model: their tensors must be the same."""
    current = version_interfaces(repository, serving_version, serving)
    new = version_interfaces(repository, candidate, serving)
    return [
        f"{name}: {_tensors_text(current[name])} would become {_tensors_text(new[name])}"
        for name in STAGE_MODEL_NAMES
        if current[name] != new[name]
    ]


def _tensors_text(interface: StageInterface) -> str:
    tensors = (*interface.inputs, *interface.outputs)
    return ", ".join(f"{t.name}{list(t.dims)}" for t in tensors)


# ---------------------------------------------------------------- the metrics gate


def metrics_gate(
    serving: dict[str, Any], candidate: dict[str, Any], tolerance: float
) -> tuple[list[str], list[str]]:
    """(report lines, problems): the candidate may be worse by at most `tolerance` (absolute)."""
    old, new = serving.get("metrics") or {}, candidate.get("metrics") or {}
    lines, problems = [], []
    if old.get("recall_k") != new.get("recall_k"):
        problems.append(
            f"recall@k is measured at k={new.get('recall_k')} for the candidate but "
            f"k={old.get('recall_k')} for the serving version: not comparable"
        )
    for name, direction in GATED_METRICS.items():
        if name not in old or name not in new:
            problems.append(f"{name} is not recorded for both versions")
            continue
        worse_by = (float(old[name]) - float(new[name])) * direction
        verdict = "ok" if worse_by <= tolerance else "WORSE"
        lines.append(f"{name}: {float(old[name]):.4f} -> {float(new[name]):.4f} ({verdict})")
        if worse_by > tolerance:
            problems.append(
                f"{name} {float(new[name]):.4f} is worse than the serving version's "
                f"{float(old[name]):.4f} by {worse_by:.4f} (tolerance {tolerance})"
            )
    return lines, problems


# ---------------------------------------------------------------- repository state


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


def _record(repository: Path, action: str, version: int | None, **details: Any) -> None:
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


# ---------------------------------------------------------------- publish, list, prune


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
        _record(repository, "publish", version, fingerprint=manifest["fingerprint"])
        log(f"version {version} published ({len(written)} model directories)")
    return version


def _remove_version(repository: Path, version: int) -> None:
    for name in MODEL_LOAD_ORDER:
        shutil.rmtree(repository / name / str(version), ignore_errors=True)


def _configured_versions(repository: Path) -> set[int]:
    """Versions any config on disk loads (more than one while a promotion is under way)."""
    versions: set[int] = set()
    for name in MODEL_LOAD_ORDER:
        if (repository / name / "config.pbtxt").exists():
            versions |= set(read_config(repository / name).version_policy.specific.versions)
    return versions


def prune(repository: Path, keep: int = DEFAULT_KEEP, log: Log = print) -> list[int]:
    """Delete all but the `keep` newest versions, never the serving, previous or loaded ones."""
    if keep < 1:
        raise VersionError(f"--keep must be at least 1, got {keep}")
    with repository_lock(repository):
        protected = {serving_version(repository), *_configured_versions(repository)}
        with suppress(VersionError):  # nothing to roll back to: nothing extra to keep
            protected.add(rollback_target(repository))
        versions = version_numbers(repository)
        doomed = [v for v in versions if v not in {*versions[-keep:], *protected}]
        for version in doomed:
            _remove_version(repository, version)
        if doomed:
            _record(repository, "prune", None, removed=doomed)
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


# ---------------------------------------------------------------- the live server


@dataclass(frozen=True)
class TritonAdmin:
    """A running tritonserver's model-repository API and per-version inference, over gRPC.

    Not HTTP: Triton's HTTP server answers a load on the thread that owns the caller's
    connection and holds it until the model is loaded, so HTTP clients whose connections
    share that thread stall for the whole load (a 10 s client timeout was hit in a test).
    gRPC inference runs on its own threads and did not stall.
    """

    url: str  # gRPC host:port
    admin_key: str
    header: str = "triton-admin-key"
    # A stage load starts a Python stub that imports torch and NVTabular: slow on a busy host.
    timeout_s: float = 600.0

    def _client(self) -> grpcclient.InferenceServerClient:
        # One channel per call keeps concurrent loads independent of each other.
        return grpcclient.InferenceServerClient(self.url)

    @property
    def headers(self) -> dict[str, str]:
        # Triton matches a restricted gRPC protocol's key under this prefixed metadata name.
        return {f"triton-grpc-protocol-{self.header}": self.admin_key}

    def load(self, name: str, config: mc.ModelConfig) -> None:
        with self._client() as client:
            client.load_model(
                name,
                headers=self.headers,
                config=config_json(config),
                client_timeout=self.timeout_s,
            )

    def states(self) -> dict[tuple[str, int], str]:
        """(model, version) -> state, as Triton's repository index reports them."""
        with self._client() as client:
            index = client.get_model_repository_index(
                headers=self.headers, as_json=True, client_timeout=60.0
            )
        return {
            (entry["name"], int(entry["version"])): entry.get("state", "")
            for entry in index.get("models", [])
            if str(entry.get("version", "")).isdigit()
        }

    def infer(
        self,
        name: str,
        version: int | None,
        inputs: dict[str, tuple[np.ndarray, str]],
        outputs: tuple[str, ...],
    ) -> dict[str, np.ndarray]:
        tensors = []
        for input_name, (array, datatype) in inputs.items():
            tensor = grpcclient.InferInput(input_name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        with self._client() as client:
            result = client.infer(
                name,
                tensors,
                model_version="" if version is None else str(version),
                outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                client_timeout=60.0,
            )
        return {o: result.as_numpy(o) for o in outputs}


def live_versions(admin: TritonAdmin) -> dict[int, list[str]]:
    """version -> models loaded (READY) at that version on the server."""
    loaded: dict[int, list[str]] = {}
    for (name, version), state in sorted(admin.states().items()):
        if state == "READY":
            loaded.setdefault(version, []).append(name)
    return loaded


def _smoke_inputs(repository: Path, version: int, serving: ServingSettings) -> dict[str, Any]:
    id_column = version_schema(repository, version).users.id
    users = pd.read_parquet(repository / "user_features" / str(version) / USER_TABLE_FILE)
    known = users[id_column].head(3).tolist()
    ids = np.array([[u] for u in [*known, int(users[id_column].max()) + 1]], dtype=np.int64)
    top_k = min(serving.default_top_k, serving.max_top_k, serving.num_candidates)
    return {REQUEST_USER_ID: ids, "top_k": np.full((len(ids), 1), top_k, dtype=np.int32)}


def _answer_problems(
    answer: dict[str, np.ndarray], version: int, top_k: int, catalog_ids: np.ndarray
) -> list[str]:
    item_ids, scores = answer["item_ids"], answer["scores"]
    problems = []
    if set(answer["model_version"].reshape(-1).tolist()) != {version}:
        problems.append(f"model_version {answer['model_version'].reshape(-1).tolist()}")
    if item_ids.shape[1] != top_k or (item_ids < 0).any():
        problems.append(f"item_ids of shape {item_ids.shape} with padding, wanted {top_k} each")
    elif any(len(set(row.tolist())) != top_k for row in item_ids):
        problems.append("an answer repeats an item")
    if not np.isin(item_ids, catalog_ids).all():
        problems.append("item ids outside the version's catalog")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        problems.append("scores that are not probabilities")
    elif (np.diff(scores, axis=1) > 1e-6).any():
        problems.append("scores not sorted best first")
    return problems


def smoke_query(
    admin: TritonAdmin,
    repository: Path,
    version: int,
    serving: ServingSettings,
    through_ensemble: bool = False,
) -> None:
    """A batch of known and unknown users through the server at `version`, checked.

    Stage by stage (each named with its version) before the switch, because the ensemble
    can only pin one version; through the ensemble (no version named) after it.
    """
    interfaces = version_interfaces(repository, version, serving)
    tensors = _smoke_inputs(repository, version, serving)
    top_k = int(tensors["top_k"][0, 0])
    with np.load(repository / "reorder" / str(version) / CATALOG_FILE) as catalog:
        catalog_ids = catalog["item_ids"]
    calls: list[tuple[str, int | None, StageInterface]] = (
        [(ENSEMBLE_NAME, None, ensemble_interface(interfaces))]
        if through_ensemble
        else [(name, version, interfaces[name]) for name in STAGE_MODEL_NAMES]
    )
    for name, pinned, interface in calls:
        inputs = {t.name: (tensors[t.name], t.dtype) for t in interface.inputs if t.name in tensors}
        outputs = tuple(t.name for t in interface.outputs)
        try:
            tensors.update(admin.infer(name, pinned, inputs, outputs))
        except InferenceServerException as exc:
            raise VersionError(f"smoke query: {name} (version {version}) failed: {exc}") from exc
    problems = _answer_problems(tensors, version, top_k, catalog_ids)
    if problems:
        where = "the ensemble" if through_ensemble else "the stages"
        raise refused(version, f"the smoke query through {where} answered wrongly", problems)


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
        leftovers = _configured_versions(repository) - {version}
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
        _record(repository, "refused", version, serving=current, attempted=action, reason=str(exc))
        raise
    # Recorded as soon as the ensemble answers with it: rollback must find its way back
    # even if unloading the old stages below fails.
    _record(repository, action, version, previous=current, tolerance=tolerance)
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
