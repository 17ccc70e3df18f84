"""Generate the Triton model repository from trained artefacts.

Layout (one numbered version directory per model; a model set version N has every stage
at version N and the ensemble pins its steps to N):

    model_repository/
      user_features/  config.pbtxt  N/{model.py, user_workflow/, users.parquet,
                                        feature_schema.json, reference_profile.json}
      retrieval/      config.pbtxt  N/{model.py, query_tower.pt, item_index.faiss}
      ranking/        config.pbtxt  N/{model.py, model.pt, feature_spec.json}
      reorder/        config.pbtxt  N/{model.py, catalog.npz}
      recommender/    config.pbtxt  N/manifest.json   (platform: "ensemble")
      versions.json   promotion history (serving/versions/state.py)

Configs are built as `ModelConfig` protobuf messages (Triton's own schema) and written in
text format, so a misspelt field fails here rather than at server start. Every config
names the versions to load (`version_policy: specific`): Triton's default policy loads
the highest version on disk, which would serve a merely published version after a restart.
Writing a version's files (`write_model_set`) and writing configs are separate steps, so
a new version can be published beside the serving one without touching what serves.
"""

from __future__ import annotations

import importlib.util
import py_compile
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys.contract import (
    CATALOG_FILE,
    ENSEMBLE_NAME,
    FEATURE_SPEC_FILE,
    HISTORY_FILE,
    ITEM_INDEX_FILE,
    ITEM_WORKFLOW_DIR,
    PROFILE_FILE,
    QUERY_TOWER_FILE,
    RANKING_FILE,
    RANKING_MODEL_FILE,
    REQUEST_USER_ID,
    SCHEMA_FILE,
    STAGE_MODEL_NAMES,
    USER_TABLE_FILE,
    USER_WORKFLOW_DIR,
    FeatureSpec,
    Tensor,
    override_tensors,
    read_schema,
)
from recsys.durable_files import write_durably
from recsys.schema import FeatureSchema
from recsys.settings import QueuePolicySettings, ServingSettings
from serving.manifest import write_manifest

TRITON_MODELS_DIR = Path(__file__).resolve().parent / "triton_models"
# What the ranking stage's model.pt is built from: the trained scorer and the catalog whose
# transformed item features it carries (serving/stages/ranking.py).
RANKING_SOURCES = (RANKING_FILE, CATALOG_FILE)


@dataclass(frozen=True)
class StageInterface:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


def stage_interfaces(
    schema: FeatureSchema, user_spec: FeatureSpec, item_spec: FeatureSpec, serving: ServingSettings
) -> dict[str, StageInterface]:
    """Every stage's tensors; shapes exclude the batch dimension. The request contract
    (user_features' inputs) is the user id plus one optional override per user feature
    the schema marks overridable, typed from the schema."""
    c = serving.num_candidates
    user_cat = Tensor("user_categorical", "INT64", (user_spec.categorical_width,))
    # Triton refuses a dimension of 0: a side without continuous features sends [B, 0]
    # through a variable-size dimension.
    user_cont = Tensor("user_continuous", "FP32", (len(user_spec.continuous) or -1,))
    rows = Tensor("candidate_rows", "INT64", (c,))
    ranking_scores = Tensor("ranking_scores", "FP32", (c,))
    user_id = Tensor(REQUEST_USER_ID, "INT64", (1,))
    exclude = Tensor("exclude_item_ids", "INT64", (-1,), optional=True)
    # Filter what the user already consumed (default); False for a row lets it come back.
    filter_seen = Tensor("filter_seen", "BOOL", (1,), optional=True)
    # The request's own recent items (ragged like exclude_item_ids, -1 pads): an unknown
    # user who sends them is personalised; they are filtered from the answer like history.
    session = Tensor("history_item_ids", "INT64", (-1,), optional=True)
    retrieval_scores = Tensor("retrieval_scores", "FP32", (c,))
    return {
        "user_features": StageInterface(
            # The first stage also takes top_k, the id lists and temperature to validate the
            # whole request before any model runs. Optional here, so a direct call with a
            # user id alone still works; the ensemble requires top_k because reorder does.
            inputs=(
                user_id,
                *override_tensors(schema),
                Tensor("top_k", "INT32", (1,), optional=True),
                exclude,
                session,
                Tensor("temperature", "FP32", (1,), optional=True),
            ),
            outputs=(user_cat, user_cont),
        ),
        "retrieval": StageInterface(
            # Optional here: retrieval alone (perf runs, direct calls) filters nothing.
            inputs=(
                user_cat,
                user_cont,
                replace(user_id, optional=True),
                exclude,
                filter_seen,
                session,
            ),
            outputs=(rows, retrieval_scores),
        ),
        # The candidates' item features are looked up inside the ranking model (its catalog
        # buffers), so the item spec shapes no tensor between stages.
        "ranking": StageInterface(inputs=(user_cat, user_cont, rows), outputs=(ranking_scores,)),
        "reorder": StageInterface(
            inputs=(
                rows,
                ranking_scores,
                # Optional for direct calls: without it the order is the ranking's alone.
                replace(retrieval_scores, optional=True),
                Tensor("top_k", "INT32", (1,)),
                exclude,
                Tensor("temperature", "FP32", (1,), optional=True),
            ),
            outputs=(
                Tensor("item_ids", "INT64", (-1,)),
                Tensor("scores", "FP32", (-1,)),
                Tensor("model_version", "INT64", (1,)),
            ),
        ),
    }


def ensemble_interface(interfaces: dict[str, StageInterface]) -> StageInterface:
    """The ensemble's own inputs (what callers send) and outputs (what they get back).

    An input is optional for callers only if every stage consuming it takes it as optional:
    a stage that requires it would otherwise get nothing."""
    produced = {t.name for s in interfaces.values() for t in s.outputs}
    inputs: dict[str, Tensor] = {}
    for stage in interfaces.values():
        for tensor in stage.inputs:
            if tensor.name in produced:
                continue
            seen = inputs.setdefault(tensor.name, tensor)
            if seen.optional and not tensor.optional:
                inputs[tensor.name] = replace(seen, optional=False)
    return StageInterface(inputs=tuple(inputs.values()), outputs=interfaces["reorder"].outputs)


def _add_tensors(target, tensors: tuple[Tensor, ...], optional_field: bool) -> None:  # type: ignore[no-untyped-def]
    for tensor in tensors:
        entry = target.add()
        entry.name = tensor.name
        # Triton's config calls the BYTES wire type TYPE_STRING.
        config_type = "STRING" if tensor.dtype == "BYTES" else tensor.dtype
        entry.data_type = mc.DataType.Value(f"TYPE_{config_type}")
        entry.dims.extend(tensor.dims)
        if optional_field and tensor.optional:
            entry.optional = True


def _set_parameters(config: mc.ModelConfig, parameters: dict[str, str]) -> None:
    for key, value in parameters.items():
        config.parameters[key].string_value = value


def _set_queue_policy(policy: mc.ModelQueuePolicy, settings: QueuePolicySettings) -> None:
    # Bounded queues turn overload into fast, retriable rejections (UNAVAILABLE) instead
    # of latency that grows without limit for every request.
    policy.max_queue_size = settings.max_queue_size
    policy.default_timeout_microseconds = settings.default_timeout_microseconds
    policy.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value(settings.timeout_action)
    policy.allow_timeout_override = settings.allow_timeout_override


def build_stage_config(
    name: str, interface: StageInterface, serving: ServingSettings, backend: str = "python"
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    if backend == "pytorch_libtorch":
        config.platform = "pytorch_libtorch"
        config.default_model_filename = RANKING_MODEL_FILE
    else:
        config.backend = "python"
    _add_tensors(config.input, interface.inputs, optional_field=True)
    _add_tensors(config.output, interface.outputs, optional_field=False)
    # Present even with a zero delay: requests already queued are still batched together.
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_microseconds
    _set_queue_policy(config.dynamic_batching.default_queue_policy, serving.queue_policy)
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(serving.instance_kind)
    group.count = serving.instance_count
    _set_parameters(
        config,
        {
            "num_candidates": str(serving.num_candidates),
            "max_top_k": str(serving.max_top_k),
            "max_exclude": str(serving.max_exclude),
            "max_history_items": str(serving.max_history_items),
            "retrieval_weight": repr(serving.retrieval_weight),
            "torch_threads": str(serving.torch_threads),
        },
    )
    return config


def set_versions(config: mc.ModelConfig, versions: Sequence[int]) -> mc.ModelConfig:
    """Load exactly `versions` of this model (several while a promotion is under way)."""
    config.version_policy.specific.versions[:] = sorted(set(versions))
    return config


def build_ensemble_config(
    interfaces: dict[str, StageInterface], serving: ServingSettings, version: int
) -> mc.ModelConfig:
    """`platform: "ensemble"` chaining the stages; every step pinned to model set `version`.

    The ensemble itself loads only version `version`, so a request that names no version
    is answered by exactly one model set.
    """
    ensemble = ensemble_interface(interfaces)
    config = mc.ModelConfig(
        name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=serving.max_batch_size
    )
    set_versions(config, [version])
    # Triton rejects ensembles with dangling tensors: map only outputs someone consumes.
    consumed = {t.name for s in interfaces.values() for t in s.inputs}
    consumed |= {t.name for t in ensemble.outputs}
    _add_tensors(config.input, ensemble.inputs, optional_field=True)
    _add_tensors(config.output, ensemble.outputs, optional_field=False)
    for stage_name in STAGE_MODEL_NAMES:
        stage = interfaces[stage_name]
        step = config.ensemble_scheduling.step.add()
        step.model_name = stage_name
        step.model_version = version
        # Ensemble tensor names equal the stage tensor names: one name per tensor end to end.
        for tensor in stage.inputs:
            step.input_map[tensor.name] = tensor.name
        for tensor in stage.outputs:
            if tensor.name in consumed:
                step.output_map[tensor.name] = tensor.name
    return config


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    """Write config.pbtxt atomically and durably: a server (re)loading the model never reads
    half a file, and after a power cut it restarts on the config that was written."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    write_durably(path, text_format.MessageToString(config))
    return path


def read_config(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def config_json(config: mc.ModelConfig) -> str:
    """The config as the JSON the model-repository `load` API takes as an override."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def _copy(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)


def stage_files(artifacts_dir: Path) -> dict[str, dict[str, Path]]:
    """Artefacts each stage version needs: destination name -> source path."""
    models, workflows = artifacts_dir / "models", artifacts_dir / "workflows"
    return {
        # The reference profile travels with the version that serves against it: the
        # live feature and score counters use its bins (monitoring/live_metrics.py).
        "user_features": {
            USER_WORKFLOW_DIR: workflows / USER_WORKFLOW_DIR,
            USER_TABLE_FILE: models / USER_TABLE_FILE,
            PROFILE_FILE: models / PROFILE_FILE,
            SCHEMA_FILE: artifacts_dir / SCHEMA_FILE,
        },
        # The history filters consumed items; the catalog maps excluded ids to index rows.
        "retrieval": {
            QUERY_TOWER_FILE: models / QUERY_TOWER_FILE,
            ITEM_INDEX_FILE: models / ITEM_INDEX_FILE,
            HISTORY_FILE: models / HISTORY_FILE,
            CATALOG_FILE: models / CATALOG_FILE,
        },
        # The item spec travels with the version: it is what the catalog and the ranking
        # model's item embeddings were built against (checked by serving/versions/compat.py).
        # model.pt is not copied but built from RANKING_SOURCES (write_model_set).
        "ranking": {FEATURE_SPEC_FILE: workflows / ITEM_WORKFLOW_DIR / FEATURE_SPEC_FILE},
        "reorder": {CATALOG_FILE: models / CATALOG_FILE, PROFILE_FILE: models / PROFILE_FILE},
    }


def load_specs(artifacts_dir: Path) -> tuple[FeatureSpec, FeatureSpec]:
    workflows = artifacts_dir / "workflows"
    return (
        FeatureSpec.from_json((workflows / USER_WORKFLOW_DIR / FEATURE_SPEC_FILE).read_text()),
        FeatureSpec.from_json((workflows / ITEM_WORKFLOW_DIR / FEATURE_SPEC_FILE).read_text()),
    )


def version_schema(repository: Path, version: int) -> FeatureSchema:
    """The feature schema a published version was built with (shipped with it)."""
    return read_schema(repository / "user_features" / str(version) / SCHEMA_FILE)


def version_specs(repository: Path, version: int) -> tuple[FeatureSpec, FeatureSpec]:
    """The user and item feature specs a published version was built with."""
    user = repository / "user_features" / str(version) / USER_WORKFLOW_DIR / FEATURE_SPEC_FILE
    item = repository / "ranking" / str(version) / FEATURE_SPEC_FILE
    return FeatureSpec.from_json(user.read_text()), FeatureSpec.from_json(item.read_text())


def version_interfaces(
    repository: Path, version: int, serving: ServingSettings
) -> dict[str, StageInterface]:
    """Every stage's tensors for a published version: its schema and feature specs."""
    return stage_interfaces(
        version_schema(repository, version), *version_specs(repository, version), serving
    )


def _install_model_py(name: str, version_dir: Path) -> None:
    model_py = version_dir / "model.py"
    shutil.copy2(TRITON_MODELS_DIR / f"{name}.py", model_py)
    # Without a bytecode cache the Python backend writes __pycache__ into the version
    # directory on first load; Triton then sees the model as modified and reloads it on the
    # next ensemble load (one more stub start per stage during a promotion). Checked-hash
    # bytecode runs only if it matches model.py's source, which the manifest hashes.
    py_compile.compile(
        str(model_py),
        cfile=importlib.util.cache_from_source(str(model_py)),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )


def write_model_set(
    artifacts_dir: Path, repository: Path, serving: ServingSettings, version: int
) -> list[Path]:
    """Write version `version` of every model (stages and ensemble); configs untouched.

    Returns the version directories written. Existing directories of that version are
    replaced: callers that must not overwrite (publishing) check first.
    """
    if version < 1:
        raise ValueError(f"model versions start at 1, got {version}")
    files = stage_files(artifacts_dir)
    ranking_sources = [artifacts_dir / "models" / f for f in RANKING_SOURCES]
    for name in STAGE_MODEL_NAMES:
        for source in (*files[name].values(), *(ranking_sources if name == "ranking" else ())):
            if not source.exists():
                raise FileNotFoundError(f"artefact {source} for model {name!r} is missing")
    written = []
    for name in STAGE_MODEL_NAMES:
        version_dir = repository / name / str(version)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        version_dir.mkdir(parents=True)
        for destination, source in files[name].items():
            _copy(source, version_dir / destination)
        if name == "ranking":
            # torch only here: `versions list` and --help import this module and stay fast.
            from serving.stages.ranking import export_catalog_ranking

            export_catalog_ranking(*ranking_sources, version_dir / RANKING_MODEL_FILE)
        backend = serving.ranking_backend if name == "ranking" else "python"
        if backend == "python":
            _install_model_py(name, version_dir)
        written.append(version_dir)
    # Triton needs a version directory for the ensemble too; it also holds the manifest.
    ensemble_dir = repository / ENSEMBLE_NAME / str(version)
    ensemble_dir.mkdir(parents=True, exist_ok=True)
    written.append(ensemble_dir)
    return written


def stage_configs(
    interfaces: dict[str, StageInterface], serving: ServingSettings, versions: Sequence[int]
) -> dict[str, mc.ModelConfig]:
    """Every stage's config, loading `versions` of it."""
    configs = {}
    for name in STAGE_MODEL_NAMES:
        backend = serving.ranking_backend if name == "ranking" else "python"
        config = build_stage_config(name, interfaces[name], serving, backend)
        configs[name] = set_versions(config, versions)
    return configs


def write_serving_configs(
    repository: Path, serving: ServingSettings, version: int
) -> dict[str, mc.ModelConfig]:
    """Configs that serve model set `version` alone (what a restarted server loads)."""
    interfaces = version_interfaces(repository, version, serving)
    configs = stage_configs(interfaces, serving, [version])
    configs[ENSEMBLE_NAME] = build_ensemble_config(interfaces, serving, version)
    for name, config in configs.items():
        write_config(config, repository / name)
    return configs


def build_model_repository(
    artifacts_dir: Path, repository: Path, serving: ServingSettings, version: int = 1
) -> list[Path]:
    """Write model set `version` into `repository` and make it the one served (configs
    regenerated, a manifest written); return the model directories."""
    write_model_set(artifacts_dir, repository, serving, version)
    write_serving_configs(repository, serving, version)
    write_manifest(repository, version, artifacts_dir)
    return [repository / name for name in (*STAGE_MODEL_NAMES, ENSEMBLE_NAME)]
